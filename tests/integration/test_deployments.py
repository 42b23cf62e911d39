"""The scheduled deployments on a real `prefect server`: create the pools, deploy, start a process
worker, run the monitoring deployment, and see the flow run complete, the MLflow run appear and
the drift alert published. Every process started here is stopped by its PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import REPO, tiny_overrides
from tests.integration.conftest import stop_group

BIN = Path(sys.executable).parent


def _api(url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _wait_for_final_state(url: str, flow_run_id: str, worker: subprocess.Popen, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/flow_runs/{flow_run_id}", timeout=30) as answer:
            run = json.loads(answer.read())
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(3)
    state, code = run["state_type"], worker.poll()
    raise TimeoutError(f"flow run {flow_run_id} still {state} after {timeout} s (worker exit code {code})")


@pytest.mark.integration
@pytest.mark.slow
def test_monitoring_deployment_runs_on_a_worker(prefect_server, tiny_run, tmp_path):
    url, env = prefect_server
    root, cfg = tiny_run
    env = {**env, "PREFECT_API_URL": url, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    batch = root / "incoming"
    batch.mkdir()
    tweets = pd.read_csv(root / "data" / "raw" / "tweets.csv")
    tweets.sample(n=100, random_state=0).to_csv(batch / "day.csv", index=False)

    deployed = subprocess.run(
        [sys.executable, "-m", "pipelines.deploy"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter")}
    assert set(deployments) == {"train-weekly", "monitor-daily"}
    assert {d["work_pool_name"] for d in deployments.values()} == {"glasswork-cpu", "glasswork-gpu"}
    crons = {d["name"]: d["schedules"][0]["schedule"]["cron"] for d in deployments.values()}
    assert crons == {"train-weekly": "0 3 * * 1", "monitor-daily": "0 6 * * *"}

    parameters = {"batch": str(batch), "overrides": tiny_overrides(root, "monitor.sample_size=100")}
    monitor_id = deployments["monitor-daily"]["id"]
    created = _api(url, f"/deployments/{monitor_id}/create_flow_run", {"parameters": parameters})
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "glasswork-cpu", "--type", "process"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run = _wait_for_final_state(url, created["id"], worker)
    finally:
        stop_group(worker)
        log.close()
    worker_log = (tmp_path / "worker.log").read_text()
    assert run["state_type"] == "COMPLETED", worker_log[-4000:]

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("glasswork-monitoring")
    assert experiment is not None, "the monitoring flow logged no MLflow run"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["glasswork.monitor.batch"] == str(batch)
    assert runs[0].data.tags["glasswork.drift_verdict"] == "drift"
    artifacts = _api(url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["glasswork-drift-alert"]}}})
    assert len(artifacts) == 1 and artifacts[0]["flow_run_id"] == created["id"]
    assert "DRIFT" in artifacts[0]["data"]
    events = _events(url, "glasswork.drift.detected")
    assert len(events) == 1 and events[0]["payload"]["mlflow_run_id"] == runs[0].info.run_id
    assert events[0]["resource"]["prefect.resource.id"].startswith("glasswork.model.glasswork-sentiment.")


def _events(url: str, name: str, timeout: float = 60) -> list[dict]:
    """The server stores events a moment after they arrive: poll."""
    deadline = time.monotonic() + timeout
    while True:
        found = _api(url, "/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 10})["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)
