"""Fully sharded training (``trainer=fsdp``: FSDP2 on Lightning's ModelParallelStrategy) with two
CPU processes (gloo): each rank holds half of the weights, and the model it saves is the one that
DDP trains from the same start on the same batches."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from tests.conftest import TWO_CPU_PROCESSES, tiny_overrides

from glasswork.config import load_config
from glasswork.models.backbone import build_model
from glasswork.steps import STEPS


def _train(cfg) -> dict:
    for step in STEPS:
        result = step.function()(cfg)
        if step.name == "train":
            return result
    raise AssertionError("no train step")


def test_the_fsdp_setting_is_checked_before_anything_runs():
    from omegaconf import OmegaConf

    from glasswork.errors import ConfigError
    from glasswork.models.trainer import strategy

    shards = strategy(OmegaConf.create({"strategy": "fsdp2", "devices": 4, "num_nodes": 2}))
    assert shards._data_parallel_size == 8 and shards._tensor_parallel_size == 1  # every rank a shard
    with pytest.raises(ConfigError, match="trainer.devices=auto: fsdp2 needs a number of devices per node"):
        strategy(OmegaConf.create({"strategy": "fsdp2", "devices": "auto", "num_nodes": 1}))
    assert strategy(OmegaConf.create({"strategy": "ddp", "devices": 2, "num_nodes": 1})) == "ddp"


@pytest.mark.slow
def test_fsdp_shards_the_weights_and_saves_the_model_ddp_trains(tmp_path):
    fsdp = load_config(tiny_overrides(tmp_path / "fsdp", "trainer=fsdp", *TWO_CPU_PROCESSES))
    ddp = load_config(tiny_overrides(tmp_path / "ddp", "trainer=ddp", *TWO_CPU_PROCESSES))
    sharded, replicated = _train(fsdp), _train(ddp)
    assert sharded["train/steps"] == replicated["train/steps"] == 4  # 4 steps an epoch on each rank

    tags = MlflowClient(tracking_uri=fsdp.tracking.uri).get_run(sharded["run_id"]).data.tags
    assert tags["glasswork.train.world_size"] == "2"
    assert 0.45 < float(tags["glasswork.train.weights_share_rank0"]) < 0.55  # rank 0 held half

    trained = tmp_path / "fsdp" / "artifacts" / "train"
    saved = load_file(trained / "model" / "model.safetensors")
    best = torch.load(trained / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    start = build_model(fsdp.model, 2, fsdp.seed).state_dict()
    by_ddp = load_file(tmp_path / "ddp" / "artifacts" / "train" / "model" / "model.safetensors")
    assert saved.keys() == by_ddp.keys() and saved.keys() <= start.keys()
    moved = max((by_ddp[k] - start[k]).abs().max().item() for k in saved)
    assert moved > 1e-3  # training moved the weights
    for key, value in saved.items():
        # Whole tensors, gathered from the shards, in the checkpoint as in the saved model ...
        assert value.shape == start[key].shape, key
        torch.testing.assert_close(value, best[f"net.{key}"], rtol=0, atol=0)
        # ... and the same model as DDP's, but for the order of floating-point sums.
        torch.testing.assert_close(value, by_ddp[key], rtol=1e-3, atol=1e-3 * moved)
