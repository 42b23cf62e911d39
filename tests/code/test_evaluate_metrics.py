"""The evaluate step's metrics on hand-made predictions, where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from glasswork.evaluate import classification_metrics


def test_binary_metrics_on_a_known_ranking():
    labels = np.array([0, 0, 1, 1])
    positive = np.array([0.1, 0.6, 0.4, 0.9])  # one positive ranked below one negative
    metrics = classification_metrics(labels, np.stack([1 - positive, positive], axis=1))
    assert metrics["accuracy"] == 0.5 and metrics["roc_auc"] == 0.75
    # Precision at each positive, in rank order: 1/1 (0.9), then 2/3 (0.4) -> (1 + 2/3) / 2.
    assert metrics["average_precision"] == pytest.approx(5 / 6)


def test_multiclass_average_precision_is_the_mean_over_classes():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    metrics = classification_metrics(labels, probs)
    # Each class's own column ranks its texts first (class 2: 0.7 and 0.4 above 0.1, 0.1): AP 1 each.
    assert metrics["average_precision"] == pytest.approx(1.0)
    worse = probs.copy()
    worse[3] = [0.5, 0.45, 0.05]  # class 2's second text now ranks last in its column (0.7, 0.1, 0.1, 0.05)
    # Class 2: precision 1/1 at its first text and 2/4 at its second -> 0.75; the mean over classes:
    assert classification_metrics(labels, worse)["average_precision"] == pytest.approx((1 + 1 + 0.75) / 3)
