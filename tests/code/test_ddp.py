"""Data-parallel training on Lightning's DDP strategy with two CPU processes (gloo), launched
from inside a long-lived process (here pytest; in production a Prefect task)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import TWO_CPU_PROCESSES, tiny_overrides

from glasswork.config import load_config
from glasswork.steps import STEPS

DDP = ("trainer=ddp", *TWO_CPU_PROCESSES)


@pytest.mark.slow
def test_two_process_ddp_trains_logs_from_rank_zero_only_and_registers_once(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path, *DDP))
    results = {step.name: step.function()(cfg) for step in STEPS}
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    run = client.get_run(results["train"]["run_id"])
    assert run.data.tags["glasswork.train.world_size"] == "2"
    assert run.data.tags["glasswork.train.status"] == "done"
    # One MLflow run (rank 1 opened none), one registered version.
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run.info.run_id]
    versions = client.search_model_versions(f"name='{cfg.registry.model_name}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    # Each rank took half of the batches: 4 steps per epoch, as configured per process.
    assert results["train"]["train/steps"] == 4
    assert (tmp_path / "artifacts" / "train" / "model" / "config.json").is_file()
    assert not (tmp_path / "artifacts" / ".train.partial").exists()
