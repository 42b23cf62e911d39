"""Accuracy without labels: confidence-based performance estimation (as NannyML's CBPE does for
tabular models).

On data whose labels are known (the test split scored by the evaluate step), an isotonic
regression maps the model's top-class probability to the chance that the prediction is right.
On a new batch without labels, the mean of those calibrated chances estimates its accuracy. The
estimate is only as good as the calibration: under concept drift (the same text, another right
answer) no label-free method can see the change, which is why the report shows estimate and
truth side by side whenever labels exist.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression


def fit_calibration(confidence: np.ndarray, correct: np.ndarray) -> IsotonicRegression:
    """Top-class probability -> probability that the prediction is right, fitted on labelled data."""
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, correct.astype(float))


def estimated_accuracy(calibration: IsotonicRegression, confidence: np.ndarray) -> float:
    """Expected accuracy of predictions made with these top-class probabilities."""
    return float(np.mean(calibration.predict(confidence))) if len(confidence) else float("nan")
