"""Whether a classifier learned anything: its predictions collapsed onto one class, or its
macro-F1 is no better than always answering the majority class.

A run on a small or imbalanced table can end there (26 steps on 816 e-mails predicted "ham" for
every text: accuracy 0.689, the majority share). Its accuracy can still pass a threshold, so the
train step says so, ``evaluate`` flags it and the registry never makes it the champion.
"""

from __future__ import annotations

import numpy as np

ONE_CLASS_SHARE = 0.98  # this share of predictions in one class: the model answers one thing
NEAR_MAJORITY = 0.05  # a macro-F1 at most this far above the majority answer's: nothing learned
ADVICE = (
    "try trainer.class_weights=balanced (imbalanced classes), a longer budget (e.g. trainer.min_steps=300), "
    "or another model.lr"
)


def confusion(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class): rows are the truth."""
    flat = np.asarray(truth, dtype=np.int64) * n_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def macro_f1(counts: np.ndarray) -> float:
    """Macro-F1 over the classes that occur in the truth or the predictions (as scikit-learn's)."""
    tp = np.diag(counts).astype(float)
    support, predicted = counts.sum(1), counts.sum(0)
    seen = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=seen)
    return float(f1[seen].mean()) if seen.any() else 0.0


def majority_macro_f1(support: np.ndarray) -> float:
    """The macro-F1 of always answering the most frequent true class."""
    share = support.max() / max(1, support.sum())
    return float(2 * share / (1 + share) / len(support))


def learned_nothing(counts: np.ndarray, names: list[str]) -> str | None:
    """Why a model with this confusion matrix learned nothing, in words; ``None`` when it did."""
    n = int(counts.sum())
    if n == 0:
        return None
    support, predicted = counts.sum(1), counts.sum(0)
    f1, base = macro_f1(counts), majority_macro_f1(support)
    top = int(predicted.argmax())
    majority = f"always answering the majority class '{names[int(support.argmax())]}' gets {base:.3f}"
    if predicted[top] / n >= ONE_CLASS_SHARE:
        return f"it predicts '{names[top]}' for {predicted[top] / n:.0%} of {n} texts (macro-F1 {f1:.3f}; {majority})"
    if f1 <= base + NEAR_MAJORITY:
        return f"its macro-F1 {f1:.3f} on {n} texts is within {NEAR_MAJORITY} of the majority answer's ({majority})"
    return None
