"""Errors a user can act on.

Every failure caused by input (a file, a row, a column, a setting) is raised as a
:class:`GlassworkError` whose message names the thing and what was expected. The CLI prints
these without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class GlassworkError(Exception):
    """An error in the user's input or configuration, with a message that says what to do."""


class DataError(GlassworkError):
    """The data (file, rows, columns, labels) does not meet the schema."""


class ConfigError(GlassworkError):
    """A setting is unknown, missing or of the wrong type."""


class PipelineOrderError(GlassworkError):
    """A step ran before the step whose output it needs."""
