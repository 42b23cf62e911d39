"""Every experiment config composes and smoke-runs on tiny data (one fast_dev_run batch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import REPO, tiny_overrides

from glasswork.config import load_config
from glasswork.data.prepare import ingest, prepare
from glasswork.train import train

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_run(name, tmp_path: Path):
    cfg = load_config([f"experiment={name}", *tiny_overrides(tmp_path), "trainer.fast_dev_run=true"])
    ingest(cfg)
    prepare(cfg)
    result = train(cfg)
    assert (tmp_path / "artifacts" / "train" / "model" / "model.safetensors").is_file()
    assert result["run_id"]
