"""Errors a user can act on.

Every failure caused by input (a file, a row, a column, a setting) is raised as a
:class:`GlassworkError` whose message names the thing and what was expected. The CLI prints
these without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its class name when it has none): enough to say why."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class GlassworkError(Exception):
    """An error in the user's input or configuration, with a message that says what to do."""


class DataError(GlassworkError):
    """The data (file, rows, columns, labels) does not meet the schema."""


class ConfigError(GlassworkError):
    """A setting is unknown, missing or of the wrong type."""


class PipelineOrderError(GlassworkError):
    """A step ran before the step whose output it needs."""


class LineageError(GlassworkError):
    """A model version's lineage tags are missing or point at data, code or runs that are not here."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) during a step that runs library code which would swallow a
    ``KeyboardInterrupt`` (Lightning's ``fit`` turns it into ``sys.exit(1)`` and ignores every
    later Ctrl-C). A ``BaseException``, as ``KeyboardInterrupt`` is: no ``except Exception`` stops it."""
