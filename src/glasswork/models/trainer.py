"""The Lightning Trainer of the train step, built from the ``trainer`` config group.

Kept apart from the step (``glasswork.train``, which owns the MLflow run) so that the throughput
benchmark trains with exactly these settings and callbacks.

A GPU runs ahead of Python only while nothing asks it for a result: every ``.item()``,
``int(tensor)``, ``torch.unique`` or ``synchronize`` makes the host wait until the device is idle,
and the next step cannot be queued meanwhile. Lightning's ``ThroughputMonitor`` synchronises after
every batch and the progress bar reads the loss back at every refresh, so here both happen only
on the steps that are logged anyway (``tests/code/test_train_syncs.py`` counts them).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from glasswork.errors import ConfigError


class StepThroughput(L.Callback):
    """Examples/s, real tokens/s, padding share and the share of time spent between steps.

    Counts on the host where shapes are known and sums real tokens on the device; the clock and
    the token sum are read back only on logged steps, averaged over the steps since the last one.
    ``throughput/between_steps_share`` is the wall time outside the training step (fetching the
    next batch, callbacks): high means the data loader, not the model, sets the pace.
    """

    def __init__(self) -> None:
        self._reset(None)
        self._step_end: float | None = None

    def _reset(self, now: float | None) -> None:
        self._start, self._between = now, 0.0
        self._examples = self._padded = 0
        self._tokens: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A new window: validation and checkpoints between epochs are not training time.
        self._reset(None)
        self._step_end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._start is None:
            self._reset(now)
        elif self._step_end is not None:
            self._between += now - self._step_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Texts count real tokens through their attention mask; other inputs count examples only.
        mask = batch.get("attention_mask")
        size = batch["labels"]
        self._examples += size.shape[0]
        if mask is not None:
            self._padded += mask.numel()
            tokens = mask.sum()  # stays on the device: no wait here
            self._tokens = tokens if self._tokens is None else self._tokens + tokens
        if trainer._logger_connector.should_update_logs and trainer.logger is not None:
            if size.device.type == "cuda":
                torch.cuda.synchronize(size.device)
            now = time.perf_counter()
            assert self._start is not None  # set by on_train_batch_start
            seconds = max(now - self._start, 1e-9)
            world = trainer.world_size  # every rank steps through as many batches of the same size
            metrics = {
                "throughput/examples_per_s": world * self._examples / seconds,
                "throughput/between_steps_share": self._between / seconds,
            }
            if self._tokens is not None:
                real = float(self._tokens)
                metrics["throughput/tokens_per_s"] = world * real / seconds
                metrics["throughput/padding_share"] = 1 - real / max(1, self._padded)
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
            self._reset(now)
        self._step_end = time.perf_counter()


class LossBar(TQDMProgressBar):
    """tqdm's bar with the training loss, read back from the device only when the bar refreshes.

    Not rich's bar, which reads the bar's metrics back at every step whatever its refresh rate.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            items["train/loss"] = f"{float(loss):.3f}"
        return items


def _checkpoint_cadence(t: DictConfig) -> dict:
    steps, minutes = t.checkpoint_every_n_steps, t.checkpoint_every_minutes
    if steps and minutes:
        raise ConfigError(
            f"trainer.checkpoint_every_n_steps={steps} and trainer.checkpoint_every_minutes={minutes}: "
            "set one of them (the other to null)"
        )
    if minutes:
        return {"train_time_interval": timedelta(minutes=minutes)}
    return {"every_n_train_steps": steps} if steps else {}


class EarlyStoppingAfter(EarlyStopping):
    """Lightning's early stopping, which does not stop training before ``min_steps`` steps.

    Not Lightning's own ``min_steps``: that one holds back every stop, the time budget's too, so a
    table of long texts (31 s a step of 32 e-mails at 512 tokens on 2 CPU cores) would train its
    150 steps for 78 minutes past a 9-minute budget. Here the time budget always holds.
    """

    def __init__(self, min_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_steps = min_steps

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        stopping_already = trainer.should_stop  # the time budget, say: not ours to undo
        super()._run_early_stopping_check(trainer)
        if trainer.global_step < self.min_steps and not stopping_already and trainer.should_stop:
            trainer.should_stop = False
            self.stopped_epoch = 0


FSDP2 = "fsdp2"  # trainer.strategy: torch's fully_shard on Lightning's ModelParallelStrategy


def strategy(t: DictConfig):
    """Lightning's strategy for ``trainer.strategy``: its own names as they are, and ``fsdp2``:
    FSDP2 over every process (``ClassifierModule.configure_model`` shards the network), saving
    whole-model checkpoints on rank 0, which the train step reads back."""
    if t.strategy == FSDP2:
        from lightning.pytorch.strategies import ModelParallelStrategy

        if not isinstance(t.devices, int) or t.devices < 1:
            raise ConfigError(f"trainer.devices={t.devices}: {FSDP2} needs a number of devices per node")
        # Every process one data-parallel shard, none splitting tensors.
        return ModelParallelStrategy(
            data_parallel_size=t.devices * t.num_nodes, tensor_parallel_size=1, save_distributed_checkpoint=False
        )
    if str(t.strategy).startswith("fsdp"):
        raise ConfigError(
            f"trainer.strategy={t.strategy}: Lightning's FSDP1 strategies are not supported (the train step "
            f"saves the whole model from rank 0); use trainer=fsdp (strategy {FSDP2}: FSDP2)"
        )
    return t.strategy


def check_trainer(t: DictConfig) -> None:
    """The trainer settings Lightning would reject only once training starts, refused now (for a
    distributed run, before its processes are launched)."""
    strategy(t)
    _checkpoint_cadence(t)
    if not t.lr_scale > 0:
        raise ConfigError(
            f"trainer.lr_scale={t.lr_scale}: expected a number above 0 (the peak learning rate is model.lr times it)"
        )
    _check_budget(t)


def _check_budget(t: DictConfig) -> None:
    # Lightning reads max_epochs=-1 as "no limit", but the schedule and the epoch arithmetic of
    # budget() need a finite number (-1 overflowed there): bound a run by max_steps/max_minutes.
    if isinstance(t.max_epochs, bool) or not isinstance(t.max_epochs, int) or t.max_epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={t.max_epochs}: expected 1 or more epochs (for no epoch limit, set a large "
            "number and bound the run with trainer.max_steps or trainer.max_minutes)"
        )
    for key in ("batch_size", "eval_batch_size", "devices", "num_nodes"):
        if not t[key] >= 1:
            raise ConfigError(f"trainer.{key}={t[key]}: expected 1 or more")
    if t.min_steps < 0:
        raise ConfigError(f"trainer.min_steps={t.min_steps}: expected 0 (no minimum) or more optimizer steps")
    for key in ("val_check_interval", "early_stopping_patience", "max_minutes"):
        if t[key] is not None and not t[key] > 0:
            raise ConfigError(f"trainer.{key}={t[key]}: expected a number above 0 (or null: none)")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"trainer.max_steps={t.max_steps}: expected a number above 0 (or null: no step limit)")
    if t.max_steps is not None and t.max_steps < (t.min_steps or 0):
        raise ConfigError(
            f"trainer.max_steps={t.max_steps} is below trainer.min_steps={t.min_steps}: expected max_steps >= "
            "min_steps (or max_steps=null: no step limit)"
        )
    if t.class_weights not in CLASS_WEIGHTS:
        raise ConfigError(f"trainer.class_weights={t.class_weights!r}: expected one of {list(CLASS_WEIGHTS)}")


# balanced: each class's loss weighted by n / (classes x its count); auto: balanced when the
# classes are 4:1 or more apart (glasswork.train.class_weights)
CLASS_WEIGHTS = (None, "balanced", "auto")


def budget(t: DictConfig, steps_per_epoch: int) -> dict:
    """Lightning's stopping settings for the training budget, fitted to the data.

    Validation runs every ``val_check_interval`` optimizer steps, and at least once an epoch, so
    that early stopping sees a small table as often as a large one. ``max_epochs`` is raised to
    what ``min_steps`` needs: a table of 800 rows (26 steps an epoch) must not stop after one pass.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    epochs = t.max_epochs
    if t.min_steps:
        epochs = max(epochs, -(-t.min_steps // steps_per_epoch))
    every = min(t.val_check_interval, steps_per_epoch) if t.val_check_interval else None
    return {
        "max_epochs": epochs,
        "max_steps": -1 if t.max_steps is None else t.max_steps,
        # min_steps holds back early stopping only (EarlyStoppingAfter) and raises max_epochs above;
        # not Lightning's min_steps, which holds back the time budget too (and sets min_epochs=1,
        # so that nothing can end the first epoch: 319 steps of the reviews at batch 32).
        "max_time": timedelta(minutes=t.max_minutes) if t.max_minutes else None,
        "val_check_interval": every or 1.0,
        "check_val_every_n_epoch": None if every else 1,
    }


def build_trainer(
    t: DictConfig,
    ckpt_dir: Path,
    logger: Logger | bool,
    monitor: tuple[str, str] = ("val/macro_f1", "max"),
    **overrides,
) -> L.Trainer:
    """A Trainer for the ``trainer`` config ``t``: best checkpoint on ``monitor`` (a metric and
    whether higher or lower is better: the task's ``checkpoint_on``), mid-epoch checkpoints for
    resuming (``last.ckpt`` is always the newest), learning-rate and throughput curves.
    ``overrides`` go to ``L.Trainer`` as they are (the benchmark's step limits)."""
    metric, mode = monitor
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=metric, mode=mode, save_top_k=1),
        ModelCheckpoint(dirpath=ckpt_dir, filename="step-{step}", save_last=True, **_checkpoint_cadence(t)),
        LearningRateMonitor(logging_interval="step"),
        StepThroughput(),
    ]
    if t.early_stopping_patience:
        # Checked after each validation (every val_check_interval steps), not at epoch ends.
        callbacks.append(
            EarlyStoppingAfter(
                t.min_steps,
                monitor=metric,
                mode=mode,
                patience=t.early_stopping_patience,
                check_on_train_epoch_end=False,
            )
        )
    if overrides.get("enable_progress_bar", True):  # Lightning refuses a bar callback with the bar off
        callbacks.append(LossBar(refresh_rate=t.progress_bar_refresh))
    limit = t.limit_train_batches
    options = {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": strategy(t),
        # Our length-bucket batch sampler shards itself across ranks (Lightning cannot inject
        # a DistributedSampler into a custom batch sampler).
        "use_distributed_sampler": not t.bucket_by_length,
        "precision": t.precision,
        "max_epochs": t.max_epochs,
        "limit_train_batches": int(limit) if float(limit).is_integer() and limit > 1 else float(limit),
        "log_every_n_steps": t.log_every_n_steps,
        "gradient_clip_val": t.gradient_clip_val,
        "deterministic": t.deterministic,
        "fast_dev_run": t.fast_dev_run,
        "logger": logger,
        "callbacks": callbacks,
        "enable_model_summary": False,
        "default_root_dir": str(ckpt_dir.parent),
    }
    try:
        return L.Trainer(**(options | overrides))
    except (ValueError, TypeError, MisconfigurationException) as err:
        raise ConfigError(f"trainer settings rejected by Lightning: {err}") from None
