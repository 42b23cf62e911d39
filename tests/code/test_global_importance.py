"""Global word evidence and explanation drift, on hand-made attributions."""

from __future__ import annotations

import math

from glasswork.explain.attributions import TokenAttribution
from glasswork.explain.global_importance import attribution_mass, class_evidence, mass_shift, top_words


def _item(words: list[str], scores: list[float], predicted: int) -> TokenAttribution:
    return TokenAttribution(
        text=" ".join(words),
        tokens=["[CLS]", *words, "[SEP]"],
        scores=[0.0, *scores, 0.0],
        predicted=predicted,
        probability=0.9,
        label=predicted,
        delta=0.0,
        truncated=False,
    )


def test_a_rare_word_cannot_top_the_list_and_binary_evidence_counts_for_the_other_class():
    items = [_item(["good", "film"], [0.5, 0.0], 1) for _ in range(5)]
    items += [_item(["bad", "film"], [0.4, 0.0], 0) for _ in range(5)]
    items += [_item(["sublime", "film"], [3.0, 0.0], 1)]  # huge, but seen once
    items += [_item(["good", "plot"], [-0.2, 0.1], 0)]  # 'good' spoke against 'rotten' here
    table = class_evidence(items, n_classes=2)
    top = top_words(table, ["rotten", "fresh"], min_count=3, top_k=3)
    assert [r["word"] for r in top["fresh"]][:1] == ["good"]
    assert "sublime" not in {r["word"] for r in top["fresh"]}
    good = next(r for r in top["fresh"] if r["word"] == "good")
    assert good["count"] == 6 and math.isclose(good["mean"], (5 * 0.5 + 0.2) / 6, rel_tol=1e-4)
    assert [r["word"] for r in top["rotten"]] == ["bad"]  # 'film' has no positive evidence
    assert top_words(table, ["rotten", "fresh"], min_count=1, top_k=1)["fresh"][0]["word"] == "sublime"


def test_word_pieces_join_their_word_before_counting():
    item = TokenAttribution("unwatchable", ["[CLS]", "un", "##watch", "##able", "[SEP]"], [0, 0.1, 0.2, 0.3, 0], 0, 0.9,
                            0, 0.0, False)  # fmt: skip
    table = class_evidence([item], n_classes=3)
    assert table["word"].tolist() == ["unwatchable"] and math.isclose(table["total"].iloc[0], 0.6)


def test_attribution_mass_sums_to_one_and_shift_is_zero_for_the_same_batch_and_one_for_disjoint():
    a = [_item(["good", "film"], [0.3, -0.1], 1), _item(["dull"], [0.6], 0)]
    b = [_item(["lol", "omg"], [0.2, 0.2], 1)]
    mass = attribution_mass(a)
    assert math.isclose(sum(mass.values()), 1.0) and math.isclose(mass["dull"], 0.6)
    same = mass_shift(mass, attribution_mass(a))
    assert same["js_distance"] == 0.0 and same["unseen_mass"] == 0.0
    shift = mass_shift(mass, attribution_mass(b), top_k=2)
    assert math.isclose(shift["js_distance"], 1.0) and math.isclose(shift["unseen_mass"], 1.0)
    # Beyond the reference's top words, rare words share one bucket: a change among them alone is no shift.
    rare = {"good": 0.5, "dull": 0.3, "x1": 0.1, "x2": 0.1}
    assert mass_shift(rare, {"good": 0.5, "dull": 0.3, "y1": 0.2}, vocabulary=2)["js_distance"] == 0.0
    assert [m["word"] for m in shift["moved_most"]] == ["dull", "lol"]  # largest |change| first
