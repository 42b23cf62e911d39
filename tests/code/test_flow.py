"""The Prefect flow runs every step on the tiny config (temporary local Prefect server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import tiny_overrides

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.outputs import read_json

# The Prefect flow, every step, with a temporary Prefect server.
pytestmark = pytest.mark.slow


def test_glasswork_run_takes_the_tiny_config_through_the_flow(tmp_path, capsys):
    overrides = tiny_overrides(tmp_path)
    assert main(["run", *overrides]) == 0
    out = capsys.readouterr().out
    assert "Glasswork run finished." in out and "mlflow ui --backend-store-uri" in out
    cfg = load_config(overrides)
    for path in (
        "train/model/config.json",
        "evaluate/metrics.json",
        "explain/attributions.html",
        "drift/report.html",
        "register/registration.json",
    ):
        assert (tmp_path / "artifacts" / path).is_file(), path
    # Every file the closing message points at exists: "<folder>/<file> (...: a.html; b.html)".
    for line in out[out.index("Where to look:") :].splitlines():
        folder = re.search(r"(/\S+/artifacts/\w+)/?", line)
        if folder:
            named = re.findall(r"([\w.]+\.(?:html|json|png))", line)
            assert named, line
            for name in named:
                assert (Path(folder.group(1)) / name).is_file(), f"{name} named in: {line}"
    run_id = read_json(tmp_path / "artifacts" / "train" / "run.json")["run_id"]
    tags = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run_id).data.tags
    assert tags.get("glasswork.prefect_flow_run_id"), "the MLflow run links back to its Prefect flow run"
    assert read_json(tmp_path / "artifacts" / "register" / "registration.json")["promote"]
