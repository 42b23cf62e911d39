"""The explanation gate: a model whose explanations break a rule is registered, not promoted."""

from __future__ import annotations

import json

import pytest
from tests.conftest import NEGATIVE, POSITIVE, learnable_overrides

from glasswork.config import load_config
from glasswork.explain.gate import _forbidden, whole_words
from glasswork.steps import STEPS

# The gate reads integrated gradients: the other explainers would only cost time here.
CONFIDENT = (
    "trainer.max_epochs=15",
    "explain.n_probe=12",
    "explain.n_steps=16",
    "explain.methods=[integrated_gradients]",
)


def test_word_pieces_are_joined_before_the_forbidden_check():
    words = whole_words(["[CLS]", "paris", "##ian", "charm", "[SEP]"], [0.0, 0.5, 0.2, 0.1, 0.0])
    assert words == [("parisian", 0.7), ("charm", 0.1)]
    explained = {
        "ig": [
            {
                "tokens": ["[CLS]", "paris", "is", "lovely", "[SEP]"],
                "scores": [0, 0.9, 0.0, 0.2, 0],
                "text": "paris is lovely",
            }
        ]
    }
    assert _forbidden(explained, {"paris"}, top_k=1) == [
        "ig relies on forbidden token(s) ['paris'] in 'paris is lovely'"
    ]
    assert _forbidden(explained, {"is"}, top_k=2) == []


def _register_after_all_steps(cfg) -> dict:
    """Every step but drift, which the register gate does not read."""
    out = {}
    for step in STEPS:
        if step.name != "drift":
            out[step.name] = step.function()(cfg)
    return out["register"]


@pytest.mark.slow  # trains and registers models through the pipeline's steps
def test_a_model_relying_on_forbidden_tokens_does_not_take_champion(tmp_path):
    words = ",".join(POSITIVE + NEGATIVE)
    cfg = load_config(learnable_overrides(tmp_path, *CONFIDENT, f"registry.forbidden_tokens=[{words}]"))
    record = _register_after_all_steps(cfg)
    assert not record["promote"] and record["version"] == "1"
    assert any("relies on forbidden token(s)" in r for r in record["reasons"]), record["reasons"]


@pytest.mark.slow  # trains and registers models through the pipeline's steps
def test_a_damaged_challenger_fails_the_faithfulness_gate(tmp_path):
    # Only the explanation rule can block here: no metric thresholds, any score accepted.
    gate = (
        "registry.explain_thresholds={integrated_gradients/comprehensiveness_gain: 0.01}",
        "registry.promote_if.above=-1.0",
        "registry.slice_alpha=null",  # the slice gate would block the damaged model too
    )
    good = _register_after_all_steps(load_config(learnable_overrides(tmp_path, *CONFIDENT, *gate)))
    assert good["promote"], good["reasons"]
    metrics_path = tmp_path / "artifacts" / "explain" / "metrics.json"
    good_gain = json.loads(metrics_path.read_text())["explain"]["integrated_gradients/comprehensiveness_gain"]
    # The damaged challenger: its weights never leave their random start (learning rate 0).
    damaged = _register_after_all_steps(load_config(learnable_overrides(tmp_path, *CONFIDENT, *gate, "model.lr=0.0")))
    assert not damaged["promote"]
    # The explain step compared the challenger with the champion on the same probe texts.
    versus = json.loads((tmp_path / "artifacts" / "explain" / "contrast.json").read_text())
    assert versus["status"] == "compared with champion v1" and versus["n_compared"] == 12
    assert -1 <= versus["rank_correlation"] < 0.9 and versus["moved_most"][0]["count"] >= 1
    # The champion's faithfulness, measured again on the same texts, is what its own run measured;
    # the damaged model's explanations are the less faithful.
    explained = json.loads(metrics_path.read_text())["explain"]
    champion = versus["champion_faithfulness"]["comprehensiveness_gain"]
    assert champion == pytest.approx(good_gain, abs=1e-6)
    assert explained["integrated_gradients/comprehensiveness_gain"] < champion
    assert explained["contrast/comprehensiveness_gain_change"] == pytest.approx(
        explained["integrated_gradients/comprehensiveness_gain"] - champion
    )
    assert any(
        "explain/integrated_gradients/comprehensiveness_gain" in r and "below the required" in r
        for r in damaged["reasons"]
    )
    # On the global view's test texts, both models explained: the paired interval on the change
    # lies below zero, and the faithfulness gate names it among the reasons.
    paired = versus["global_faithfulness"]
    fell = paired["change"]["comprehensiveness_gain"]
    assert (
        paired["n_texts"]
        == json.loads((tmp_path / "artifacts/explain/global_importance.json").read_text())["faithfulness"]["n_texts"]
    )
    assert fell["verdict"] == "lower" and fell["ci_low"] <= fell["difference"] <= fell["ci_high"] < 0
    # Each figure is written at 6 decimals: three roundings of up to 5e-7 apart.
    assert paired["this_model"]["comprehensiveness_gain"] - paired["champion"]["comprehensiveness_gain"] == (
        pytest.approx(fell["difference"], abs=1.5e-6)
    )
    assert explained["contrast/global_comprehensiveness_gain_fell"] == 1.0
    assert explained["contrast/global_comprehensiveness_gain_change"] == pytest.approx(fell["difference"])
    assert any(
        r.startswith("integrated gradients' comprehensiveness gain fell from champion v1's") for r in damaged["reasons"]
    )
    assert good["reasons"] and not any("gain fell" in r for r in good["reasons"])  # no champion then


def _contrast(tmp_path, versus: dict | None):
    folder = tmp_path / "artifacts" / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    if versus is not None:
        (folder / "contrast.json").write_text(json.dumps(versus))


FELL = {"difference": -0.1, "ci_low": -0.15, "ci_high": -0.05, "p_value": 1e-4, "confidence": 0.975, "verdict": "lower"}
HELD = {
    "difference": 0.01,
    "ci_low": -0.02,
    "ci_high": 0.04,
    "p_value": 0.5,
    "confidence": 0.975,
    "verdict": "unchanged",
}


def test_the_faithfulness_gate_reads_the_comparison_with_the_champion_of_now(tmp_path):
    from glasswork.errors import PipelineOrderError
    from glasswork.explain.gate import faithfulness_gate

    cfg = load_config(learnable_overrides(tmp_path))
    paired = {"n_texts": 64, "change": {"comprehensiveness_gain": FELL, "sufficiency_gain": HELD}}
    _contrast(tmp_path, None)
    assert faithfulness_gate(cfg, None) == ([], [])  # no champion: nothing to compare with
    with pytest.raises(PipelineOrderError, match="contrast.json is missing: the faithfulness gate needs"):
        faithfulness_gate(cfg, "1")
    _contrast(tmp_path, {"method": "integrated_gradients", "champion_version": "1", "global_faithfulness": paired})
    (reason,), held = faithfulness_gate(cfg, "1")
    assert reason == (
        "integrated gradients' comprehensiveness gain fell from champion v1's on 64 test examples: "
        "lower, -0.100, 97.5% interval -0.150 to -0.050"
    )
    assert held == []
    # Nothing fell: the gate passes and says on what.
    paired["change"]["comprehensiveness_gain"] = HELD
    _contrast(tmp_path, {"method": "integrated_gradients", "champion_version": "1", "global_faithfulness": paired})
    assert faithfulness_gate(cfg, "1") == (
        [],
        [
            "integrated gradients' faithfulness gains did not fall from champion v1's on 64 test examples "
            "(comprehensiveness unchanged, +0.010, 97.5% interval -0.020 to +0.040; "
            "sufficiency unchanged, +0.010, 97.5% interval -0.020 to +0.040)"
        ],
    )
    # The alias moved to v2 after the explain step compared with v1: it must be compared again.
    (stale,), _ = faithfulness_gate(cfg, "2")
    assert "no paired faithfulness measure against champion v2 (the explain step compared with champion v1)" in stale
    assert "re-run `glasswork explain`" in stale
    _contrast(tmp_path, {"status": "no champion to compare with"})
    (unknown,), _ = faithfulness_gate(cfg, "1")
    assert "against champion v1 (the explain step said 'no champion to compare with')" in unknown
    off = load_config(learnable_overrides(tmp_path, "registry.faithfulness_gate=false"))
    assert faithfulness_gate(off, "1") == ([], [])
