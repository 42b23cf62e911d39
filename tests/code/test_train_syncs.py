"""The train step leaves a GPU free to run ahead of Python: no host-device round trip on the
steps that are not logged, beyond the one the plain PyTorch loop pays too.

A CPU has no device to wait for, so the waits are counted as the ATen ops that would cause one
on a GPU: reading a value back (``.item()``, ``int()``, ``bool()``) and ops whose output size
depends on the data (``torch.unique``, ``nonzero``).
"""

from __future__ import annotations

import traceback

import lightning as L
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tests.conftest import tiny_overrides
from torch.utils._python_dispatch import TorchDispatchMode

import glasswork.train
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.models.trainer import build_trainer
from glasswork.outputs import read_json
from glasswork.steps import get

WAITS = {
    "aten::_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::masked_select",
}
# transformers checks `attention_mask.all()` in every forward to pick its attention kernel: the
# plain loop of benchmarks/train_throughput.py runs the same model and pays it too.
SHARED_WITH_PLAIN_LOOP = "transformers/masking_utils.py"
# Frames of torch's dispatch machinery between an op and the code that called it.
DISPATCH = ("_python_dispatch.py", "torch/_ops.py", "torch/_tensor.py", "torch/overrides.py", "_compile.py")
DISPATCH += ("eval_frame.py",)


class WaitCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.where: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in WAITS:
            frames = traceback.extract_stack()[:-1]
            inner = next(f for f in reversed(frames) if not f.filename.endswith(DISPATCH))
            # torch.optim's CPU path reads its step counters with .item(); on a GPU the fused
            # AdamW keeps them on the device, so that is no wait there.
            if "/torch/optim/" not in inner.filename:
                caller = next(f for f in reversed(frames) if "/torch/" not in f.filename)
                self.where.append(f"{caller.filename.split('site-packages/')[-1]}:{caller.lineno}")
        return func(*args, **(kwargs or {}))


class Probe(L.Callback):
    """The waits of each training step, from its start to the next step's start (the other
    callbacks' work on it included), and whether Lightning logged that step."""

    def __init__(self) -> None:
        self.steps: list[tuple[bool, list[str]]] = []
        self.mode: WaitCounter | None = None
        self.logged = False

    def _close(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.steps.append((self.logged, self.mode.where))
            self.mode = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close()
        self.mode = WaitCounter()
        self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logged = trainer._logger_connector.should_update_logs

    def on_validation_start(self, trainer, pl_module):
        self._close()  # validation reads its metrics back once, at the end of the epoch

    def on_train_epoch_end(self, trainer, pl_module):
        self._close()


def test_unlogged_training_steps_never_wait_for_the_device(tmp_path, monkeypatch):
    every = 5
    overrides = tiny_overrides(
        tmp_path,
        "trainer.limit_train_batches=12",
        f"trainer.log_every_n_steps={every}",
        f"trainer.progress_bar_refresh={every}",
    )
    cfg = load_config(overrides)
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    probe = Probe()

    def with_probe(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.callbacks.insert(0, probe)
        return trainer

    monkeypatch.setattr(glasswork.train, "build_trainer", with_probe)
    get("train").function()(cfg)

    assert len(probe.steps) == 12
    # Steps 5 and 10 are logged; the epoch's last one ends with the bar's refresh and validation.
    quiet = [where for i, (logged, where) in enumerate(probe.steps[:-1]) if not logged]
    assert len(quiet) == 9
    for where in quiet:
        own = [w for w in where if SHARED_WITH_PLAIN_LOOP not in w]
        assert own == [], f"an unlogged training step waited for the device at {own}"
        assert len(where) <= 1
    # The logged steps do read back (the loss for MLflow and the bar, the throughput clock).
    assert all(where for logged, where in probe.steps if logged)

    run_id = read_json(tmp_path / "artifacts" / "train" / "run.json")["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    rates = client.get_metric_history(run_id, "throughput/examples_per_s")
    assert [m.step for m in rates] == [5, 10]
    assert all(m.value > 0 for m in rates)
    padding = client.get_metric_history(run_id, "throughput/padding_share")
    assert all(0 <= m.value < 1 for m in padding)
    between = client.get_metric_history(run_id, "throughput/between_steps_share")
    assert all(0 <= m.value < 1 for m in between)


def test_checkpoints_by_steps_or_by_time_not_both(tmp_path, cfg_factory):
    cfg = cfg_factory(tiny_overrides(tmp_path, "trainer.checkpoint_every_minutes=5"))
    with pytest.raises(ConfigError, match="checkpoint_every_n_steps=50 and trainer.checkpoint_every_minutes=5"):
        build_trainer(cfg.trainer, tmp_path / "ckpt", logger=False)
    timed = OmegaConf.merge(cfg.trainer, {"checkpoint_every_n_steps": None})
    trainer = build_trainer(timed, tmp_path / "ckpt", logger=False)
    step_checkpoint = [c for c in trainer.checkpoint_callbacks if c.filename == "step-{step}"][0]
    assert step_checkpoint._train_time_interval.total_seconds() == 300


def test_a_trainer_without_the_progress_bar(tmp_path, cfg_factory):
    """The benchmark's ``--no-bar``: Lightning refuses a bar callback once the bar is off."""
    cfg = cfg_factory(tiny_overrides(tmp_path))
    shown = build_trainer(cfg.trainer, tmp_path / "ckpt", logger=False)
    assert shown.progress_bar_callback is not None
    hidden = build_trainer(cfg.trainer, tmp_path / "ckpt", logger=False, enable_progress_bar=False)
    assert hidden.progress_bar_callback is None
