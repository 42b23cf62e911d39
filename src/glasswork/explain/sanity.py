"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018, https://arxiv.org/abs/1810.03292).

An explanation that stays the same when the model's weights are replaced by random ones
explains the input, not the model. Re-explain the probe texts with a randomly re-initialised
copy of the model and measure the rank correlation of the absolute token scores: a faithful
method's correlation is low; a value near 1 fails the check.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from glasswork.explain.attributions import TokenAttribution

Explainer = Callable[[torch.nn.Module, int], dict[str, list[TokenAttribution]]]


def randomised_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every layer that can re-initialise itself reset at random."""
    twin = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in twin.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return twin.eval()


def randomisation_check(
    model: torch.nn.Module,
    explain_with: Explainer,
    explained: dict[str, list[TokenAttribution]],
    agreement: Callable[..., float],
    *,
    seed: int,
    max_spearman: float,
    n_texts: int | None = None,
) -> dict[str, float]:
    """Per method: ``randomisation_spearman`` (|scores| of the trained vs a random model) and
    ``randomisation_passed`` (1.0 when that correlation is below ``max_spearman``).

    ``explain_with(net, n)`` explains the first ``n`` probe texts; the check uses ``n_texts`` of
    them (all when None): a correlation near 1 shows on a few texts, and each costs a full
    re-explanation with every method.
    """
    n = len(next(iter(explained.values()))) if n_texts is None else n_texts
    randomised = explain_with(randomised_copy(model, seed), n)
    metrics = {}
    for method, items in explained.items():
        rho = agreement(items[:n], randomised[method], absolute=True)
        metrics[f"{method}/randomisation_spearman"] = rho
        metrics[f"{method}/randomisation_passed"] = float(rho < max_spearman)
    return metrics
