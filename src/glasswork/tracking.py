"""MLflow tracking: one MLflow run per trained model, with step-prefixed keys.

The ``train`` step opens a new run and records its id in ``artifacts/train/run.json``; the
steps after it (evaluate, explain, drift, register) log into that same run, whichever front
called them (Prefect flow, ``dvc repro``, the CLI). So one run in the MLflow UI holds a
model's whole story: ``train/*`` and ``val/*`` curves, ``test/*``, ``explain/*``, ``drift/*``
metrics, the plots and reports as artifacts, and lineage tags.

The store is either local (``tracking=local``: SQLite and an artifact folder in the repository)
or a team tracking server (``tracking=server``: an ``http(s)://`` URI; the server keeps the
artifacts itself, proxied with ``mlflow server --serve-artifacts``). A server is checked before
each step uses it, so one that is down fails in seconds with a message naming it, not after
MLflow's minutes of HTTP retries, and before the step writes or registers anything.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from glasswork.errors import (
    ConfigError,
    GlassworkError,
    Interrupted,
    LineageError,
    PipelineOrderError,
    first_line,
)
from glasswork.outputs import fetch_file, read_json
from glasswork.steps import output

log = logging.getLogger(__name__)

# Quiet Alembic's table-creation chatter on a fresh SQLite store.
logging.getLogger("alembic").setLevel(logging.WARNING)


# How long the up-front check waits for a tracking server to answer (one try: Prefect retries).
SERVER_CHECK_TIMEOUT_S = 10
CONFIG_ARTIFACT = "config/resolved.yaml"  # every training run logs its resolved config here
CONFIG_TAG_MAX = 5000  # MLflow's limit on a model-version tag value
CONFIG_POINTER = f"see run artifact {CONFIG_ARTIFACT}"
SPLITS_ARTIFACT = "data/splits"  # every training run logs its data version (splits, labels) here


class TrackingServerUnavailable(GlassworkError):
    """The MLflow tracking server does not answer. Unlike a bad input this can pass, so the
    Prefect flow may retry it (``transient``); after the retries the CLI prints the message."""

    transient = True


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (``http(s)://``) rather than a local store."""
    return urlsplit(uri).scheme in ("http", "https")


def configure(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and return the experiment id (created if new).

    On a server (``http(s)://``) nothing local is created: the experiment gets the server's
    default artifact location (``mlflow-artifacts:`` with ``--serve-artifacts``), and the
    server is checked first, so a down server fails here with :class:`TrackingServerUnavailable`.
    """
    uri = cfg.tracking.uri
    check_store(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return experiment_id(cfg, cfg.tracking.experiment_name)


def experiment_id(cfg: DictConfig, name: str) -> str:
    """The id of experiment ``name`` in the current store, created if new with its artifacts under
    ``tracking.artifact_root``: left to MLflow, a local store's default is ``./mlruns`` in whatever
    folder the process started in, away from the run's root."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = _artifact_location(cfg)
    if location and "://" not in location:
        root = Path(location).resolve()
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    return client.create_experiment(name, artifact_location=location or None)


def absolute(uri: str) -> str:
    """``uri`` with a relative local store made absolute (from the current folder): the SQLite
    default ``sqlite:///./mlflow.db`` means another database in a process started elsewhere."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    if uri and "://" not in uri and not uri.startswith("mlflow-artifacts:"):
        return str(Path(uri).resolve())  # a folder: MLflow's file store, or a local artifact root
    return uri


def check_store(cfg: DictConfig) -> None:
    """Raise a :class:`~glasswork.errors.GlassworkError` if the tracking settings cannot work or
    the tracking server does not answer (cheap: the preflight of a whole run can call it too)."""
    _artifact_location(cfg)
    if is_server(cfg.tracking.uri):
        check_server(cfg.tracking.uri)


def _artifact_location(cfg: DictConfig) -> str:
    """``tracking.artifact_root`` checked against the store: a server cannot use a local folder,
    (a password in the URI is refused earlier, by :func:`glasswork.config.check_config`)."""
    uri, root = cfg.tracking.uri, cfg.tracking.artifact_root or ""
    if not is_server(uri):
        return root
    if root and "://" not in root and not root.startswith("mlflow-artifacts:"):
        raise ConfigError(
            f"tracking.artifact_root={root!r} is a local folder, but tracking.uri={uri} is a server: other "
            "machines could not read the artifacts. Leave tracking.artifact_root empty (tracking=server does), "
            "and the server stores them (mlflow server --serve-artifacts), or give a URI it can reach (s3://...)"
        )
    return root


def check_server(uri: str, timeout: float = SERVER_CHECK_TIMEOUT_S) -> None:
    """Raise :class:`TrackingServerUnavailable` unless the MLflow server at ``uri`` answers its
    ``/health`` endpoint (one try, with MLflow's own TLS and credential settings)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        answer = http_request(
            get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=timeout, raise_on_status=False
        )
    except Exception as err:  # connection refused, DNS, TLS, timeout: MLflow wraps them all
        reason = _reason(str(err), timeout)
    else:
        if answer.status_code < 500:
            return
        reason = f"it answered HTTP {answer.status_code} {answer.reason}"
    raise TrackingServerUnavailable(
        f"the MLflow tracking server at {uri} is not reachable ({reason}). Start it (e.g. `mlflow server "
        "--backend-store-uri postgresql://... --serve-artifacts --host 127.0.0.1 --port 5000`), or point "
        "tracking.uri (MLFLOW_TRACKING_URI with tracking=server) at a running one; tracking=local uses the "
        "SQLite store in the repository"
    )


def _reason(text: str, timeout: float) -> str:
    """The cause in a few words, out of MLflow's and urllib3's nested connection errors."""
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip()
    if "timed out" in text.lower():
        return f"no answer within {timeout:g} s"
    return text.split(" failed with exception ")[-1][:300]


def run_file(cfg: DictConfig) -> Path:
    """Where the train step records the MLflow run id of the model it trained."""
    return output(cfg, "train", "run.json")


def current_run_id(cfg: DictConfig) -> str:
    """The MLflow run id of the trained model, or a clear error if nothing was trained."""
    path = run_file(cfg)
    if not path.is_file():
        raise PipelineOrderError(f"{path} is missing: run `glasswork train` first")
    return read_json(path)["run_id"]


NEW_RUN = "new"  # step_run(run_id=NEW_RUN): the train step opens the model's run


@contextmanager
def step_run(cfg: DictConfig, step: str, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the model's MLflow run for one step (a new one with ``run_id=NEW_RUN``); mark it
    KILLED if the step is interrupted (Ctrl-C), FAILED if it raises: never left RUNNING."""
    experiment_id = configure(cfg)
    if run_id is None:
        run_id = current_run_id(cfg)
    mlflow.end_run()  # a run left open by a previous step in this process
    if run_id == NEW_RUN:  # created here, so whatever fails after it ends the run below
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=cfg.tracking.run_name or None, tags=lineage_tags(cfg)
        )
    else:
        run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id)
    try:
        yield run
    except (KeyboardInterrupt, Interrupted):
        mlflow.set_tag(f"glasswork.{step}.status", "interrupted")
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.set_tag(f"glasswork.{step}.status", "failed")
        mlflow.end_run(status="FAILED")
        raise
    mlflow.set_tag(f"glasswork.{step}.status", "done")
    mlflow.end_run()


def end_unfinished(cfg: DictConfig, run_id: str) -> None:
    """Mark a run that a killed process left RUNNING as KILLED (a stale partial training run)."""
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
            client.set_tag(run_id, "glasswork.train.status", "abandoned")
    except MlflowException as err:  # a run in another store, or deleted: nothing to close
        log.info("tracking: run %s not closed (%s)", run_id, first_line(err))


def lineage_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags that say where a model came from: code, data, config and orchestration."""
    from glasswork.data.prepare import data_md5

    tags = {
        "glasswork.git_commit": git_commit(),
        "glasswork.data_md5": data_md5(cfg),
        "glasswork.data": f"{cfg.data.name}:{cfg.data.path}",
        "glasswork.model": cfg.model.name,
    }
    flow_run = os.environ.get("GLASSWORK_FLOW_RUN_ID") or _prefect_flow_run_id()
    if flow_run:
        tags["glasswork.prefect_flow_run_id"] = flow_run
    return tags


def config_tag(config_yaml: str) -> str:
    """The ``glasswork.config`` tag of a model version: the resolved config itself, or where its
    run keeps it when it is over MLflow's limit on a tag value."""
    return config_yaml if len(config_yaml) <= CONFIG_TAG_MAX else CONFIG_POINTER


def recorded_config_text(client: MlflowClient, version, cache: Path) -> str:
    """The resolved config a model version was trained with: its ``glasswork.config`` tag, or its
    run's ``config/resolved.yaml`` (downloaded into ``cache``) when the tag points there."""
    text = version.tags.get("glasswork.config", "")
    if text and text != CONFIG_POINTER:
        return text
    try:
        target = cache / CONFIG_ARTIFACT
        fetch_file(target, lambda into: client.download_artifacts(version.run_id, CONFIG_ARTIFACT, into))
        return target.read_text(encoding="utf-8")
    except (MlflowException, OSError) as err:
        raise LineageError(
            f"{version.name} v{version.version}: no recorded config: no glasswork.config tag, and its run "
            f"{version.run_id} has no artifact {CONFIG_ARTIFACT} ({first_line(err)})"
        ) from None


def git_commit() -> str:
    """The current commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``group.key`` params (MLflow caps values at 6,000 chars)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def _prefect_flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext
    except ImportError:
        return None
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
