"""Checks that a whole run can start, made before any step writes anything.

A bad file or setting should fail in seconds with a clear message, not half an hour into a
flow run (and not inside a Prefect task, whose log would bury the message in a traceback).
"""

from __future__ import annotations

from omegaconf import DictConfig

from glasswork import tracking
from glasswork.champion import check_same_labels
from glasswork.champion_comparison import check_promote_if
from glasswork.data import sources
from glasswork.data.prepare import check_lengths, check_table
from glasswork.errors import ConfigError
from glasswork.explain.budget import check_share
from glasswork.explain.embeddings import check_projection
from glasswork.explain.faithfulness import check_alpha, check_sample
from glasswork.explain.step import check_methods
from glasswork.models.backbone import pretrained_dir
from glasswork.models.trainer import check_trainer
from glasswork.registry import SLICE_GATE
from glasswork.text_drift import CURRENT_CHOICES


def preflight(cfg: DictConfig) -> None:
    """Raise a :class:`~glasswork.errors.GlassworkError` for anything that would fail a step later:
    the task's data and its own settings (``Task.preflight``), then what every task shares."""
    from glasswork import tasks

    classes = tasks.build(cfg).preflight(cfg)
    check_projection(cfg.explain.projection, cfg.explain.projection_max)
    check_sample(cfg.explain.faithfulness_max_texts)
    check_alpha("explain.contrast_alpha", cfg.explain.contrast_alpha)
    check_share(cfg.explain.max_share_of_train)
    check_alpha("drift.explanation_alpha", cfg.drift.explanation_alpha)
    check_alpha("registry.slice_alpha", cfg.registry.slice_alpha, off=SLICE_GATE)
    check_gate_metrics(cfg.registry)
    check_promote_if(cfg.registry.promote_if)
    check_accelerator(cfg)
    check_compile_mode(cfg)
    check_trainer(cfg.trainer)
    # Last: the only checks that may wait on the network (a tracking server's /health, then its
    # registry): a champion of other labels under the same name is refused before training.
    tracking.check_store(cfg)
    check_same_labels(cfg, classes)


# The metrics evaluate writes where higher is better: a threshold is a minimum and a challenger
# must not be below the champion, so ece (lower is better), n or learned_nothing cannot be gated on.
GATE_METRICS = ("accuracy", "macro_f1", "roc_auc", "average_precision")


def check_text_run(cfg: DictConfig) -> list:
    """The text task's part of the preflight: its table (or packaged data), the pretrained model,
    the explain methods, the lengths and the drift batch; returns the data's classes."""
    if cfg.data.source == "table":
        classes = check_table(cfg).classes
    elif cfg.data.source in sources.PACKAGED:
        classes = sorted(sources.PACKAGED[cfg.data.source]()["label"].unique().tolist())
    else:
        raise ConfigError(f"data.source={cfg.data.source!r}: expected 'table' or one of {sorted(sources.PACKAGED)}")
    pretrained_dir(cfg.model)
    check_methods(cfg.explain.methods)
    check_lengths(cfg.model)
    if cfg.drift.current not in CURRENT_CHOICES:
        raise ConfigError(f"drift.current={cfg.drift.current!r}: expected one of {list(CURRENT_CHOICES)}")
    return classes


def check_gate_metrics(registry: DictConfig) -> None:
    """``registry.compare_metric`` and the ``registry.thresholds`` keys name metrics evaluate
    writes; a typo would otherwise surface only in the register step, after training."""
    if registry.compare_metric not in GATE_METRICS:
        raise ConfigError(f"registry.compare_metric={registry.compare_metric!r}: expected one of {list(GATE_METRICS)}")
    for name in registry.thresholds or {}:
        if name not in GATE_METRICS:
            raise ConfigError(
                f"registry.thresholds has a key {name!r}: expected test metrics among {list(GATE_METRICS)}"
            )


def lightning_choices() -> tuple[list[str], list[str]]:
    """The accelerator and precision names Lightning's Trainer accepts."""
    from typing import get_args

    # Private names, but the very lists Lightning checks against: no copy here to fall behind.
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from lightning.pytorch.accelerators import AcceleratorRegistry

    accelerators = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    return accelerators, [*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)]


def check_accelerator(cfg: DictConfig) -> None:
    """A ``trainer.accelerator`` and ``trainer.precision`` Lightning knows, and for ``trainer=gpu``
    a visible CUDA device; said now instead of a Lightning traceback once training starts."""
    accelerators, precisions = lightning_choices()
    if cfg.trainer.accelerator not in accelerators:
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator!r}: expected one of {accelerators}")
    if str(cfg.trainer.precision) not in precisions:
        raise ConfigError(f"trainer.precision={cfg.trainer.precision!r}: expected one of {precisions}")
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer=gpu but no CUDA GPU is visible here: use trainer=cpu (the default) on this machine"
            )


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(cfg: DictConfig) -> None:
    """A ``trainer.compile_mode`` torch.compile knows, refused before training rather than at the
    first step."""
    mode = cfg.trainer.compile_mode
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile_mode={mode!r}: expected one of {list(COMPILE_MODES)}")
