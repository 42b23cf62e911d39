"""A failed ``register`` never loses or doubles a champion: the alias moves last, a failure
after the version exists deletes it and gives the alias back, and one training run registers
at most one version however often the step is retried."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import tiny_overrides

from glasswork.config import load_config
from glasswork.registry import register
from glasswork.steps import STEPS

# tiny_run: the whole tiny pipeline, run once a worker.
pytestmark = pytest.mark.slow


def _versions(cfg) -> dict[str, str]:
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    return {str(v.version): v.run_id for v in client.search_model_versions(f"name='{cfg.registry.model_name}'")}


def _champion(cfg) -> str:
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    return str(client.get_model_version_by_alias(cfg.registry.model_name, cfg.registry.alias).version)


def test_a_failure_after_the_alias_moved_gives_it_back_and_a_retry_registers_once(tiny_run, monkeypatch):
    root, cfg = tiny_run
    assert _champion(cfg) == "1" and list(_versions(cfg)) == ["1"]
    registration = root / "artifacts/register/registration.json"
    before = registration.read_text()
    # A second training run of the same model: as good as v1, so it would take the alias.
    again = load_config(tiny_overrides(root))
    for step in STEPS[:-1]:
        step.function()(again)
    original = mlflow.set_tag

    def failing(key, value):  # the step's last write, after the alias moved
        if key == "glasswork.register.status" and value == "done":
            raise OSError("injected: the tracking store went away")
        return original(key, value)

    monkeypatch.setattr(mlflow, "set_tag", failing)
    with pytest.raises(OSError, match="injected"):
        register(again)
    assert _champion(again) == "1", "the previous champion holds the alias again"
    assert list(_versions(again)) == ["1"], "the failed step's version is deleted"
    assert registration.read_text() == before  # no half-written output
    monkeypatch.setattr(mlflow, "set_tag", original)

    # Retried: the run registers one version, and registering it once more reuses that one.
    record = register(again)
    assert record["promote"], record["reasons"]
    assert _champion(again) == record["version"] != "1"
    assert register(again)["version"] == record["version"]
    runs = list(_versions(again).values())
    assert len(runs) == 2 and len(set(runs)) == 2, _versions(again)
    assert json.loads(registration.read_text())["version"] == record["version"]
