"""Per-slice test metrics: how the split is cut, when a slice is flagged, what MLflow gets."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from glasswork.slices import (
    MAX_VALUES,
    column_slices,
    compare_slices,
    crossed_slices,
    define_slices,
    holm,
    metric_key,
    slice_log_metrics,
    slice_metrics,
    slices_figure,
)


def _descriptors(words: list[int], oov: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"length_words": words, "oov_share": oov})


def _probs(right: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Two-class probabilities that are right where ``right`` says so (confidence 0.8)."""
    predicted = np.where(right, truth, 1 - truth)
    probs = np.full((len(truth), 2), 0.2)
    probs[np.arange(len(truth)), predicted] = 0.8
    return probs


def test_each_family_cuts_the_whole_split_into_named_tertiles():
    words = list(range(1, 31))  # 30 texts of 1..30 words
    oov = [0.0] * 10 + [0.05] * 10 + [0.5] * 10
    truth = np.array([0, 1] * 15)
    slices = define_slices(_descriptors(words, oov), truth, ["neg", "pos"])
    assert list(slices) == [
        "length 1–10 words",
        "length 11–20 words",
        "length 21–30 words",
        "words split into pieces 0%",
        "words split into pieces 5%",
        "words split into pieces 50%",
        "true class neg",
        "true class pos",
    ]
    for family in ("length", "words", "true"):
        masks = [rows for name, rows in slices.items() if name.startswith(family)]
        assert (np.sum(masks, axis=0) == 1).all(), family  # disjoint and covering


def test_repeated_values_and_absent_classes_give_fewer_slices():
    slices = define_slices(_descriptors([7] * 12, [0.0] * 12), np.zeros(12, int), ["neg", "pos", "neutral"])
    assert list(slices) == ["length 7 words", "words split into pieces 0%", "true class neg"]


def test_a_slice_is_flagged_only_when_it_is_significantly_below_overall():
    n = 300
    truth = np.arange(n) % 2
    right = np.ones(n, bool)
    long_texts = np.arange(n) >= 200
    right[long_texts] = np.arange(100) % 2 == 0  # long texts: 50% right; the rest: all right
    small = np.zeros(n, bool)
    small[[0, 2, 201]] = True  # 3 texts, one wrong: too few to say anything
    result = slice_metrics({"long": long_texts, "short": ~long_texts, "tiny": small}, truth, _probs(right, truth))
    rows = {row["slice"]: row for row in result["slices"]}
    assert result["overall_accuracy"] == right.mean()
    assert rows["long"]["flagged"] and rows["long"]["accuracy"] == 0.5
    assert not rows["short"]["flagged"] and not rows["tiny"]["flagged"]
    for row in rows.values():
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        assert row["gap"] == pytest.approx(row["accuracy"] - result["overall_accuracy"])
        assert row["mean_confidence"] == pytest.approx(0.8)
    assert rows["tiny"]["accuracy_high"] - rows["tiny"]["accuracy_low"] > 0.5  # a wide interval


def test_slice_flags_keep_the_family_wise_error_within_alpha():
    # 12 slices of a model that is equally good everywhere (each text right with chance 0.8): a
    # flag is a false alarm. A flag per slice whose 95% interval lies below overall (the rule
    # before Holm) raised one in 36 of these 100 runs; Holm, in 4.
    rng = np.random.default_rng(0)
    n, k, runs = 600, 12, 100
    truth = np.arange(n) % 2
    slices = {f"s{i}": np.arange(n) % k == i for i in range(k)}
    any_flag = 0
    for _ in range(runs):
        right = rng.uniform(size=n) < 0.8
        result = slice_metrics(slices, truth, _probs(right, truth))
        any_flag += any(row["flagged"] for row in result["slices"])
    assert result["correction"] == "holm" and result["alpha"] == 0.05
    assert any_flag / runs <= 0.08, any_flag  # 0.05 plus sampling slack over 100 runs


def test_holm_adjusts_as_statsmodels_does():
    from statsmodels.stats.multitest import multipletests

    p_values = np.random.default_rng(3).uniform(0, 0.2, 25) ** 2
    assert np.allclose(holm(p_values), multipletests(p_values, method="holm")[1])


def test_holm_flags_a_slice_only_when_its_adjusted_p_value_clears_alpha():
    n = 1000
    truth = np.arange(n) % 2
    right = np.ones(n, bool)
    weak = np.arange(n) < 100
    right[np.flatnonzero(weak)[:30]] = False  # 70% right on its 100 texts; 97% overall
    slices = {"weak": weak, **{f"fine {i}": (np.arange(n) % 9 == i) & ~weak for i in range(9)}}
    rows = {row["slice"]: row for row in slice_metrics(slices, truth, _probs(right, truth))["slices"]}
    assert rows["weak"]["flagged"] and rows["weak"]["p_value"] == pytest.approx(
        binomtest(70, 100, right.mean(), alternative="less").pvalue
    )
    assert rows["weak"]["p_holm"] == pytest.approx(min(1, 10 * rows["weak"]["p_value"]))  # the smallest: x10
    assert not any(rows[f"fine {i}"]["flagged"] for i in range(9))


def test_mlflow_metric_names_are_valid_and_count_the_flagged_slices():
    truth = np.array([0, 1] * 20)
    slices = define_slices(_descriptors(list(range(40)), [0.01 * i for i in range(40)]), truth, ["neg", "pos"])
    result = slice_metrics(slices, truth, _probs(np.ones(40, bool), truth))
    metrics = slice_log_metrics(result)
    assert metrics["test_slice/n_flagged"] == 0.0
    assert "test_slice/length_0-13_words/accuracy" in metrics
    for key in metrics:
        assert re.fullmatch(r"[0-9A-Za-z_./-]+", key), key
    assert len(slices_figure(result).axes[0].patches) == len(result["slices"])


def test_a_slice_regresses_only_on_significantly_more_texts_lost_than_won():
    n = 200
    champion = np.ones(n, bool)
    challenger = np.ones(n, bool)
    short, long_ = np.arange(n) < 100, np.arange(n) >= 100
    challenger[100:120] = False  # long texts: 20 lost, none won
    champion[0:3], challenger[3:6] = False, False  # short texts: 3 won, 3 lost: a wash
    rows = {r["slice"]: r for r in compare_slices({"short": short, "long": long_}, champion, challenger, 0.05)}
    assert (rows["long"]["lost"], rows["long"]["won"]) == (20, 0) and rows["long"]["regressed"]
    assert rows["long"]["p_value"] == 0.5**20  # McNemar's exact one-sided p: all 20 discordant texts lost
    assert rows["long"]["champion_accuracy"] == 1.0 and rows["long"]["accuracy"] == 0.8
    assert (rows["short"]["lost"], rows["short"]["won"]) == (3, 3) and not rows["short"]["regressed"]


def test_the_slice_gate_corrects_for_the_number_of_slices():
    champion, challenger = np.ones(10, bool), np.ones(10, bool)
    challenger[:5] = False  # 5 lost, 0 won: p = 1/32 = 0.031
    one = compare_slices({"all": np.ones(10, bool)}, champion, challenger, 0.05)
    assert one[0]["regressed"]  # 0.031 <= 0.05
    many = compare_slices({f"s{i}": np.ones(10, bool) for i in range(2)}, champion, challenger, 0.05)
    assert not any(r["regressed"] for r in many)  # 0.031 > 0.05 / 2


def test_a_metadata_column_gives_one_slice_per_frequent_value_the_rest_together_and_the_missing():
    values = ["web"] * 30 + ["print"] * 20 + [f"blog {i}" for i in range(MAX_VALUES + 2)] + [None] * 5
    slices = column_slices(pd.Series(values, name="source", dtype="string"))
    assert list(slices)[:2] == ["source = web", "source = print"]  # most frequent first
    assert slices["source = web"].sum() == 30 and slices["source = print"].sum() == 20
    # MAX_VALUES + 4 values: web, print and MAX_VALUES - 2 blogs get a slice each, 4 blogs share one
    assert slices["source: 4 other values"].sum() == 4
    assert slices["source missing"].sum() == 5 and slices["source missing"][-5:].all()
    assert len(slices) == MAX_VALUES + 2
    assert (np.sum(list(slices.values()), axis=0) == 1).all()  # disjoint and covering


def test_numbers_and_dates_with_many_values_are_cut_at_tertiles_and_few_values_are_categories():
    rating = column_slices(pd.Series(np.arange(1.0, 31.0), name="rating"))
    assert list(rating) == ["rating ≤ 10", "10 < rating ≤ 20", "rating > 20", "rating missing"]
    assert [rows.sum() for rows in rating.values()] == [10, 10, 10, 0]
    stars = column_slices(pd.Series([1, 2, 3, 4, 5] * 6, name="stars"))
    assert [name for name in stars if name != "stars missing"] == [f"stars = {k}" for k in (1, 2, 3, 4, 5)]
    days = pd.Series(pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC"), name="published")
    assert list(column_slices(days))[:3] == [
        "published ≤ 2024-01-10",
        "2024-01-10 < published ≤ 2024-01-20",
        "published > 2024-01-20",
    ]
    times = pd.Series(pd.date_range("2024-01-01 08:00", periods=30, freq="h"), name="at")
    assert list(column_slices(times))[0] == "at ≤ 2024-01-01 17:00"
    braces = column_slices(pd.Series(np.arange(30.0), name="score {raw}"))
    assert list(braces)[0] == "score {raw} ≤ 9"  # a column name is not a format string
    halves = column_slices(pd.Series([0.0] * 20 + list(np.arange(1.0, 11.0)), name="score"))
    assert list(halves)[:2] == ["score ≤ 0", "score > 0"]  # both tertiles at 0: two slices
    assert [metric_key(name) for name in halves] == ["score_le_0", "score_gt_0", "score_missing"]
    assert metric_key("2000 < year ≤ 2010") == "2000_lt_year_le_2010"


def test_a_batch_is_cut_where_the_test_split_is_cut_so_its_slices_meet_the_test_splits():
    test = pd.Series(np.arange(1.0, 31.0), name="rating")
    # 45 and 60 lie beyond the test split's values.
    later = pd.Series([5.0, 15.0, 25.0, 45.0, 60.0, 8, 9, 10, 11, 12, np.nan], name="rating")
    slices = column_slices(later, like=test)
    assert list(slices) == list(column_slices(test))  # the same names, whatever the batch's own tertiles
    assert slices["rating ≤ 10"].nonzero()[0].tolist() == [0, 5, 6, 7]
    assert slices["rating > 20"].nonzero()[0].tolist() == [2, 3, 4]
    assert slices["rating missing"].nonzero()[0].tolist() == [10]
    # Few values in the batch, many in the test split: still cut at the test split's tertiles.
    few = column_slices(pd.Series([3.0, 3.0, 29.0], name="rating"), like=test)
    assert [name for name, rows in few.items() if rows.any()] == ["rating ≤ 10", "rating > 20"]


def test_metadata_slices_follow_the_built_in_ones_and_empty_slices_are_dropped():
    truth = np.array([0, 1] * 6)
    metadata = pd.DataFrame({"lang": ["en"] * 8 + ["de"] * 4})
    slices = define_slices(_descriptors([5] * 12, [0.0] * 12), truth, ["neg", "pos"], metadata)
    assert list(slices)[-2:] == ["lang = en", "lang = de"]  # "lang missing" is empty: dropped
    metrics = slice_log_metrics(slice_metrics(slices, truth, _probs(np.ones(12, bool), truth)))
    assert "test_slice/lang_en/accuracy" in metrics


def test_a_crossing_where_two_weaknesses_meet_is_flagged_and_drawn():
    # 400 texts: "long" and "web" are independent halves; right 90% of the time except where
    # they meet (100 texts, right half the time). Each alone is 0.7; together 0.5.
    long_texts, web = np.arange(400) < 200, np.arange(400) % 2 == 0
    right = np.ones(400, bool)
    cells = {50: [long_texts & web], 10: [long_texts & ~web, ~long_texts & web, ~long_texts & ~web]}
    for n_wrong, masks in cells.items():
        for cell in masks:  # 100 texts each
            right[np.flatnonzero(cell)[:n_wrong]] = False
    truth = np.zeros(400, int)
    slices = {"long": long_texts, "short": ~long_texts, "source = web": web, "source = print": ~web}
    result = slice_metrics(slices, truth, _probs(right, truth))
    crossings = result["crossings"]
    assert crossings["n_tested"] == 4  # long & short, web & print are empty
    assert 1 - crossings["confidence_level"] == pytest.approx(0.05 / 4)  # Bonferroni over the pairs tested
    assert [row["slice"] for row in crossings["flagged"]] == ["long & source = web"]
    row = crossings["flagged"][0]
    assert row["n"] == 100 and row["accuracy"] == 0.5 and row["accuracy_high"] < result["overall_accuracy"]
    assert row["parents"] == {"long": 0.7, "source = web": 0.7}
    assert slice_log_metrics(result)["test_slice/n_flagged_crossings"] == 1.0
    bars = slices_figure(result).axes[0].patches
    assert len(bars) == len(result["slices"]) + 1 and bars[0].get_hatch() == "//"  # the crossing, at the bottom


def test_a_part_of_a_weak_slice_is_not_flagged_for_the_slices_own_weakness():
    # "rotten" is weak (0.70 against 0.825 overall); its long half is a little weaker (0.68), its
    # whole interval below overall, but not significantly below "rotten" itself: nothing new.
    rotten, long_texts = np.arange(1000) < 500, np.arange(1000) % 2 == 0
    right = np.ones(1000, bool)
    cells = (
        (rotten & long_texts, 80),
        (rotten & ~long_texts, 70),
        (~rotten & long_texts, 13),
        (~rotten & ~long_texts, 12),
    )
    for cell, n_wrong in cells:  # 250 texts each
        right[np.flatnonzero(cell)[:n_wrong]] = False
    slices = {"rotten": rotten, "fresh": ~rotten, "long": long_texts, "short": ~long_texts}
    overall = float(right.mean())
    assert overall == 0.825 and right[rotten & long_texts].mean() == 0.68 and right[rotten].mean() == 0.70
    result = crossed_slices(slices, right, overall)
    assert result["n_tested"] == 4 and result["flagged"] == []
    level = result["confidence_level"]
    interval = binomtest(170, 250).proportion_ci(confidence_level=level, method="wilson")
    assert interval.high < overall  # below overall alone would have flagged it


def test_crossings_are_not_flagged_by_chance_alone_nor_when_too_small():
    rng = np.random.default_rng(0)
    right = rng.random(1000) > 0.2  # errors at random: no crossing is really worse
    slices = {f"s{i}": rng.random(1000) < 0.3 for i in range(12)}
    # Uncorrected 95% intervals flag one of these 66 crossings by chance; the corrected ones none.
    assert crossed_slices(slices, right, float(right.mean()))["n_flagged"] == 0
    small = {"a": np.arange(200) < 40, "b": np.arange(200) >= 15}  # they meet on 25 texts, all wrong
    wrong = np.ones(200, bool)
    wrong[15:40] = False
    result = crossed_slices(small, wrong, float(wrong.mean()))
    assert result["n_tested"] == 0 and result["flagged"] == []
