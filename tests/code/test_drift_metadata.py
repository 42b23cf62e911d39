"""Metadata columns (``data.slice_columns``) as drift signals: which are tested, in which type,
and that a shift in them is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tests.conftest import learnable_rows, minilm_tokenizer, tiny_overrides

from glasswork.config import load_config
from glasswork.drift import View, compare, drift_metadata, with_metadata
from glasswork.text_descriptors import text_descriptors


def _split(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "text": [text for text, _ in learnable_rows(n, seed)],
            "label": np.arange(n) % 2,
            "source": pd.array(rng.choice(["web", "print"], n), dtype="string"),
            "stars": rng.integers(1, 6, n).astype(float),
            "published": pd.date_range("2024-01-01", periods=n, freq="D"),
        }
    )


def _view(frame: pd.DataFrame, seed: int) -> View:
    """What ``describe`` gives, without a model: descriptors, random embeddings and probabilities."""
    tokenizer = minilm_tokenizer()
    rng = np.random.default_rng(seed)
    described = text_descriptors(frame["text"].tolist(), tokenizer)
    described.insert(0, "text", frame["text"].tolist())
    probs = rng.dirichlet([2, 2], len(frame))
    described["predicted_probability"] = probs[:, 1]
    return View(described, rng.normal(size=(len(frame), 8)), probs)


def test_numbers_and_categories_are_tested_dates_and_absent_columns_are_not():
    split = _split(60, 0)
    batch = pd.DataFrame({"text": ["a", "b"], "source": ["web", None], "stars": ["4", "x"], "lang": ["en", "de"]})
    assert drift_metadata(split, batch) == ["source", "stars"]  # no dates; "lang" is not the split's
    assert drift_metadata(split, batch.assign(source=None)) == ["stars"]  # all missing: nothing to test
    assert drift_metadata(split, batch.assign(stars=["five", " "])) == ["source"]  # no number in it
    assert drift_metadata(split.assign(source=pd.NA), batch) == ["stars"]  # never filled in training
    view = with_metadata(_view(batch, 0), batch, ["source", "stars"], split)
    assert view.frame["meta:source"].tolist() == ["web", "(missing)"]
    assert view.frame["meta:stars"].dtype == float and np.isnan(view.frame["meta:stars"][1])  # CSV text read back


def test_a_shift_in_a_metadata_column_is_a_drifted_signal(tmp_path):
    fast = ("drift.text_method=abs_text_content_drift", "drift.embeddings_plot=false")
    cfg = load_config(tiny_overrides(tmp_path, *fast))
    reference, same, shifted = _split(200, 1), _split(200, 2), _split(200, 3)
    shifted["source"] = "blog"  # every row of the new batch from a source never seen, and only 5 stars
    shifted["stars"] = 5.0
    columns = drift_metadata(reference, shifted)
    base = with_metadata(_view(reference, 1), reference, columns, reference)
    calm = compare(base, with_metadata(_view(same, 2), same, columns, reference), cfg)
    moved = compare(base, with_metadata(_view(shifted, 3), shifted, columns, reference), cfg)
    assert {"meta:source", "meta:stars"} <= set(moved.columns) and "meta:published" not in moved.columns
    assert moved.columns["meta:source"]["drifted"] and moved.columns["meta:stars"]["drifted"]
    assert not calm.columns["meta:source"]["drifted"] and not calm.columns["meta:stars"]["drifted"]


def test_accuracy_is_estimated_per_metadata_slice_beside_the_test_split_and_the_truth():
    from glasswork.drift import metadata_slices, performance_estimate

    # The test split (and, here, the validation split the estimate is calibrated on): every text
    # predicted "a"; confident predictions (0.9) are right, unsure ones (0.6) right half the time.
    confident = np.array([0.9] * 40 + [0.6] * 40)
    right = np.array([True] * 40 + [True, False] * 20)
    predictions = pd.DataFrame(
        {"actual": np.where(right, "a", "b"), "predicted": "a", "prob_a": confident, "prob_b": 1 - confident}
    )
    test = pd.DataFrame({"source": ["web"] * 40 + ["print"] * 40})  # web: all right; print: half
    batch = pd.DataFrame({"source": ["web"] * 10 + ["print"] * 10 + [None] * 5})
    probs = np.column_stack([np.r_[[0.9] * 10, [0.6] * 15], 1 - np.r_[[0.9] * 10, [0.6] * 15]])
    labels = np.r_[[0] * 10, [1] * 10, [-1] * 5]  # the print rows all wrong; the last 5 unlabelled
    slices = metadata_slices(batch, ["source"], test), metadata_slices(test, ["source"], test)
    result = performance_estimate(predictions, predictions, probs, labels, *slices)
    rows = {row["slice"]: row for row in result["slices"]}
    assert set(rows) == {"source = web", "source = print", "source missing"}
    assert rows["source = web"] == {
        "slice": "source = web", "n": 10, "estimated_accuracy": 1.0, "test_accuracy": 1.0, "actual_accuracy": 1.0
    }  # fmt: skip
    assert rows["source = print"]["estimated_accuracy"] == 0.5 and rows["source = print"]["test_accuracy"] == 0.5
    assert rows["source = print"]["actual_accuracy"] == 0.0  # the truth, where the estimate cannot see
    assert rows["source missing"]["n"] == 5 and set(rows["source missing"]) == {"slice", "n", "estimated_accuracy"}


def test_a_numeric_column_is_sliced_at_the_test_splits_tertiles_in_the_batch():
    from glasswork.drift import metadata_slices, performance_estimate

    test = pd.DataFrame({"year": np.arange(1991, 2021)})  # 30 years: cut at 2000 and 2010
    right = np.arange(30) < 20  # the last tertile is all wrong on the test split
    predictions = pd.DataFrame({"actual": np.where(right, "a", "b"), "predicted": "a", "prob_a": 0.8, "prob_b": 0.2})
    batch = pd.DataFrame({"year": [1995, 2005, 2022, 2023, 2024, 2025]})  # mostly later than any test year
    probs = np.tile([0.8, 0.2], (6, 1))
    slices = metadata_slices(batch, ["year"], test), metadata_slices(test, ["year"], test)
    rows = {row["slice"]: row for row in performance_estimate(predictions, predictions, probs, None, *slices)["slices"]}
    assert set(rows) == {"year ≤ 2000", "2000 < year ≤ 2010", "year > 2010"}
    assert rows["year > 2010"]["n"] == 4 and rows["year > 2010"]["test_accuracy"] == 0.0
    assert rows["year ≤ 2000"]["test_accuracy"] == rows["2000 < year ≤ 2010"]["test_accuracy"] == 1.0


def test_the_reference_confidence_is_the_validation_splits_not_the_training_rows():
    from glasswork.comparison import held_out_confidence

    # A model is surer of rows it learned: the prediction-drift signal's reference is drawn from
    # the validation predictions (binary: the positive class's probability; more classes: the top).
    validation = pd.DataFrame(
        {"actual": ["a", "b", "c"] * 10, "prob_a": [0.2] * 30, "prob_b": [0.5] * 30, "prob_c": [0.3] * 30}
    )
    assert set(held_out_confidence(validation, 50, seed=0)) == {0.5}  # more rows than it has: drawn again
    binary = pd.DataFrame({"actual": ["x", "y"] * 20, "prob_x": np.linspace(0.1, 0.9, 40)})
    binary["prob_y"] = 1 - binary["prob_x"]
    drawn = held_out_confidence(binary, 20, seed=1)
    assert len(drawn) == 20 and set(drawn) <= set(binary["prob_y"]) and len(set(drawn)) == 20
