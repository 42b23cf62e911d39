"""Compose, check and freeze the run's config.

The config is composed **once** per run (Hydra's compose API is not thread-safe) and handed
to the steps as a resolved ``DictConfig``; Prefect tasks receive it as a plain dict.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from glasswork.config_schema import TASK_SCHEMAS, GlassworkConfig
from glasswork.errors import ConfigError, LineageError, first_line

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def name_from_file(path: str) -> str:
    """A registered-model name part from a data file's name: ``My Tickets (v2).csv`` ->
    ``my-tickets-v2`` (MLflow takes letters, digits, ``-``, ``_`` and ``.``)."""
    return re.sub(r"[^a-z0-9_.]+", "-", Path(str(path)).stem.lower()).strip("-.") or "table"


# conf/data/table.yaml: registry_name: glasswork-${file_stem:${data.path}}
OmegaConf.register_new_resolver("file_stem", name_from_file, replace=True)


def conf_dir() -> Path:
    """The folder of Hydra configs (``conf/`` at the repository root)."""
    if not CONF_DIR.is_dir():
        raise ConfigError(f"config folder {CONF_DIR} not found: run Glasswork from its repository")
    return CONF_DIR


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides``, check it, and resolve it.

    Raises:
        ConfigError: an unknown group option or key, a missing mandatory value, a wrong type.
    """
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except HydraException as err:
        raise ConfigError(redacted(_explain_hydra_error(err, overrides))) from None
    except OmegaConfBaseException as err:
        raise ConfigError(redacted(f"bad override {list(overrides)}: {err}")) from None
    return check_config(cfg)


def schema_for(target: str | None) -> DictConfig:
    """The config's schema for the task class ``target`` (the text task's when ``None``): its data
    and model groups are the task's own, and its values that task's defaults as ``conf/`` composes
    them (the schema itself holds no values: ``conf/`` is the one place defaults live)."""
    schema = OmegaConf.structured(GlassworkConfig)
    if target is not None:
        if target not in TASK_SCHEMAS:
            choices = sorted(TASK_SCHEMAS)
            raise ConfigError(f"task._target_={target!r}: expected one of {choices} (the task=... options)")
        data, model = TASK_SCHEMAS[target]
        schema.data, schema.model = OmegaConf.structured(data), OmegaConf.structured(model)
    return cast(DictConfig, OmegaConf.merge(schema, _conf_defaults(target)))


@functools.cache
def _conf_defaults(target: str | None) -> DictConfig:
    """The default config of the task class ``target`` as ``conf/`` composes it, unresolved (an
    interpolation resolves against the config it fills)."""
    from hydra.utils import get_class

    task: Any = get_class(target) if target else None  # the class: its name attribute
    name = task.name if task is not None else "text_classification"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose(config_name="config", overrides=[f"task={name}"])
    # A plain copy: Hydra's result is in struct mode, which would close every dict node it fills
    # (model.random_init: null here) to keys a run's config sets.
    return cast(DictConfig, OmegaConf.create(OmegaConf.to_container(composed, resolve=False)))


def check_config(cfg: DictConfig) -> DictConfig:
    """Check every key and type against :mod:`glasswork.config_schema`, then resolve."""
    schema = schema_for(OmegaConf.select(cfg, "task._target_", default=None))
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = err.full_key
        raise ConfigError(f"setting {key} is required but not set: pass it as an override, e.g. {key}=...") from None
    except OmegaConfBaseException as err:
        raise ConfigError(redacted(f"config does not resolve at {getattr(err, 'full_key', '?')}: {err}")) from None
    try:
        merged = OmegaConf.merge(schema, plain)
    except ConfigKeyError as err:
        raise ConfigError(_unknown_key_message(err.full_key or "?", schema)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(redacted(f"setting {err.full_key}: {first_line(err)}")) from None
    try:  # a key neither the config nor conf/ sets (the schema holds no values)
        resolved = cast(
            DictConfig, OmegaConf.create(OmegaConf.to_container(merged, resolve=True, throw_on_missing=True))
        )
    except MissingMandatoryValue as err:
        raise ConfigError(f"setting {err.full_key} is required but not set: pass it, e.g. {err.full_key}=...") from None
    for key in ("tracking.uri", "tracking.artifact_root"):
        refuse_password(str(OmegaConf.select(resolved, key) or ""), key)
    return resolved


# Where each kind of store takes its password instead: the resolved config is logged to MLflow,
# written to params.yaml and passed to Prefect as a flow parameter, so a URI must not carry one.
PASSWORD_PLACES = {
    "http": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "https": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "postgresql": "PGPASSWORD or ~/.pgpass (libpq reads them)",
    "mysql": "the MySQL driver's option file (~/.my.cnf)",
}


def refuse_password(uri: str, setting: str) -> None:
    """Raise a :class:`ConfigError` that does not repeat it when ``uri`` holds a password."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # a malformed netloc (e.g. a port that is not a number): nothing to find
        return
    if password is None:
        return
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg2 -> postgresql
    where = PASSWORD_PLACES.get(scheme, "the environment variable or file its driver reads")
    raise ConfigError(
        f"{setting} ({parts.scheme}://...@{parts.hostname}) holds a password, and the resolved config is logged to "
        f"MLflow, params.yaml and Prefect: leave it out of the URI ({parts.scheme}://{parts.username}@"
        f"{parts.hostname}/...) and give it in {where}"
    )


def redacted(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` in it masked."""
    return re.sub(r"(://[^/\s:@]*:)[^/\s@]*@", r"\1***@", text)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (what Prefect tasks and MLflow receive)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_plain(plain: dict[str, Any] | DictConfig) -> DictConfig:
    """Rebuild a ``DictConfig`` from :func:`to_plain`'s output."""
    return plain if isinstance(plain, DictConfig) else OmegaConf.create(plain)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True, sort_keys=False)


def recorded_config(text: str, label: str) -> DictConfig:
    """The resolved config recorded with a model version (its ``glasswork.config`` tag or run
    artifact), refused with the version's ``label`` when it is not a YAML mapping."""
    try:
        cfg = OmegaConf.create(text)
    except yaml.YAMLError as err:
        raise LineageError(f"{label}: its recorded config is not YAML ({first_line(err)})") from None
    if not isinstance(cfg, DictConfig):
        raise LineageError(f"{label}: its recorded config is a {type(cfg).__name__}, not a mapping of settings")
    # A recorded config is data read from a registry anyone with write access can tag: resolving
    # an interpolation in it would read environment variables (`${oc.env:...}`) or call resolvers.
    found = next(_interpolations(OmegaConf.to_container(cfg, resolve=False)), None)
    if found is not None:
        key, value = found
        raise LineageError(
            f"{label}: its recorded config sets {key} to {value[:80]!r}, an interpolation; a recorded config is "
            "resolved when it is recorded, so this one was edited by hand. Fix the tag glasswork.config"
        )
    return cfg


def _interpolations(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every string in ``tree`` that holds an OmegaConf interpolation."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, str) and "${" in value:
            yield name, value
        elif isinstance(value, dict | list):
            yield from _interpolations(value, name + ".")


def _unknown_key_message(full_key: str, schema: DictConfig) -> str:
    group, _, key = full_key.rpartition(".")
    valid = list(OmegaConf.select(schema, group).keys()) if group else list(schema.keys())
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    return f"unknown setting {full_key}. Valid keys of {group or 'the root'}: {', '.join(valid)}.{hint}"


def _explain_hydra_error(err: HydraException, overrides: Sequence[str]) -> str:
    text = str(err).strip()
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if unknown and "." in unknown.group(1):
        key, schema = unknown.group(1), OmegaConf.structured(GlassworkConfig)
        if OmegaConf.select(schema, key, default="<absent>") == "<absent>":
            return _unknown_key_message(key, schema)
        return f"could not set {key}: {first_line(err)} To add a key to a mapping, prefix it with +: +{key}.NAME=VALUE"
    if "Could not find" in text:
        # Hydra lists the available options of the group on the following lines: keep them.
        text = text.split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"{lines[0]}; {' '.join(lines[1:])}. `glasswork --help` lists the config groups."
    if "LexerNoViableAltException" in text or "mismatched input" in text:
        # Hydra's grammar stops at a space, a bracket or an accent inside an unquoted value.
        bad = next((o for o in overrides if o in text), None) or "the override"
        return (
            f"{bad}: Hydra could not parse this value. Quote each value holding spaces, brackets, commas or "
            'accented characters, e.g. \'data.feature_columns=["tenure (months)","région"]\' (single quotes '
            "for the shell, double quotes for Hydra)"
        )
    return f"{first_line(err)} (overrides: {list(overrides)})"


def load_frozen(path: Path) -> DictConfig:
    """Load a resolved config written earlier (``params.yaml``) and check it like a composed one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file (write params.yaml with `glasswork dvc-sync`)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"--config {path}: not a YAML mapping ({first_line(err)})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"--config {path}: expected a YAML mapping of config groups")
    return check_config(cfg)
