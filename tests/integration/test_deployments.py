"""The scheduled deployments on a real `prefect server`: create the pools, deploy, start a process
worker, run the monitoring deployment, and see the flow run complete, the MLflow run appear, the
drift alert published and the server's automation post it to a webhook listening on 127.0.0.1.
Every process started here is stopped by its PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import REPO
from tests.integration.servers import stop_group

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


@pytest.fixture
def webhook():
    """``(url, posts)``: an HTTP endpoint on 127.0.0.1 that records the JSON bodies posted to it."""
    posts: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posts
    finally:
        server.shutdown()
        server.server_close()


def test_an_alert_webhook_that_is_not_a_url_is_refused(capsys):
    from pipelines.deploy import main

    with pytest.raises(SystemExit) as exit_:
        main(["--alert-webhook", "hooks.slack.com/services/T0/B0/x"])
    assert exit_.value.code == 2
    assert "--alert-webhook 'hooks.slack.com/services/T0/B0/x': expected an http:// or https:// URL" in (
        capsys.readouterr().err
    )


def test_deploy_without_a_server_refuses_and_says_how_to_start_one(tmp_path):
    """Run as the README shows it, with no PREFECT_API_URL: Prefect would deploy into a temporary
    server and stop it, schedules and all, while printing success."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no profile that sets the URL either
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.deploy"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PREFECT_API_URL is not set" in done.stderr
    assert "    prefect server start\n" in done.stderr
    assert "    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api\n" in done.stderr
    assert "Successfully created" not in done.stdout + done.stderr
    assert "Starting temporary server" not in done.stdout + done.stderr
    assert not (tmp_path / "prefect-home" / "prefect.db").exists(), "a temporary server was started"


def test_deploy_to_a_server_that_does_not_answer_refuses(tmp_path):
    from tests.integration.servers import free_port

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env["PREFECT_API_URL"] = url = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.deploy"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the Prefect server at PREFECT_API_URL={url} does not answer" in done.stderr
    assert "prefect server start" in done.stderr


@pytest.mark.parametrize(
    "override",
    [
        "tracking.uri=http://attacker.example:5000",
        "tracking=local",
        "paths.root=/",
        "paths.artifacts_dir=/etc",
        "data.path=/etc/shadow",
        "model.dir=/tmp/other-model",
        "monitor.output_dir=/tmp/x",
        "registry.model_name=${oc.env:MLFLOW_TRACKING_PASSWORD}",
        "+trainer.extra=1",
        "~registry",
        "trainer=../../etc/passwd",
        "hydra.run.dir=/tmp",
    ],
)
def test_a_deployment_run_may_not_move_where_things_are(override):
    from pipelines.flow_parameters import check_run_overrides

    from glasswork.errors import ConfigError

    with pytest.raises(ConfigError, match="flow-run parameter 'overrides' refused") as refused:
        check_run_overrides(["debug=fast", override])
    assert f"  {override}: " in str(refused.value)
    assert "  debug=fast:" not in str(refused.value)


def test_a_deployment_run_may_tune_and_keep_the_deployments_own_overrides():
    from pipelines.flow_parameters import check_run_overrides

    tuned = ["debug=fast", "trainer=gpu", "experiment=heldout_drift", "trainer.max_epochs=2", "seed=7",
             "monitor.sample_size=100", "registry.promote_if.above=-0.01", "explain.n_probe=4"]  # fmt: skip
    assert check_run_overrides(tuned) == tuned
    # What `python -m pipelines.deploy tracking=server data.path=...` put in the deployment stays.
    deployed = ["tracking=server", "data=table", "data.path=/srv/reviews.csv"]
    assert check_run_overrides([*deployed, "trainer.max_epochs=2"], deployed) == [*deployed, "trainer.max_epochs=2"]


@pytest.mark.integration
@pytest.mark.slow
def test_monitoring_deployment_runs_on_a_worker(prefect_server, tiny_run, tmp_path, webhook):
    url, env = prefect_server
    root, cfg = tiny_run
    env = {**env, "PREFECT_API_URL": url, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    # Where the worker keeps its files is the worker's to say (a flow run may not set paths.*).
    env["GLASSWORK_ROOT"] = str(root)
    batch = root / "incoming"
    batch.mkdir()
    tweets = pd.read_csv(root / "data" / "raw" / "tweets.csv")
    tweets.sample(n=100, random_state=0).to_csv(batch / "day.csv", index=False)

    hook_url, posts = webhook
    for only in ([], ["--only", "monitor-daily"]):  # twice: the automation is replaced, not doubled
        deployed = subprocess.run(
            [sys.executable, "-m", "pipelines.deploy", *only, "--alert-webhook", hook_url],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr[-3000:]
    automations = _api(url, "/automations/filter")
    assert [a["name"] for a in automations] == ["glasswork-drift-alert"]
    assert automations[0]["trigger"]["expect"] == ["glasswork.drift.detected"]
    # The webhook URL is a credential: the server keeps it as a block secret and shows it masked.
    assert hook_url not in json.dumps(_api(url, "/block_documents/filter"))
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter")}
    assert set(deployments) == {"train-weekly", "monitor-daily"}
    assert {d["work_pool_name"] for d in deployments.values()} == {"glasswork-cpu", "glasswork-gpu"}
    crons = {d["name"]: d["schedules"][0]["schedule"]["cron"] for d in deployments.values()}
    assert crons == {"train-weekly": "0 3 * * 1", "monitor-daily": "0 6 * * *"}

    parameters = {"batch": str(batch), "overrides": ["debug=fast", "monitor.sample_size=100"]}
    monitor_id = deployments["monitor-daily"]["id"]
    created = _api(url, f"/deployments/{monitor_id}/create_flow_run", {"parameters": parameters})
    # A run that tries to send the results (and the worker's credentials) elsewhere fails first.
    hijack = ["debug=fast", "tracking.uri=http://127.0.0.1:9/steal", f"paths.root={tmp_path / 'elsewhere'}"]
    refused = _api(url, f"/deployments/{monitor_id}/create_flow_run",
                   {"parameters": {"batch": str(batch), "overrides": hijack}})  # fmt: skip
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
        refused_run = _wait_for_final_state(url, refused["id"], worker)
    finally:
        stop_group(worker)
        log.close()
    worker_log = (tmp_path / "worker.log").read_text()
    assert run["state_type"] == "COMPLETED", worker_log[-4000:]
    assert refused_run["state_type"] == "FAILED", worker_log[-4000:]
    assert "flow-run parameter 'overrides' refused" in refused_run["state"]["message"], refused_run["state"]
    assert "tracking.uri=http://127.0.0.1:9/steal: a location" in worker_log
    assert not (tmp_path / "elsewhere").exists()

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
    # The server's automation posted the alert to the team's webhook, once.
    deadline = time.monotonic() + 120
    while not posts and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(3)  # a second post would arrive now
    assert len(posts) == 1, posts
    text = posts[0]["text"]
    assert text.startswith(f"Glasswork: drift in {batch}\n"), text
    assert "glasswork-sentiment v1 sees drift" in text and "text" in text and "estimated accuracy 0." in text
    assert f"MLflow run {runs[0].info.run_id}." in text and "explanation_report.html" in text
    assert "where the batch lands: " in text and "embeddings.html" in text


def _events(url: str, name: str, timeout: float = 60) -> list[dict]:
    """The server stores events a moment after they arrive: poll."""
    deadline = time.monotonic() + timeout
    while True:
        found = _api(url, "/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 10})["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)
