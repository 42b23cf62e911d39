"""MLflow tracking: one MLflow run per trained model, with step-prefixed keys.

The ``train`` step opens a new run and records its id in ``artifacts/train/run.json``; the
steps after it (evaluate, explain, drift, register) log into that same run, whichever front
called them (Prefect flow, ``dvc repro``, the CLI). So one run in the MLflow UI holds a
model's whole story: ``train/*`` and ``val/*`` curves, ``test/*``, ``explain/*``, ``drift/*``
metrics, the plots and reports as artifacts, and lineage tags.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from glasswork.errors import PipelineOrderError
from glasswork.outputs import read_json

log = logging.getLogger(__name__)

# Quiet Alembic's table-creation chatter on a fresh SQLite store.
logging.getLogger("alembic").setLevel(logging.WARNING)


def configure(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and return the experiment id (created if new)."""
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_registry_uri(cfg.tracking.uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if cfg.tracking.artifact_root:
        root = Path(cfg.tracking.artifact_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    return client.create_experiment(cfg.tracking.experiment_name, artifact_location=location)


def run_file(cfg: DictConfig) -> Path:
    """Where the train step records the MLflow run id of the model it trained."""
    return Path(cfg.paths.artifacts_dir) / "train" / "run.json"


def current_run_id(cfg: DictConfig) -> str:
    """The MLflow run id of the trained model, or a clear error if nothing was trained."""
    path = run_file(cfg)
    if not path.is_file():
        raise PipelineOrderError(f"{path} is missing: run `glasswork train` first")
    return read_json(path)["run_id"]


@contextmanager
def step_run(cfg: DictConfig, step: str, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the model's MLflow run for one step; mark it FAILED if the step raises."""
    experiment_id = configure(cfg)
    if run_id is None:
        run_id = current_run_id(cfg)
    mlflow.end_run()  # a run left open by a previous step in this process
    run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id)
    try:
        yield run
    except BaseException:
        mlflow.set_tag(f"glasswork.{step}.status", "failed")
        mlflow.end_run(status="FAILED")
        raise
    mlflow.set_tag(f"glasswork.{step}.status", "done")
    mlflow.end_run()


def new_run(cfg: DictConfig) -> str:
    """Create the model's MLflow run (the train step calls this) and return its id."""
    experiment_id = configure(cfg)
    client = MlflowClient()
    run = client.create_run(experiment_id, run_name=cfg.tracking.run_name or None, tags=lineage_tags(cfg))
    return run.info.run_id


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
