"""Checks that a whole run can start, made before any step writes anything.

A bad file or setting should fail in seconds with a clear message, not half an hour into a
flow run (and not inside a Prefect task, whose log would bury the message in a traceback).
"""

from __future__ import annotations

from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data import sources
from glasswork.data.prepare import check_lengths, check_table
from glasswork.drift import CURRENT_CHOICES
from glasswork.errors import ConfigError
from glasswork.explain.budget import check_share
from glasswork.explain.embeddings import check_projection
from glasswork.explain.faithfulness import check_alpha, check_sample
from glasswork.explain.step import check_methods
from glasswork.models.backbone import pretrained_dir
from glasswork.models.trainer import check_trainer
from glasswork.registry import SLICE_GATE, check_same_labels


def preflight(cfg: DictConfig) -> None:
    """Raise a :class:`~glasswork.errors.GlassworkError` for anything that would fail a step later."""
    if cfg.data.source == "table":
        classes = check_table(cfg).classes
    elif cfg.data.source in sources.PACKAGED:
        classes = sorted(sources.PACKAGED[cfg.data.source]()["label"].unique().tolist())
    else:
        raise ConfigError(f"data.source={cfg.data.source!r}: expected 'table' or one of {sorted(sources.PACKAGED)}")
    pretrained_dir(cfg.model)
    check_methods(cfg.explain.methods)
    check_projection(cfg.explain.projection, cfg.explain.projection_max)
    check_sample(cfg.explain.faithfulness_max_texts)
    check_alpha("explain.contrast_alpha", cfg.explain.contrast_alpha)
    check_share(cfg.explain.max_share_of_train)
    check_alpha("drift.explanation_alpha", cfg.drift.explanation_alpha)
    check_alpha("registry.slice_alpha", cfg.registry.slice_alpha, off=SLICE_GATE)
    if cfg.drift.current not in CURRENT_CHOICES:
        raise ConfigError(f"drift.current={cfg.drift.current!r}: expected one of {list(CURRENT_CHOICES)}")
    check_accelerator(cfg)
    check_compile_mode(cfg)
    check_trainer(cfg.trainer)
    check_lengths(cfg.model)
    # Last: the only checks that may wait on the network (a tracking server's /health, then its
    # registry): a champion of other labels under the same name is refused before training.
    tracking.check_store(cfg)
    check_same_labels(cfg, classes)


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer=gpu`` needs a visible CUDA device; say so instead of a Lightning traceback."""
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
