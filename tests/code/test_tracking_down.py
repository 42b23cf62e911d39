"""Bad input: a tracking server that is down. The run stops with an error that names the server
and says what to do, in seconds rather than after MLflow's minutes of HTTP retries (nothing here
lowers MLFLOW_HTTP_REQUEST_MAX_RETRIES: Glasswork's own check must make it quick), and it leaves
no model registered and no half-written outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import tiny_overrides

BIN = Path(sys.executable).parent


@pytest.fixture
def dead_uri():
    """An http URI on 127.0.0.1 where nothing listens: the port stays bound, never listening,
    for the whole test, so connections are refused and no other process (another pytest
    worker's server) can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _assert_clear_message(text: str, uri: str) -> None:
    assert f"the MLflow tracking server at {uri} is not reachable" in text, text[-3000:]
    assert "Start it" in text and "tracking.uri" in text, text[-3000:]


@pytest.mark.slow
def test_run_against_a_down_tracking_server_fails_clearly(tmp_path, dead_uri):
    uri = dead_uri
    root, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "PREFECT_API_URL"):
        env.pop(name, None)
    done = subprocess.run(
        ["glasswork", "run", *tiny_overrides(root, "tracking=server", f"tracking.uri={uri}")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # A GlassworkError: exit 2 and one readable line, not a crash.
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("glasswork run: error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    _assert_clear_message(errors[0], uri)

    # Nothing half-written: no step output, no run id, no registration (an empty `.train.partial`
    # folder may remain: it holds no run and the next run starts afresh from it).
    artifacts = root / "artifacts"
    assert _files(artifacts) == []
    assert not (artifacts / "train").exists() and not (artifacts / "register").exists()
    # The preflight stopped the run before any step: nothing at all was written.
    assert _files(root) == []
    # No silent fall-back to a local store, where a model could have been registered instead.
    for folder in (f for f in (root, cwd) if f.exists()):
        assert not {"mlflow.db", "mlruns", "mlartifacts"} & {p.name for p in folder.iterdir()}, sorted(
            p.name for p in folder.iterdir()
        )


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_register_against_a_down_server_registers_nothing(tiny_run, dead_uri):
    """A server lost between steps: `register` stops before it logs or registers anything."""
    from mlflow.tracking import MlflowClient

    from glasswork import tracking
    from glasswork.config import load_config
    from glasswork.registry import register

    root, cfg = tiny_run
    name = cfg.registry.model_name
    local = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    versions = [v.version for v in local.search_model_versions(f"name='{name}'")]
    record = (root / "artifacts" / "register" / "registration.json").read_text()
    uri = dead_uri
    down = load_config(tiny_overrides(root, "tracking=server", f"tracking.uri={uri}"))

    with pytest.raises(tracking.TrackingServerUnavailable) as err:
        register(down)
    _assert_clear_message(str(err.value), uri)
    assert err.value.transient  # the flow may retry it: a server can come back
    assert [v.version for v in local.search_model_versions(f"name='{name}'")] == versions
    assert (root / "artifacts" / "register" / "registration.json").read_text() == record
    assert not [p.name for p in (root / "artifacts").iterdir() if ".staging-" in p.name]


@pytest.mark.parametrize(("override", "words"), [("tracking.artifact_root={tmp}/mlartifacts", "is a local folder")])
def test_server_settings_that_cannot_work_are_refused(override, words, tmp_path, dead_uri):
    """Refused before the server is contacted: a local artifact folder (a password in the URI is
    refused earlier, when the config is composed: tests/code/test_secrets.py)."""
    from glasswork import tracking
    from glasswork.config import load_config
    from glasswork.errors import ConfigError

    # An explicit URI: mlflow.set_tracking_uri (any earlier test) also sets MLFLOW_TRACKING_URI,
    # which tracking=server would otherwise pick up.
    overrides = ["tracking=server", f"tracking.uri={dead_uri}", override.format(tmp=tmp_path)]
    cfg = load_config(tiny_overrides(tmp_path, *overrides))
    with pytest.raises(ConfigError, match=words) as err:
        tracking.configure(cfg)
    assert "s3cret" not in str(err.value)
    assert not (tmp_path / "mlartifacts").exists()


def test_server_config_group(tmp_path, monkeypatch):
    """`tracking=server` takes MLflow's own MLFLOW_TRACKING_URI and has no local artifact folder."""
    from glasswork.config import load_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(tiny_overrides(tmp_path, "tracking=server"))
    assert cfg.tracking.uri == "http://127.0.0.1:5000" and cfg.tracking.artifact_root == ""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")
    assert load_config(tiny_overrides(tmp_path, "tracking=server")).tracking.uri == "https://mlflow.example.org"


def test_every_experiment_keeps_its_artifacts_under_the_artifact_root(tmp_path, monkeypatch):
    """The training experiment and any other one (the monitor's) put their artifacts under
    tracking.artifact_root: MLflow's own default for a local store is ./mlruns in whatever folder
    the process started in (the monitor's checks once landed in the repository's ./mlruns)."""
    import mlflow

    from glasswork import tracking
    from glasswork.config import load_config

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(tiny_overrides(tmp_path / "root"))
    trained = tracking.configure(cfg)
    watched = tracking.experiment_id(cfg, cfg.monitor.experiment_name)
    assert trained != watched and tracking.experiment_id(cfg, cfg.monitor.experiment_name) == watched
    root = Path(cfg.tracking.artifact_root).resolve().as_uri()
    client = mlflow.MlflowClient()
    for experiment in (trained, watched):
        assert client.get_experiment(experiment).artifact_location.startswith(root)
    with mlflow.start_run(experiment_id=watched):
        mlflow.log_text("checked", "monitor/summary.txt")
    assert list((tmp_path / "root" / "mlartifacts").rglob("summary.txt"))
    assert not list(elsewhere.iterdir()), "nothing is written in the folder the process started in"
