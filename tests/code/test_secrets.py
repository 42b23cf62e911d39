"""Secrets stay secret: no password in a tracking URI reaches the config, and a config read back
from the registry is data, not code."""

from __future__ import annotations

import pickle

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import tiny_overrides

from glasswork.cli import main
from glasswork.config import load_config, to_yaml
from glasswork.errors import ConfigError, GlassworkError, LineageError
from glasswork.reproduce import rebuild_config

SECRET = "s3cret-9f1c"
URIS = [
    f"postgresql://mlflow:{SECRET}@db.internal:5432/mlflow",
    f"postgresql+psycopg2://mlflow:{SECRET}@db.internal/mlflow",
    f"mysql://mlflow:{SECRET}@db.internal/mlflow",
    f"https://alice:{SECRET}@mlflow.example.org",
    f"http://alice:{SECRET}@127.0.0.1:5000",
]


@pytest.mark.parametrize("uri", URIS)
def test_a_password_in_a_tracking_uri_is_refused_without_printing_it(uri, tmp_path, capsys):
    with pytest.raises(ConfigError, match="holds a password") as err:
        load_config(tiny_overrides(tmp_path, f"tracking.uri={uri}"))
    assert SECRET not in str(err.value)
    # Through the command line, before anything is written: no store, no params, no outputs.
    assert main(["run", *tiny_overrides(tmp_path, f"tracking.uri={uri}")]) == 2
    out = capsys.readouterr()
    assert "holds a password" in out.err and SECRET not in out.err + out.out
    assert list(tmp_path.iterdir()) == []


def test_a_password_from_the_environment_is_refused_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URIS[3])  # tracking=server reads it
    assert main(["show-config", *tiny_overrides(tmp_path, "tracking=server")]) == 2
    out = capsys.readouterr()
    assert "MLFLOW_TRACKING_PASSWORD" in out.err and SECRET not in out.err + out.out


def test_a_user_name_alone_is_fine(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path, "tracking.uri=postgresql://mlflow@db.internal/mlflow"))
    assert cfg.tracking.uri == "postgresql://mlflow@db.internal/mlflow"


def test_a_recorded_config_with_an_interpolation_is_refused(tmp_path):
    text = to_yaml(load_config(tiny_overrides(tmp_path / "old")))
    tampered = text.replace(f"artifacts_dir: {tmp_path / 'old'}/artifacts", "artifacts_dir: ${oc.env:HOME}")
    assert tampered != text
    with pytest.raises(LineageError, match=r"m v1: .*paths.artifacts_dir.*interpolation"):
        rebuild_config(tampered, "m v1", tmp_path / "new", "sqlite:///x.db", "", "r")
    assert not (tmp_path / "new").exists()


def test_every_folder_a_rebuild_writes_is_under_its_own(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    text = to_yaml(load_config(tiny_overrides(old)))
    elsewhere = tmp_path / "elsewhere"
    # A tag pointing the outputs outside the recorded root (edited, or recorded on another layout).
    text = text.replace(f"artifacts_dir: {old}/artifacts", f"artifacts_dir: {elsewhere}/artifacts")
    text = text.replace(f"output_dir: {old}/artifacts/monitor", f"output_dir: {elsewhere}/monitor")
    assert str(elsewhere) in text
    cfg = rebuild_config(text, "m v1", new, "sqlite:////t/mlflow.db", "/t/mlartifacts", "rebuild")
    written = [cfg.paths.root, cfg.paths.raw_dir, cfg.paths.processed_dir, cfg.paths.artifacts_dir]
    assert all(str(p).startswith(str(new)) for p in [*written, cfg.monitor.output_dir])
    assert str(elsewhere) not in to_yaml(cfg)
    assert cfg.data.path.startswith(str(new))  # the file ingest writes moved with the root
    assert (cfg.tracking.uri, cfg.tracking.artifact_root) == ("sqlite:////t/mlflow.db", "/t/mlartifacts")


class _Planted:
    """An object whose unpickling would run code (it would create the marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_is_read_as_weights_only(tmp_path):
    """A resumable checkpoint that holds more than tensors is refused, and nothing in it runs."""
    from glasswork.steps import get
    from glasswork.train import PARTIAL, _fingerprint

    cfg = load_config(tiny_overrides(tmp_path))
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    partial = tmp_path / "artifacts" / PARTIAL
    (partial / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"
    with open(partial / "checkpoints" / "last.ckpt", "wb") as f:
        pickle.dump({"global_step": 5, "state_dict": _Planted(marker)}, f, protocol=2)  # torch.save's protocol
    from glasswork.outputs import write_json

    run_id = (
        MlflowClient(cfg.tracking.uri)
        .create_run(MlflowClient(cfg.tracking.uri).create_experiment("x", artifact_location=str(tmp_path / "a")))
        .info.run_id
    )
    write_json(partial / "resume.json", {"run_id": run_id, "fingerprint": _fingerprint(cfg)})
    expected = r"last.ckpt holds not only tensors \(it asks for (builtins|io).open\).*Delete"
    with pytest.raises(GlassworkError, match=expected):
        get("train").function()(cfg)
    assert not marker.exists()
    assert not (tmp_path / "artifacts" / "train").exists()
