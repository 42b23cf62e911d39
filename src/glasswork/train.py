"""The ``train`` step: fine-tune the classifier with Lightning, tracked in a new MLflow run."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig

from glasswork import tasks, tracking
from glasswork.collapse import ADVICE, learned_nothing, macro_f1
from glasswork.config import to_plain, to_yaml
from glasswork.data.prepare import SPLITS, load_labels, load_split, split_files
from glasswork.errors import GlassworkError, first_line
from glasswork.interrupt import interruptible
from glasswork.models.classifier_module import ClassifierModule
from glasswork.models.trainer import budget, build_trainer, check_trainer
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.steps import output, processed

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Train, keep the best checkpoint on ``val/macro_f1``, save the model for the next steps.

    Writes ``artifacts/train/``: ``model/`` (weights, tokenizer, label mapping),
    ``checkpoints/``, ``run.json`` (the MLflow run id) and ``metrics.json``.
    """
    from glasswork.preflight import check_accelerator, check_compile_mode  # late: preflight imports the steps

    check_accelerator(cfg)
    check_compile_mode(cfg)
    check_trainer(cfg.trainer)
    cfg = tasks.build(cfg).resolve(cfg)  # e.g. model.max_length=auto: the length prepare chose
    if world_size(cfg) > 1 and not os.environ.get(LAUNCHED):
        return _launch_own_process(cfg)
    task = tasks.build(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # "high" lets fp32 matmuls use TF32 tensor cores on GPUs (ignored on CPU).
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    labels = load_labels(cfg)
    train_df, val_df = load_split(cfg, "train"), load_split(cfg, "val")
    weights = class_weights(cfg.trainer.class_weights, train_df["label"], labels)
    module = task.module(cfg, len(labels["classes"]), weights)
    if cfg.trainer.compile:  # on every rank alike (a DDP worker trains the same module)
        module.net = torch.compile(module.net, mode=cfg.trainer.compile_mode, dynamic=cfg.trainer.compile_dynamic)
    datamodule = task.datamodule(cfg, train_df, val_df)
    out_dir = output(cfg, "train")
    partial = Path(cfg.paths.artifacts_dir) / PARTIAL
    if global_rank(cfg) != 0:
        return _fit_as_worker(cfg, module, datamodule, partial, checkpoint_on(task))
    run_id, resume_from = _start_or_resume(cfg, partial)
    with tracking.step_run(cfg, "train", run_id=run_id) as run, atomic_dir(out_dir) as staging:
        run_id = run.info.run_id
        if resume_from is None:
            write_json(partial / "resume.json", {"run_id": run_id, "fingerprint": _fingerprint(cfg)})
            _log_run_inputs(cfg, labels)
            task.log_training_data(cfg, train_df)
        else:
            step = checkpoint_step(resume_from)
            log.info("train: resuming run %s from %s (step %d)", run_id, resume_from, step)
            mlflow.set_tag("glasswork.train.resumed_from_step", str(step))
        trainer = _trainer(cfg, partial / "checkpoints", run_id, len(train_df), checkpoint_on(task))
        started = time.perf_counter()
        # weights_only: a checkpoint is a file on disk that anyone with the folder could replace.
        with interruptible(f"checkpoints kept in {partial}: run the same command again to resume"):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        seconds = time.perf_counter() - started
        stopped = _why_stopped(cfg, trainer, checkpoint_on(task)[0])
        mlflow.set_tag("glasswork.train.stopped", stopped)
        mlflow.set_tag("glasswork.train.world_size", str(trainer.world_size))
        whole = _gather_shards(module, trainer)
        if whole is not None:  # FSDP2: the whole weights, in a network of one piece
            mlflow.set_tag("glasswork.train.weights_share_rank0", f"{_local_share(module):.4f}")
            module = task.module(cfg, len(labels["classes"]))
            module.load_state_dict(whole)
        best = _restore_best(module, trainer)
        task.save(_unwrap(module.net), staging / "model", labels, cfg)
        metrics = _final_metrics(trainer, best, checkpoint_on(task)[0]) | {"train/seconds": round(seconds, 1)}
        nothing = _learned_nothing(module, labels["names"], metrics.get("val/best_macro_f1"))
        metrics["val/learned_nothing"] = int(nothing is not None)
        if nothing:
            mlflow.set_tag("glasswork.train.learned_nothing", nothing)
        write_json(staging / "metrics.json", metrics)
        write_json(staging / "run.json", {"run_id": run_id})
        _write_curves(run_id, staging)
        shutil.move(str(partial / "checkpoints"), str(staging / "checkpoints"))
        best = best and str(staging / "checkpoints" / Path(best).name)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("train: run %s, %s; best checkpoint %s, %s", run_id, stopped, best or "-", metrics)
    if "before trainer.min_steps" in stopped:
        log.warning("train: %s", stopped)
    if nothing:
        log.warning("train: the model learned nothing: %s; %s", nothing, ADVICE)
    return {"run_id": run_id, **metrics}


def _write_curves(run_id: str, folder: Path) -> None:
    """``curves.png``: the loss and the scores Lightning logged, per step, validation and epoch;
    logged to the run beside its metrics (MLflow draws each metric alone, not side by side)."""
    from mlflow.tracking import MlflowClient

    from glasswork.curves import curves_figure
    from glasswork.explain.embeddings import png_bytes

    fig = curves_figure(MlflowClient(), run_id)
    if fig is not None:
        (folder / "curves.png").write_bytes(png_bytes(fig))
        mlflow.log_artifact(str(folder / "curves.png"), "train")


PARTIAL = ".train.partial"  # checkpoints and run id of a training run that has not finished yet
LAUNCHED = "GLASSWORK_TRAIN_PROCESS"  # set in the process that _launch_own_process starts


def world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices
    return (devices if isinstance(devices, int) and devices > 0 else 1) * cfg.trainer.num_nodes


def global_rank(cfg: DictConfig) -> int:
    """This process's rank (0 outside distributed training). Lightning's launcher sets
    LOCAL_RANK in the processes it starts; NODE_RANK comes from the cluster."""
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


def _launch_own_process(cfg: DictConfig) -> dict:
    """Run the train step in a fresh ``glasswork train --config FILE`` process.

    Lightning's DDP launcher starts the other ranks by re-running the current command line:
    inside a Prefect flow (or any long-lived process) that would re-run the whole flow. A
    fresh process whose command line is just this step, on the resolved config frozen to a
    file, is safe to re-run.
    """
    folder = Path(cfg.paths.artifacts_dir) / ".train.launch"
    folder.mkdir(parents=True, exist_ok=True)
    frozen = folder / "config.yaml"
    frozen.write_text(to_yaml(cfg), encoding="utf-8")
    env = {**os.environ, LAUNCHED: "1"}
    env.pop("GLASSWORK_ROOT", None)  # the frozen config holds resolved paths
    log.info("train: %d processes: launching `glasswork train --config %s`", world_size(cfg), frozen)
    done = subprocess.run([sys.executable, "-m", "glasswork", "train", "--config", str(frozen)], env=env)
    if done.returncode:
        raise GlassworkError(f"distributed training failed (exit {done.returncode}); see its log above")
    return {**read_json(output(cfg, "train", "run.json")), **read_json(output(cfg, "train", "metrics.json"))}


def _fit_as_worker(cfg: DictConfig, module, datamodule, partial: Path, monitor: tuple[str, str]) -> dict:
    """Ranks other than 0 train alongside it: no MLflow run, no outputs (rank 0 writes them)."""
    state = read_json(partial / "resume.json")
    last = partial / "checkpoints" / "last.ckpt"
    # Lightning's loggers write from rank 0 only, so this one's MLFlowLogger stays silent.
    # The task's checkpoint metric, as rank 0's: every rank's checkpoint callback reads it.
    trainer = _trainer(cfg, partial / "checkpoints", state["run_id"], len(datamodule.train), monitor)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
    _gather_shards(module, trainer)  # rank 0 gathers the whole model: every rank must take part
    return {"run_id": state["run_id"], "rank": global_rank(cfg)}


def class_weights(kind: str | None, train_labels, labels: dict) -> list[float] | None:
    """Per-class loss weights: ``balanced`` weighs class k by n / (classes x n_k), as scikit-learn's
    ``class_weight="balanced"``; ``auto`` does so only when the largest class of the training split
    is at least ``AUTO_BALANCE`` times the smallest; ``None``: every text counts once."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(labels["classes"]))
    ratio = counts.max() / max(1, counts.min())
    if kind is None or (kind == "auto" and ratio < AUTO_BALANCE):
        return None
    weights = len(train_labels) / (len(counts) * np.maximum(counts, 1))
    log.info(
        "train: class weights %s (trainer.class_weights=%s; the classes are %.1f:1 apart)",
        dict(zip(labels["names"], np.round(weights, 3).tolist(), strict=True)),
        kind,
        ratio,
    )
    return weights.tolist()


# trainer.class_weights=auto balances the loss from this ratio of largest to smallest class on: at
# 10:1 (1,000 reviews) the unweighted model answered the majority for every text after 100 steps.
AUTO_BALANCE = 4.0


def steps_per_epoch(cfg: DictConfig, n_train: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` texts (per process, as Lightning counts them)."""
    t = cfg.trainer
    batches = math.ceil(math.ceil(n_train / world_size(cfg)) / t.batch_size)
    limit = t.limit_train_batches
    return max(1, min(batches, int(limit)) if float(limit).is_integer() and limit > 1 else int(batches * limit))


def checkpoint_on(task) -> tuple[str, str]:
    """The validation metric the kept checkpoint and early stopping follow, and its better side:
    a classifier's macro-F1 (the default), a generative model's loss (``TextGeneration.checkpoint_on``)."""
    return getattr(task, "checkpoint_on", ("val/macro_f1", "max"))


def _why_stopped(cfg: DictConfig, trainer: L.Trainer, metric: str = "val/macro_f1") -> str:
    """Which part of the budget ended training, in words (an MLflow tag and the log)."""
    steps = f"{trainer.global_step} steps, {trainer.current_epoch} epochs"
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if stopper is not None and stopper.stopped_epoch:
        return f"stopped early after {steps}: {metric} improved no more for {stopper.patience} validations"
    if cfg.trainer.max_steps and trainer.global_step >= cfg.trainer.max_steps:
        return f"stopped at the step budget ({steps}; trainer.max_steps={cfg.trainer.max_steps})"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"stopped after every epoch ({steps})"
    stopped = f"stopped at the time budget ({steps}; trainer.max_minutes={cfg.trainer.max_minutes})"
    if trainer.global_step < cfg.trainer.min_steps:
        stopped += (
            f", before trainer.min_steps={cfg.trainer.min_steps}: raise trainer.max_minutes, or lower "
            f"model.max_length={cfg.model.max_length} or trainer.batch_size to make steps cheaper"
        )
    return stopped


def _learned_nothing(module: ClassifierModule, names: list[str], best_f1: float | None) -> str | None:
    """Whether the kept checkpoint's validation predictions collapsed (:mod:`glasswork.collapse`).
    The kept checkpoint is the validation with the best macro-F1, the last one when none is known."""
    history = getattr(module, "val_history", None)  # a generative model's module keeps no confusion
    if not history:
        return None
    chosen = history[-1]
    if best_f1 is not None:
        chosen = min(history, key=lambda h: abs(macro_f1(np.asarray(h["confusion"])) - best_f1))
    return learned_nothing(np.asarray(chosen["confusion"]), names)


def _gather_shards(module: ClassifierModule, trainer: L.Trainer) -> dict | None:
    """Under FSDP2 (``trainer=fsdp``), the module's whole state dict on rank 0 (empty on the other
    ranks; a collective, so every rank calls it after ``fit``); ``None`` under other strategies."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    if not isinstance(trainer.strategy, ModelParallelStrategy):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _local_share(module: torch.nn.Module) -> float:
    """The share of the weights that this rank holds (its shards of DTensors, all of the rest)."""
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return local / sum(p.numel() for p in params)


def _fingerprint(cfg: DictConfig) -> str:
    """What must not change for a checkpoint to be resumed: data, model, trainer, seed."""
    from glasswork.data.prepare import data_md5

    plain = to_plain(cfg)
    picked = {k: plain[k] for k in ("data", "model", "trainer", "seed")}
    return hashlib.md5((json.dumps(picked, sort_keys=True) + data_md5(cfg)).encode()).hexdigest()


def _start_or_resume(cfg: DictConfig, partial: Path) -> tuple[str, str | None]:
    """The MLflow run id and checkpoint to resume, when a run of this same config was stopped
    mid-way (killed, or failed); else ``NEW_RUN`` and a clean ``.train.partial`` folder (the run
    is created by :func:`tracking.step_run`, inside the section that ends it whatever happens)."""
    fingerprint = _fingerprint(cfg)
    marker, last = partial / "resume.json", partial / "checkpoints" / "last.ckpt"
    if marker.is_file():
        state = read_json(marker)
        if state.get("fingerprint") == fingerprint and last.is_file():
            checkpoint_step(last)  # refused before the run is reopened, when it is more than weights
            return state["run_id"], str(last)
        log.warning("train: %s holds an unfinished run of another config (or no checkpoint): starting afresh", partial)
        tracking.end_unfinished(cfg, state["run_id"])
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "checkpoints").mkdir(parents=True)
    return tracking.NEW_RUN, None


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a Lightning checkpoint was saved at, read without unpickling anything
    but tensors and plain containers (``torch.load(weights_only=True)``)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except pickle.UnpicklingError as err:
        # torch's message is a page long; what it refused is on one of its lines.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        refused = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        what = f"it asks for {found.group(1)}" if found else refused.group(1) if refused else first_line(err)[:160]
        raise GlassworkError(
            f"checkpoint {path} holds not only tensors ({what}), so it is not read: it was not written by this "
            f"training run. Delete {Path(path).parent.parent} to train afresh"
        ) from None


def _trainer(cfg: DictConfig, ckpt_dir: Path, run_id: str, n_train: int, monitor: tuple[str, str]) -> L.Trainer:
    logger = MLFlowLogger(
        experiment_name=cfg.tracking.experiment_name, tracking_uri=cfg.tracking.uri, run_id=run_id, log_model=False
    )
    per_epoch = steps_per_epoch(cfg, n_train)
    limits = budget(cfg.trainer, per_epoch)
    t = cfg.trainer
    if not t.fast_dev_run:
        log.info(
            "train: %d training rows make %d steps an epoch; training at most %s steps, %d epochs and %s minutes%s",
            n_train,
            per_epoch,
            "no limit of" if t.max_steps is None else t.max_steps,
            limits["max_epochs"],
            t.max_minutes or "no limit of",
            f"; stopping early after {t.early_stopping_patience} validations (every "
            f"{limits['val_check_interval']} steps) without a gain in {monitor[0]}, not before step {t.min_steps}"
            if t.early_stopping_patience
            else "",
        )
    return build_trainer(t, ckpt_dir, logger, monitor, **limits)


def _restore_best(module: ClassifierModule, trainer: L.Trainer) -> str | None:
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        return str(best)
    return None


def _final_metrics(trainer: L.Trainer, best: str | None, metric: str = "val/macro_f1") -> dict:
    keep = ("val/acc", "val/macro_f1", "val/loss", "val/perplexity", "train/loss")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in keep}
    score = trainer.checkpoint_callback.best_model_score if best else None
    if score is not None:
        metrics[f"val/best_{metric.removeprefix('val/')}"] = float(score)
    metrics["train/steps"] = int(trainer.global_step)
    return metrics


def _log_run_inputs(cfg: DictConfig, labels: dict) -> None:
    mlflow.log_params(tracking.flat_params(to_plain(cfg)))
    mlflow.log_text(to_yaml(cfg), tracking.CONFIG_ARTIFACT)
    report = processed(cfg, "report.json")
    card = output(cfg, "prepare", "data_card.md")
    if card.is_file():  # the data card, as prepare printed it
        mlflow.log_artifact(str(card), "data")
    if report.is_file():
        data = read_json(report)
        mlflow.log_dict(data, "data/prepare_report.json")
        mlflow.log_params({f"data.split.{k}": v for k, v in data.get("split_sizes", {}).items()})
    mlflow.log_dict(labels, "data/labels.json")
    # The data version itself travels with the run: `glasswork monitor` reads its reference from
    # here when the local splits have moved on (a later run on other data) or are not on its
    # machine at all (a worker of a team's tracking server).
    for path in split_files(processed(cfg)):
        mlflow.log_artifact(str(path), tracking.SPLITS_ARTIFACT)
    for split in SPLITS:
        source = str(processed(cfg, f"{split}.parquet"))
        dataset = mlflow.data.from_pandas(load_split(cfg, split), source=source, name=split, targets="label")
        mlflow.log_input(dataset, context=split)  # the MLflow UI's "Datasets used", with a digest


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "_orig_mod", net)
