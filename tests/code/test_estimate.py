"""Confidence-based accuracy estimation recovers the accuracy of a batch it has no labels for."""

from __future__ import annotations

import numpy as np

from glasswork.estimate import estimated_accuracy, fit_calibration


def _batch(rng, n, low, high, overconfidence=0.0):
    """Predictions whose true chance of being right is ``confidence - overconfidence``."""
    confidence = rng.uniform(low, high, n)
    correct = rng.uniform(0, 1, n) < confidence - overconfidence
    return confidence, correct


def test_the_estimate_tracks_accuracy_when_the_confidence_mix_shifts():
    rng = np.random.default_rng(0)
    # An over-confident model: calibration on labelled reference data corrects it.
    calibration = fit_calibration(*_batch(rng, 5000, 0.5, 1.0, overconfidence=0.1))
    for low, high in ((0.5, 0.7), (0.8, 1.0), (0.5, 1.0)):
        confidence, correct = _batch(rng, 4000, low, high, overconfidence=0.1)
        estimate = estimated_accuracy(calibration, confidence)
        assert abs(estimate - correct.mean()) < 0.03, (low, high, estimate, correct.mean())
        # The raw confidence alone would be off by the over-confidence.
        assert abs(confidence.mean() - correct.mean()) > 0.07


def test_an_empty_batch_has_no_estimate():
    calibration = fit_calibration(np.array([0.6, 0.9]), np.array([0, 1]))
    assert np.isnan(estimated_accuracy(calibration, np.array([])))
