"""The challenger against the champion on the same test texts: the paired difference on
``registry.compare_metric`` with a bootstrap interval, and the promotion rule
(``registry.promote_if``) stated on that interval rather than on two point estimates.

Both models are scored on every test text, so the texts are resampled together (a paired
bootstrap): what varies between resamples is which texts the two models disagree on, and the
interval is as narrow as their agreement allows. Percentile interval, seeded with the run's
seed: ``N_BOOTSTRAP`` resamples for accuracy and macro-F1 (counted in a few array operations),
``N_BOOTSTRAP_RANKING`` for ROC-AUC and average precision (scikit-learn's, one resample at a
time: about 20 ms each on two busy CPU cores).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from omegaconf import DictConfig

from glasswork.errors import ConfigError
from glasswork.evaluate import average_precision, roc_auc

N_BOOTSTRAP = 2000
N_BOOTSTRAP_RANKING = 400
BOUNDS = ("lower", "upper")  # registry.promote_if.bound


def check_promote_if(rule: DictConfig) -> None:
    """Refuse a ``registry.promote_if`` that does not state a rule on the interval."""
    if rule.bound not in BOUNDS:
        raise ConfigError(
            f"registry.promote_if.bound={rule.bound!r}: expected 'lower' (the challenger must be shown no worse "
            "than `above`) or 'upper' (it is refused only when shown worse than `above`)"
        )
    above = rule.above
    if isinstance(above, bool) or not isinstance(above, int | float) or not -1 <= above <= 1:
        raise ConfigError(
            f"registry.promote_if.above={above!r}: expected a difference of the compare metric in [-1, 1] "
            "(e.g. -0.02: at most 0.02 worse; 0: better)"
        )
    level = rule.confidence
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.5 <= level < 1:
        raise ConfigError(f"registry.promote_if.confidence={level!r}: expected a level in [0.5, 1), e.g. 0.95")


def rule_words(rule: DictConfig, metric: str) -> str:
    """The promotion rule in one line."""
    level = f"{100 * rule.confidence:g}%"
    if rule.bound == "lower":
        return f"the {level} interval of challenger − champion on test {metric} lies above {rule.above:+g}"
    return f"the {level} interval of challenger − champion on test {metric} does not lie wholly below {rule.above:+g}"


def passes(comparison: dict, rule: DictConfig) -> bool:
    """Whether the interval clears ``rule.above`` at the end ``rule.bound`` names."""
    end = comparison["ci_low"] if rule.bound == "lower" else comparison["ci_high"]
    return bool(end > rule.above)


def paired_difference(
    truth: np.ndarray, mine: np.ndarray, theirs: np.ndarray, metric: str, confidence: float, seed: int
) -> dict:
    """``metric`` of the challenger (``mine``: class probabilities per test text) minus the
    champion's (``theirs``, the same texts in the same order), with its paired bootstrap interval."""
    score = _score(metric)
    n_resamples = N_BOOTSTRAP if metric in ("accuracy", "macro_f1") else N_BOOTSTRAP_RANKING
    rows = np.random.default_rng(seed).integers(0, len(truth), (n_resamples, len(truth)))
    differences = _resampled(metric, truth, mine, rows) - _resampled(metric, truth, theirs, rows)
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(differences, [tail, 100 - tail])
    challenger, champion = score(truth, mine), score(truth, theirs)
    return {
        "metric": metric,
        "challenger": challenger,
        "champion": champion,
        "difference": challenger - champion,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "n_texts": len(truth),
        "method": f"paired percentile bootstrap over the test examples ({n_resamples} resamples)",
    }


def _score(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    scores: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": lambda truth, probs: float(_from_confusion("accuracy", truth, probs, None)[0]),
        "macro_f1": lambda truth, probs: float(_from_confusion("macro_f1", truth, probs, None)[0]),
        "roc_auc": roc_auc,
        "average_precision": average_precision,
    }
    if metric not in scores:
        raise ConfigError(f"registry.compare_metric={metric!r}: expected one of {sorted(scores)}")
    return scores[metric]


def _resampled(metric: str, truth: np.ndarray, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``metric`` on each resample (a row of text indices)."""
    if metric in ("accuracy", "macro_f1"):
        return _from_confusion(metric, truth, probs, rows)
    score = _score(metric)
    values = np.full(len(rows), np.nan)
    for i, chosen in enumerate(rows):
        if len(np.unique(truth[chosen])) > 1:  # a resample of one class has no ranking metric
            values[i] = score(truth[chosen], probs[chosen])
    return values


def _from_confusion(metric: str, truth: np.ndarray, probs: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Accuracy or macro-F1 (over the classes present in truth or prediction, as scikit-learn
    averages) of each resample, from its confusion counts: all resamples in a few array operations."""
    k = probs.shape[1]
    codes = truth * k + probs.argmax(axis=1)
    chosen = codes[None, :] if rows is None else codes[rows]
    offsets = np.arange(len(chosen))[:, None] * k * k
    counts = np.bincount((chosen + offsets).ravel(), minlength=len(chosen) * k * k).reshape(-1, k, k)
    hits = np.diagonal(counts, axis1=1, axis2=2).astype(float)
    if metric == "accuracy":
        return hits.sum(axis=1) / chosen.shape[1]
    denominator = counts.sum(axis=1) + counts.sum(axis=2)  # 2 tp + fp + fn per class
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * hits / denominator, np.nan)
    return np.nanmean(f1, axis=1)
