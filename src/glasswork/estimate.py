"""Accuracy without labels: confidence-based performance estimation, calibrated per class as
NannyML's CBPE does (https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html).

On labelled data the estimate is never judged on (the validation split, scored by the evaluate
step), one isotonic regression per class maps the model's probability of that class to the
chance that the text is of that class (one class against the rest; two classes need one map).
On a new batch without labels, the mean calibrated chance of each row's predicted class
estimates the batch's accuracy.

Per class, not pooled: a single map from the top probability to "right" averages the classes'
calibration curves in the validation split's class mix, so when a batch holds another mix (more
of the class the model is over-confident on) the pooled estimate is off by the difference; per
class, each prediction is calibrated with its own class's curve. Under concept drift (the same
text, another right answer) no label-free method can see the change, which is why the report
shows estimate and truth side by side whenever labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression


@dataclass
class Calibration:
    """Per class index, the isotonic map from its predicted probability to the chance of being it."""

    n_classes: int
    maps: dict[int, IsotonicRegression]


def fit_calibration(probs: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit the per-class maps on labelled predictions (``probs``: rows of class probabilities;
    ``labels``: the true class indices)."""
    n_classes = probs.shape[1]
    # Two classes: the map of the second class decides both, as CBPE calibrates binary models.
    classes = [1] if n_classes == 2 else range(n_classes)
    maps = {
        k: IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, k], (labels == k).astype(float))
        for k in classes
    }
    return Calibration(n_classes, maps)


def calibrated_probs(calibration: Calibration, probs: np.ndarray) -> np.ndarray:
    """The calibrated class probabilities of each row (rows sum to 1)."""
    if calibration.n_classes == 2:
        positive = calibration.maps[1].predict(probs[:, 1])
        return np.column_stack([1 - positive, positive])
    chances = np.column_stack([calibration.maps[k].predict(probs[:, k]) for k in range(calibration.n_classes)])
    total = chances.sum(axis=1, keepdims=True)
    # One-vs-rest chances need not sum to 1; a row whose every map says 0 knows nothing.
    return np.divide(chances, total, out=np.full_like(chances, 1 / calibration.n_classes), where=total > 0)


def estimated_accuracy(calibration: Calibration, probs: np.ndarray) -> float:
    """Expected accuracy of the predictions (the top class of each row of ``probs``)."""
    if not len(probs):
        return float("nan")
    chances = calibrated_probs(calibration, probs)
    return float(chances[np.arange(len(probs)), probs.argmax(axis=1)].mean())
