"""Distributed training with two CPU processes (gloo), launched from inside a long-lived process
(here pytest; in production a Prefect task): data-parallel (``trainer=ddp``) through every step,
and fully sharded (``trainer=fsdp``: FSDP2 on Lightning's ModelParallelStrategy), where each rank
holds half of the weights and the model it saves is the one DDP trains from the same start on the
same batches. One DDP run serves both tests: each two-process run costs a minute on 2 cores."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from tests.conftest import TWO_CPU_PROCESSES, tiny_overrides

from glasswork.config import load_config
from glasswork.models.backbone import build_model
from glasswork.steps import STEPS

DDP = ("trainer=ddp", *TWO_CPU_PROCESSES)


def _train(cfg) -> dict:
    for step in STEPS:
        result = step.function()(cfg)
        if step.name == "train":
            return result
    raise AssertionError("no train step")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The tiny pipeline with trainer=ddp, every step: (its root, config, each step's result)."""
    root = tmp_path_factory.mktemp("ddp")
    cfg = load_config(tiny_overrides(root, *DDP))
    return root, cfg, {step.name: step.function()(cfg) for step in STEPS}


@pytest.mark.slow
def test_two_process_ddp_trains_logs_from_rank_zero_only_and_registers_once(ddp_run):
    root, cfg, results = ddp_run
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
    assert (root / "artifacts" / "train" / "model" / "config.json").is_file()
    assert not (root / "artifacts" / ".train.partial").exists()


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
def test_fsdp_shards_the_weights_and_saves_the_model_ddp_trains(tmp_path, ddp_run):
    fsdp = load_config(tiny_overrides(tmp_path / "fsdp", "trainer=fsdp", *TWO_CPU_PROCESSES))
    ddp_root, _, ddp_results = ddp_run
    sharded, replicated = _train(fsdp), ddp_results["train"]
    assert sharded["train/steps"] == replicated["train/steps"] == 4  # 4 steps an epoch on each rank

    tags = MlflowClient(tracking_uri=fsdp.tracking.uri).get_run(sharded["run_id"]).data.tags
    assert tags["glasswork.train.world_size"] == "2"
    assert 0.45 < float(tags["glasswork.train.weights_share_rank0"]) < 0.55  # rank 0 held half

    trained = tmp_path / "fsdp" / "artifacts" / "train"
    saved = load_file(trained / "model" / "model.safetensors")
    best = torch.load(trained / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    start = build_model(fsdp.model, 2, fsdp.seed).state_dict()
    by_ddp = load_file(ddp_root / "artifacts" / "train" / "model" / "model.safetensors")
    assert saved.keys() == by_ddp.keys() and saved.keys() <= start.keys()
    moved = max((by_ddp[k] - start[k]).abs().max().item() for k in saved)
    assert moved > 1e-3  # training moved the weights
    for key, value in saved.items():
        # Whole tensors, gathered from the shards, in the checkpoint as in the saved model ...
        assert value.shape == start[key].shape, key
        torch.testing.assert_close(value, best[f"net.{key}"], rtol=0, atol=0)
        # ... and the same model as DDP's, but for the order of floating-point sums.
        torch.testing.assert_close(value, by_ddp[key], rtol=1e-3, atol=1e-3 * moved)


@pytest.mark.slow
def test_a_generative_model_trains_with_two_process_ddp(tmp_path):
    """task=text_generation on trainer=ddp: each rank's checkpoint callback watches the task's own
    metric (val/loss), not the classifier's (a worker once looked for val/macro_f1 and crashed after
    its first epoch); rank 0 saves the merged model."""
    cfg = load_config(["task=text_generation", "debug=fast", f"paths.root={tmp_path}", *DDP])
    result = _train(cfg)
    assert result["train/steps"] == 4 and result["val/best_loss"] > 0
    tags = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(result["run_id"]).data.tags
    assert tags["glasswork.train.world_size"] == "2" and tags["glasswork.train.status"] == "done"
    model = tmp_path / "artifacts" / "text_generation" / "train" / "model"
    assert (model / "config.json").is_file() and not (model / "adapter_config.json").exists()  # adapters merged
