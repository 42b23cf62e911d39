"""``trainer.compile``: the train step compiles the network, saves it as a plain transformers model,
and refuses a mode torch.compile does not know before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.conftest import tiny_overrides
from torch._dynamo.utils import counters

from glasswork.config import load_config
from glasswork.data.prepare import ingest, prepare
from glasswork.errors import ConfigError
from glasswork.models.backbone import load_trained
from glasswork.train import train


@pytest.mark.slow  # compiling the tiny model takes ~40 s on two cores
def test_a_compiled_network_trains_and_saves_as_a_plain_model(tmp_path: Path):
    # reduce-overhead: CUDA graphs on a GPU; on a CPU torch.compile runs it without them.
    # Validation batches of 8 (the last one of 7) and training batches of 16 in several widths.
    overrides = ("trainer.compile=true", "trainer.compile_mode=reduce-overhead", "trainer.eval_batch_size=8")
    cfg = load_config(tiny_overrides(tmp_path, *overrides))
    ingest(cfg)
    prepare(cfg)
    torch._dynamo.reset()
    counters.clear()
    result = train(cfg)
    assert result["run_id"] and result["train/steps"] > 0
    # compile_dynamic (true): one graph with gradients, one without, whatever the batch shapes.
    # torch's own choice (null) compiles a third, when a validation batch is shorter.
    assert counters["stats"]["unique_graphs"] == 2
    saved = tmp_path / "artifacts" / "train" / "model"
    model = load_trained(saved)  # a plain transformers folder: no compiled wrapper's "_orig_mod." keys
    assert not any("_orig_mod" in key for key in model.state_dict())


def test_an_unknown_compile_mode_is_refused_before_training(tmp_path: Path):
    cfg = load_config(tiny_overrides(tmp_path, "trainer.compile=true", "trainer.compile_mode=fastest"))
    with pytest.raises(ConfigError, match=r"trainer.compile_mode='fastest': expected one of \['default'"):
        train(cfg)
    assert not (tmp_path / "artifacts").exists()
