"""Explanations of a table classifier, column by column, and how faithful they are.

Three methods, each through Captum, each one score per **column** of the user's table (not per
position of the model's input: a categorical column is a one-hot block of positions), for the
probability of the class explained:

- ``integrated_gradients``: gradients integrated along the straight path from a baseline row to
  the input (Sundararajan et al. 2017), each column's block summed back to the column;
- ``kernel_shap``: Kernel SHAP (Lundberg & Lee 2017) with each column's block one player, the
  absent ones set to the baseline's;
- ``feature_ablation``: the fall in the probability when one column's block is set to the
  baseline's.

The baseline is :meth:`~glasswork.data.tabular.Preprocessor.fill_row`: every numeric column at
its training mean, every categorical one at its most frequent training category. So "absent"
means "typical", and a row already typical in a column scores 0 there under every method.

**Faithfulness** is ERASER's comprehensiveness and sufficiency (:mod:`.faithfulness`) with
columns in the place of tokens: comprehensiveness(k) is the fall in the predicted class's
probability when the top ``k`` fraction of the columns (at least one) is set to the baseline's
values, sufficiency(k) the fall when only they keep the row's values. Both against ``n_random``
random orders of the columns, with the same AOPC and gains as for text and images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from glasswork.data.tabular import OTHER, Preprocessor
from glasswork.explain.faithfulness import SUMMARY, _aggregate, gains_by_text
from glasswork.explain.model_agnostic import coalitions

METHODS = ("integrated_gradients", "kernel_shap", "feature_ablation")


class Probabilities(torch.nn.Module):
    """The classes' probabilities of a network that returns logits: what every method explains
    and what faithfulness measures. It wraps the network, so a randomised copy of the network
    explains through it the same way."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(features).float(), -1)


def column_mask(pre: Preprocessor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Captum's feature mask (1 x width): each input position's column number, in ``pre.columns`` order."""
    mask = torch.zeros(1, pre.width, dtype=torch.long, device=device)
    for i, block in enumerate(pre.blocks.values()):
        mask[0, block] = i
    return mask


def column_sums(scores: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``(N, width)`` position scores summed per column: ``(N, columns)``."""
    n_columns = int(mask.max()) + 1
    out = torch.zeros(scores.shape[0], n_columns, dtype=torch.float64, device=scores.device)
    out.index_add_(1, mask[0], scores.detach().double())
    return out.cpu().numpy()


def explain_columns(
    net: torch.nn.Module,
    features: torch.Tensor,
    fill: torch.Tensor,
    mask: torch.Tensor,
    targets: Sequence[int],
    methods: Sequence[str],
    *,
    n_steps: int = 32,
    shap_samples: int = 64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``{method: scores}``, each ``(N, columns)``, for preprocessed rows ``features`` ``(N, width)``,
    the baseline row ``fill`` ``(width,)``, the column of each position (``mask``, 1 x width) and
    the class whose probability each row's scores explain."""
    from captum.attr import FeatureAblation, IntegratedGradients

    model = Probabilities(net.eval())
    target = torch.as_tensor(list(targets), device=features.device)
    baseline = fill.to(features.device).expand_as(features).contiguous()
    out: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "integrated_gradients":
            scores = IntegratedGradients(model).attribute(features, baselines=baseline, target=target, n_steps=n_steps)
            out[method] = column_sums(scores, mask)
        elif method == "feature_ablation":
            scores = FeatureAblation(model).attribute(features, baselines=baseline, target=target, feature_mask=mask)
            out[method] = column_sums(scores, mask) / _block_sizes(mask)  # each position holds its column's score
        elif method == "kernel_shap":
            out[method] = _kernel_shap(model, features, baseline, mask, target, shap_samples, seed)
        else:
            raise ValueError(f"unknown table explanation method {method!r}; valid: {list(METHODS)}")
    return out


def _block_sizes(mask: torch.Tensor) -> np.ndarray:
    return np.bincount(mask[0].cpu().numpy()).astype(np.float64)


def _kernel_shap(model, features, baseline, mask, target, shap_samples: int, seed: int) -> np.ndarray:
    """Kernel SHAP per row (one regression each), the coalitions drawn from ``seed``."""
    from captum.attr import KernelShap

    n_columns = int(mask.max()) + 1
    n_samples = coalitions(n_columns, shap_samples)
    explainer = KernelShap(model)
    rows = []
    # Captum draws the coalitions from torch's global generator: seeded here, and left as it was
    # (the randomisation check re-initialises layers from that generator between explanations).
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in range(len(features)):
            scores = explainer.attribute(
                features[i : i + 1], baselines=baseline[i : i + 1], target=int(target[i]), feature_mask=mask,
                n_samples=n_samples, perturbations_per_eval=n_samples, return_input_shape=False,
            )  # fmt: skip
            rows.append(scores.detach().double().reshape(-1)[:n_columns].cpu().numpy())
    return np.stack(rows) if rows else np.zeros((0, n_columns))


def _column_positions(mask: torch.Tensor) -> torch.Tensor:
    """``(columns, width)`` booleans: which input positions each column covers."""
    n_columns = int(mask.max()) + 1
    return mask[0][None, :] == torch.arange(n_columns, device=mask.device)[:, None]


@torch.inference_mode()
def probabilities(net: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """The probability of each row's target class."""
    out = []
    model = Probabilities(net.eval())
    for start in range(0, len(features), batch):
        probs = model(features[start : start + batch])
        out.append(probs.gather(1, targets[start : start + batch, None])[:, 0])
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def _by_row(
    net: torch.nn.Module,
    features: torch.Tensor,
    fill: torch.Tensor,
    mask: torch.Tensor,
    targets: Sequence[int],
    explained: dict[str, np.ndarray],
    fractions: Sequence[float],
    n_random: int,
    seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per method and per row, the fall of the target's probability with the top-ranked columns
    set to the baseline's values (comprehensiveness) or alone kept (sufficiency), at each
    fraction; and the same for ``n_random`` random orders (the chance level, shared by the methods)."""
    positions = _column_positions(mask)
    n_columns = len(positions)
    target = torch.as_tensor(list(targets), device=features.device)
    baseline = fill.to(features.device).expand_as(features)
    full = probabilities(net, features, target)
    rng = np.random.default_rng(seed)
    random_orders = [np.stack([rng.permutation(n_columns) for _ in range(len(features))]) for _ in range(n_random)]

    def drops(orders: list[np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for name, keep_top in (("comprehensiveness", False), ("sufficiency", True)):
            for fraction in fractions:
                k = max(1, math.ceil(fraction * n_columns))
                per_order = []
                for order in orders:
                    covered = positions[torch.as_tensor(order[:, :k], device=features.device)].any(1)  # (N, width)
                    replaced = ~covered if keep_top else covered
                    per_order.append(full - probabilities(net, torch.where(replaced, baseline, features), target))
                found[f"{prefix}{name}_top{fraction:g}"] = np.mean(per_order, axis=0)
        return found

    chance = drops(random_orders, "random_")
    methods = {method: drops([np.argsort(-scores, axis=1, kind="stable")], "") for method, scores in explained.items()}
    return methods, chance


def faithfulness_columns(
    net: torch.nn.Module,
    features: torch.Tensor,
    fill: torch.Tensor,
    mask: torch.Tensor,
    targets: Sequence[int],
    explained: dict[str, np.ndarray],
    fractions: Sequence[float],
    *,
    n_random: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Per method ``<method>/comprehensiveness_aopc``, ``…/sufficiency_aopc``, their random-order
    twins and gains, and one value per fraction, as the text and image steps report them."""
    methods, chance = _by_row(net, features, fill, mask, targets, explained, fractions, n_random, seed)
    metrics: dict[str, float] = {}
    for method, curves in methods.items():
        metrics |= {f"{method}/{k}": v for k, v in _aggregate(curves | chance, list(fractions)).items()}
    return metrics


def gains_by_row(
    net: torch.nn.Module,
    features: torch.Tensor,
    fill: torch.Tensor,
    mask: torch.Tensor,
    targets: Sequence[int],
    scores: np.ndarray,
    fractions: Sequence[float],
    *,
    n_random: int = 5,
    seed: int = 0,
) -> dict:
    """One method's AOPCs and gains over random orders, with each row's gains (``by_text``, for a
    paired interval between two models), as :func:`~.faithfulness.faithfulness_summary` gives them."""
    methods, chance = _by_row(net, features, fill, mask, targets, {"m": scores}, fractions, n_random, seed)
    curves = methods["m"] | chance
    quality, gains = _aggregate(curves, list(fractions)), gains_by_text(curves, list(fractions))
    return {k: quality[k] for k in SUMMARY} | {
        "n_texts": len(features),
        "by_text": {k: [round(float(x), 6) for x in v] for k, v in gains.items()},
    }


def dependence_values(train: pd.DataFrame, pre: Preprocessor, column: str, n_points: int = 21) -> list:
    """The values a column is set to for its dependence curve: its training quantiles (numeric,
    distinct ones), or its training categories (without ``(other)``, which training never shows)."""
    if column in pre.categorical:
        return [c for c in pre.categorical[column] if c != OTHER]
    values = pd.to_numeric(train[column], errors="coerce").dropna().to_numpy(dtype=float)
    if not len(values):
        return [pre.numeric[column]["median"]]
    return sorted({float(v) for v in np.quantile(values, np.linspace(0, 1, n_points))})


def dependence(predict, frame: pd.DataFrame, column: str, values: Sequence) -> np.ndarray:
    """Partial dependence: ``(len(values), classes)``, the mean probability of each class over the
    rows of ``frame`` with ``column`` set to each value in turn and every other column as it is.
    ``predict``: a frame's rows to their probabilities."""
    out = []
    for value in values:
        varied = frame.copy()
        varied[column] = value
        out.append(np.asarray(predict(varied)).mean(0))
    return np.stack(out)


class ColumnExplainer:
    """A predictor's rows as the model's input, explained column by column."""

    def __init__(self, predictor, cfg: DictConfig):
        self.predictor, self.e, self.seed = predictor, cfg.explain, cfg.seed
        self.batch_size = cfg.trainer.eval_batch_size
        self.device = predictor.device
        self.mask = column_mask(predictor.pre, self.device)
        self.fill = torch.from_numpy(predictor.pre.fill_row()).to(self.device)

    def features(self, frame: pd.DataFrame, source: str) -> torch.Tensor:
        return torch.from_numpy(self.predictor.features(frame, source)).to(self.device)

    def probs(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predictor.embed(self.predictor.features(frame), self.batch_size)[1]

    def explain(self, net, x: torch.Tensor, targets, methods, n_steps: int | None = None) -> dict[str, np.ndarray]:
        return explain_columns(net, x, self.fill, self.mask, targets, methods, n_steps=n_steps or self.e.n_steps,
                               shap_samples=self.e.shap_samples, seed=self.seed)  # fmt: skip

    def gains(self, frame: pd.DataFrame, source: str = "the test split") -> dict:
        """Integrated gradients' faithfulness gains on ``frame``'s rows, each row's own."""
        x = self.features(frame, source)
        targets = self.probs(frame).argmax(1).tolist()
        scores = self.explain(self.predictor.net, x, targets, ("integrated_gradients",))["integrated_gradients"]
        return gains_by_row(self.predictor.net, x, self.fill, self.mask, targets, scores, list(self.e.fractions),
                            n_random=self.e.n_random, seed=self.seed)  # fmt: skip
