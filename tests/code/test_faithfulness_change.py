"""The interval on a change of faithfulness between two sets of texts (``gain_change``)."""

from __future__ import annotations

import numpy as np
import pytest

from glasswork.explain.faithfulness import GAINS, gain_change


def _gains(rng, n: int, shift: float = 0.0) -> dict[str, list[float]]:
    # Per-text gains spread like the default run's (means ~0.2-0.3, a spread of ~0.2, a long tail).
    return {
        "comprehensiveness_gain": list(0.3 + shift + 0.15 * rng.standard_t(5, n)),
        "sufficiency_gain": list(0.2 + 0.15 * rng.standard_t(5, n)),
    }


def test_two_samples_of_the_same_texts_are_flagged_at_about_the_chosen_rate():
    rng, alpha, trials = np.random.default_rng(0), 0.05, 2000
    flagged = 0
    for _ in range(trials):
        change = gain_change(_gains(rng, 64), _gains(rng, 64), alpha)
        flagged += any(change[k]["verdict"] != "unchanged" for k in GAINS)
    # Bonferroni over the two gains: at most alpha in all, a little less as the t tails are heavy.
    assert 0.5 * alpha * trials <= flagged <= 1.3 * alpha * trials


def test_a_gain_that_falls_is_lower_and_the_other_unchanged():
    rng = np.random.default_rng(1)
    change = gain_change(_gains(rng, 64), _gains(rng, 64, shift=-0.25), 0.01)
    fell = change["comprehensiveness_gain"]
    assert fell["verdict"] == "lower" and fell["ci_high"] < 0 and fell["p_value"] < 0.005
    assert fell["ci_low"] < fell["difference"] < fell["ci_high"] and fell["confidence"] == 0.995
    assert change["sufficiency_gain"]["verdict"] == "unchanged"
    assert change["sufficiency_gain"]["ci_low"] < 0 < change["sufficiency_gain"]["ci_high"]


def test_no_spread_gives_the_exact_difference_and_one_text_is_not_tested():
    same = {k: [0.1, 0.1, 0.1] for k in GAINS}
    higher = {"comprehensiveness_gain": [0.3, 0.3], "sufficiency_gain": [0.1, 0.1]}
    change = gain_change(same, higher, 0.01)
    assert change["comprehensiveness_gain"]["verdict"] == "higher"
    assert change["comprehensiveness_gain"]["ci_low"] == change["comprehensiveness_gain"]["ci_high"] > 0.19
    assert change["sufficiency_gain"]["verdict"] == "unchanged"
    one = gain_change(same, {k: [0.5] for k in GAINS}, 0.01)
    assert all(one[k]["verdict"] == "not tested: 3 and 1 texts (at least 2 a side)" for k in GAINS)


def _paired(rng, n: int, shift: float = 0.0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    # Two models on the same texts: most of a text's gain is the text's (how hard it is), shared
    # by both; each model adds its own, smaller, part.
    shared = {k: 0.25 + 0.15 * rng.standard_t(5, n) for k in GAINS}
    champion = {k: list(v + 0.05 * rng.standard_normal(n)) for k, v in shared.items()}
    challenger = {k: list(v + 0.05 * rng.standard_normal(n)) for k, v in shared.items()}
    challenger["comprehensiveness_gain"] = [g + shift for g in challenger["comprehensiveness_gain"]]
    return champion, challenger


def test_paired_gains_of_equally_faithful_models_are_flagged_at_about_the_chosen_rate():
    rng, alpha, trials = np.random.default_rng(2), 0.05, 2000
    flagged = sum(
        any(c["verdict"] != "unchanged" for c in gain_change(*_paired(rng, 64), alpha, paired=True).values())
        for _ in range(trials)
    )
    assert 0.5 * alpha * trials <= flagged <= 1.3 * alpha * trials


def test_pairing_finds_a_fall_that_the_two_sample_interval_misses():
    # A fall of 0.04 hides in the texts' spread (0.15) unless each text is compared with itself.
    champion, challenger = _paired(np.random.default_rng(3), 64, shift=-0.04)
    paired = gain_change(champion, challenger, 0.05, paired=True)["comprehensiveness_gain"]
    apart = gain_change(champion, challenger, 0.05)["comprehensiveness_gain"]
    assert paired["verdict"] == "lower" and paired["ci_high"] < 0
    assert apart["verdict"] == "unchanged" and apart["ci_low"] < 0 < apart["ci_high"]
    assert paired["difference"] == pytest.approx(apart["difference"])
    assert paired["ci_high"] - paired["ci_low"] < (apart["ci_high"] - apart["ci_low"]) / 2


def test_paired_gains_need_the_same_texts_and_the_same_model_is_exactly_unchanged():
    same = {k: [0.1, 0.4, 0.2] for k in GAINS}
    exact = gain_change(same, same, 0.05, paired=True)
    assert all(c["verdict"] == "unchanged" and c["ci_low"] == c["ci_high"] == 0 for c in exact.values())
    with pytest.raises(ValueError, match="paired gains need the same texts: 3 and 2 values"):
        gain_change(same, {k: [0.1, 0.4] for k in GAINS}, 0.05, paired=True)
