"""Cascading model-randomisation check (Adebayo et al., NeurIPS 2018, https://arxiv.org/abs/1810.03292,
section 4.1).

An explanation that stays the same when the model's weights are replaced by random ones
explains the input, not the model. The check re-initialises the model's layers from the top down,
one more at a time (the classification head, then each encoder block from the last, then the
embeddings), re-explains the same texts after each and measures the mean Spearman correlation
of the absolute token scores with the trained model's: the curve should fall as the model loses
its weights.

The rule (``explain.sanity_max_spearman``): a method passes when its correlation, averaged over
the cascade's stages, is below the limit: its explanations must part from the trained model's as
the layers turn random, not only once the last one has. A method whose scores do not depend on the
weights stays near 1 all the way down and fails; so does one that ignores the top layers (attention
rollout never reads the classification head) until the bottom ones go.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from glasswork.errors import ConfigError
from glasswork.explain.attributions import TokenAttribution

MIN_TEXTS = 16  # fewer texts leave a mean Spearman too noisy to read a curve from

# Explains the check's texts with a (partly randomised) model: {method: attributions}.
Explainer = Callable[[torch.nn.Module], dict[str, list[TokenAttribution]]]


def check_sanity(n_texts: int, max_length: int | None) -> None:
    """Refuse a check on fewer than :data:`MIN_TEXTS` texts, or on texts cut to under 8 tokens."""
    if isinstance(n_texts, bool) or not isinstance(n_texts, int) or n_texts < MIN_TEXTS:
        raise ConfigError(
            f"explain.sanity_n_texts={n_texts!r}: expected at least {MIN_TEXTS} texts for the randomisation check"
        )
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8):
        raise ConfigError(
            f"explain.sanity_max_length={max_length!r}: expected at least 8 tokens, or null for model.max_length"
        )


def cascade(model: torch.nn.Module) -> list[tuple[str, list[torch.nn.Module]]]:
    """The model's layers from the output down, as (name, modules): the classification head (with
    the pooler), each block of the encoder's layer list from the last, then the embeddings; a
    network that names its own stages (``model.cascade()``, e.g. the image task's CNN) those."""
    if callable(getattr(model, "cascade", None)):
        return model.cascade()
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return _encoder_decoder_cascade(model)
    base = getattr(model, "base_model", model)
    head = [m for m in model.children() if m is not base]
    if getattr(base, "pooler", None) is not None:
        head.append(base.pooler)
    blocks = _layers(base)
    embeddings = getattr(base, "embeddings", None) or model.get_input_embeddings()
    stages = [("head", head)] if head else []
    stages += [(f"layer {i}", [blocks[i]]) for i in reversed(range(len(blocks)))]
    return stages + [("embeddings", [embeddings])]


def _layers(part: torch.nn.Module) -> torch.nn.ModuleList:
    lists = [m for m in part.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(part).__name__}: no list of layers to randomise one by one")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def _encoder_decoder_cascade(model: torch.nn.Module) -> list[tuple[str, list[torch.nn.Module]]]:
    """An encoder–decoder language model (T5) from the output down: the language-model head, the
    decoder's blocks from the last, the encoder's from the last, then the shared embeddings."""
    decoder, encoder = _layers(model.get_decoder()), _layers(model.get_encoder())
    stages = [("head", [model.get_output_embeddings()])]
    stages += [(f"decoder layer {i}", [decoder[i]]) for i in reversed(range(len(decoder)))]
    stages += [(f"encoder layer {i}", [encoder[i]]) for i in reversed(range(len(encoder)))]
    return stages + [("embeddings", [model.get_input_embeddings()])]


def _reinitialise(modules: Sequence[torch.nn.Module]) -> None:
    for module in modules:
        for part in module.modules():
            if hasattr(part, "reset_parameters"):
                part.reset_parameters()


def randomisation_check(
    model: torch.nn.Module,
    explain_with: Explainer,
    agreement: Callable[..., float],
    *,
    seed: int,
    max_spearman: float,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The cascading check of every method ``explain_with`` returns.

    Returns the metrics — per method ``randomisation_spearman_<k>`` for the ``k``-th stage,
    ``randomisation_spearman`` (the last: every layer random), ``randomisation_spearman_mean``
    (over the stages) and ``randomisation_passed`` (1.0 when that mean is below
    ``max_spearman``) — and the curves, {method: {stage: Spearman}}, for :func:`cascade_figure`.
    """
    trained = explain_with(model)
    twin = copy.deepcopy(model).eval()
    torch.manual_seed(seed)
    curves: dict[str, dict[str, float]] = {method: {} for method in trained}
    for name, modules in cascade(twin):
        _reinitialise(modules)  # on top of the stages above: the randomisation cascades
        randomised = explain_with(twin)
        for method, items in trained.items():
            curves[method][name] = agreement(items, randomised[method], absolute=True)
    metrics = {}
    for method, curve in curves.items():
        for k, rho in enumerate(curve.values(), start=1):
            metrics[f"{method}/randomisation_spearman_{k}"] = rho
        mean = float(np.mean(list(curve.values())))
        metrics[f"{method}/randomisation_spearman"] = list(curve.values())[-1]
        metrics[f"{method}/randomisation_spearman_mean"] = mean
        metrics[f"{method}/randomisation_passed"] = float(mean < max_spearman)
    return metrics, curves


def cascade_figure(curves: dict[str, dict[str, float]], n_texts: int, max_spearman: float):
    """Each method's Spearman against the trained model's explanation as layers turn random."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (method, curve) in enumerate(curves.items()):
        mean = np.mean(list(curve.values()))
        ax.plot(range(len(curve)), list(curve.values()), "o-", color=f"C{i}", label=f"{method} (mean {mean:.2f})")
    stages = list(next(iter(curves.values())))
    ax.set_xticks(range(len(stages)), [f"+ {s}" for s in stages], rotation=30, ha="right", fontsize=8)
    ax.axhline(max_spearman, color="0.3", linestyle="--", linewidth=0.8, label=f"limit on the mean ({max_spearman})")
    ax.axhline(0, color="0.7", linewidth=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Spearman |scores|, trained vs randomised")
    ax.set_title(f"Cascading model randomisation ({n_texts} texts): layers re-initialised from the top", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
