"""Explanation quality as a model test: on a model that learned a one-word rule, integrated
gradients must beat a random ranking on comprehensiveness and sufficiency."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tests.conftest import learnable_overrides

from glasswork.config import load_config
from glasswork.explain.faithfulness import _perturb, _ranking, faithfulness_figure
from glasswork.steps import get


def test_perturbation_deletes_or_keeps_the_top_tokens_and_never_the_special_ones():
    tokens = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    ranking = _ranking([9.0, 0.1, 0.9, 0.5, -1.0, 9.0], tokens)
    assert ranking.tolist() == [2, 3, 1, 4]
    ids = [[101, 1, 2, 3, 4, 102]]
    assert _perturb(ids, [ranking], 0.5, keep_top=False) == [[101, 1, 4, 102]]
    assert _perturb(ids, [ranking], 0.5, keep_top=True) == [[101, 2, 3, 102]]


def test_faithfulness_reports_erasers_five_bins_against_five_random_rankings_per_text(monkeypatch):
    from tests.model.test_explain_baselines import roberta_tokenizer, tiny_roberta

    from glasswork.explain import faithfulness as faith
    from glasswork.explain.attributions import TokenAttribution

    cfg = load_config([])
    assert list(cfg.explain.fractions) == list(faith.ERASER_BINS) == [0.01, 0.05, 0.1, 0.2, 0.5]
    tok = roberta_tokenizer()
    model = tiny_roberta(len(tok))
    tokens = tok.convert_ids_to_tokens(tok("a fine film great bad movie plot dull")["input_ids"])
    items = [TokenAttribution("", tokens, [0, 8, 7, 6, 5, 4, 3, 2, 1, 0], 0, 0.6, 0, 0.0, False)]
    passes = []
    real = faith._probabilities

    def count(model, tokenizer, ids, targets, chunk=64):
        passes.append([len(s) for s in ids])
        return real(model, tokenizer, ids, targets, chunk)

    monkeypatch.setattr(faith, "_probabilities", count)
    metrics = faith.measure(model, tok, items, cfg)
    assert {k.removeprefix("comprehensiveness_top") for k in metrics if k.startswith("comprehensiveness_top")} == {
        "0.01", "0.05", "0.1", "0.2", "0.5"
    }  # fmt: skip
    # The text itself twice (once with its ranking, once with the random ones), then each of the 5
    # bins deleted and kept alone: once for the ranking and once for each of 5 random rankings.
    assert len(passes) == 2 + 2 * 5 + 2 * 5 * 5
    # Another method on the same texts shares the random rankings: only its own ranking is new.
    chance = faith.chance_by_text(model, tok, items, cfg.explain.fractions, n_random=5, seed=cfg.seed)
    passes.clear()
    other = faith.measure(model, tok, [replace(items[0], scores=[0.0] * 10)], cfg, chance)
    assert len(passes) == 1 + 2 * 5
    assert other["random_comprehensiveness_aopc"] == metrics["random_comprehensiveness_aopc"]


def test_the_faithfulness_figure_draws_each_method_beside_its_random_ranking():
    fractions = [0.1, 0.5]
    metrics = {}
    for k, method in enumerate(("integrated_gradients", "kernel_shap")):
        for name in ("comprehensiveness", "sufficiency"):
            for prefix, base in (("", 0.3 + k), ("random_", 0.1 + k)):
                for f in fractions:
                    metrics[f"{method}/{prefix}{name}_top{f:g}"] = base + f
                metrics[f"{method}/{prefix}{name}_aopc"] = base + 0.3
    fig = faithfulness_figure(metrics, ["integrated_gradients", "kernel_shap"], fractions)
    left, right = fig.axes
    solid = [line for line in left.lines if line.get_linestyle() == "-" and line.get_marker() == "o"]
    dashed = [line for line in left.lines if line.get_linestyle() == "--"]
    assert np.allclose([line.get_xdata() for line in solid], [[10, 50]] * 2)
    assert np.allclose([line.get_ydata() for line in solid], [[0.4, 0.8], [1.4, 1.8]])
    assert np.allclose([line.get_ydata() for line in dashed], [[0.2, 0.6], [1.2, 1.6]])
    assert solid[0].get_color() == dashed[0].get_color() != solid[1].get_color()  # a method and its chance
    assert "sufficiency" in right.get_title() and len(right.lines) == 5  # 2 methods x 2 lines + the zero line
    assert [t.get_text() for t in left.get_legend().get_texts()][0] == "integrated_gradients: AOPC 0.600 (random 0.400)"


@pytest.mark.slow  # trains the tiny model until it learns the rule
def test_integrated_gradients_beats_random_on_a_model_that_learned_the_rule(tmp_path):
    cfg = load_config(
        learnable_overrides(tmp_path, "explain.n_probe=12", "explain.n_steps=20", "trainer.max_epochs=15")
    )
    for name in ("prepare", "train", "evaluate"):
        get(name).function()(cfg)
    metrics = get("explain").function()(cfg)
    assert metrics["probe_accuracy"] >= 0.9
    ig = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("integrated_gradients/")}
    # The tiny model is not very confident (p ~ 0.6-0.7), so the gaps are small in absolute terms:
    # compare with the random ranking, not with a fixed number.
    assert ig["comprehensiveness_aopc"] > 1.3 * ig["random_comprehensiveness_aopc"], ig
    assert ig["sufficiency_aopc"] < ig["random_sufficiency_aopc"], ig
    # Adebayo et al.'s check: a randomly re-initialised model must not get the same ranking.
    assert ig["randomisation_passed"] == 1.0, ig["randomisation_spearman"]
    # The model-agnostic method, which never looks inside the model, must find the rule too.
    shap = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("kernel_shap/")}
    assert shap["comprehensiveness_aopc"] > 1.3 * shap["random_comprehensiveness_aopc"], shap
    assert np.isfinite(metrics["integrated_gradients/random_comprehensiveness_aopc"])
    # The global view (fewer steps, more texts) is faithful too: the drift step's reference.
    assert metrics["global/comprehensiveness_gain"] > 0 and metrics["global/sufficiency_gain"] > 0, metrics


@pytest.mark.slow  # trained_tiny_root: the whole tiny pipeline, once a worker
def test_a_model_whose_attention_cannot_be_read_gets_a_clear_error(trained_tiny_root):
    import pytest

    from glasswork.errors import ConfigError
    from glasswork.explain.attention import attention_rollout
    from glasswork.models.backbone import load_tokenizer, load_trained

    path = trained_tiny_root / "artifacts" / "train" / "model"
    fused = load_trained(path, attn_implementation="sdpa")
    with pytest.raises(ConfigError, match="no attention weights.*eager"):
        attention_rollout(fused, load_tokenizer(path), ["a fine film"], [1], max_length=32)
    eager = attention_rollout(
        load_trained(path, attn_implementation="eager"), load_tokenizer(path), ["a fine film"], [1], max_length=32
    )
    assert eager[0].tokens[0] == "[CLS]" and sum(eager[0].scores) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow  # trained_tiny_root: the whole tiny pipeline, once a worker
def test_kernel_shap_on_a_small_token_budget_takes_the_same_coalitions_in_more_passes(trained_tiny_root):
    from glasswork.explain.model_agnostic import kernel_shap
    from glasswork.models.backbone import load_tokenizer, load_trained

    path = trained_tiny_root / "artifacts" / "train" / "model"
    model, tokenizer = load_trained(path), load_tokenizer(path)
    texts = ["a fine film with a weak and tedious ending", "the cast is wonderful"]
    calls = []
    original = model.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.forward = counted
    one_pass = kernel_shap(model, tokenizer, texts, [0, 1], max_length=32, n_samples=24, seed=0, token_budget=10_000)
    whole = list(calls)
    calls.clear()
    small = kernel_shap(model, tokenizer, texts, [0, 1], max_length=32, n_samples=24, seed=0, token_budget=48)
    widths = [len(ids) for ids in tokenizer(texts)["input_ids"]]  # 12 and 6 tokens: 4 and 8 a pass
    assert max(calls) == max(48 // w for w in widths) < max(whole) and len(calls) > len(whole)
    for a, b in zip(one_pass, small, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.slow  # trained_tiny_root: the whole tiny pipeline, once a worker
def test_integrated_gradients_keep_each_pass_within_the_token_budget_and_halve_on_out_of_memory(trained_tiny_root):
    from glasswork.explain.attributions import integrated_gradients
    from glasswork.models.backbone import load_tokenizer, load_trained

    path = trained_tiny_root / "artifacts" / "train" / "model"
    model, tokenizer = load_trained(path), load_tokenizer(path)
    texts = [f"a fine film number {i} with a tedious ending" for i in range(6)]  # 12 tokens each
    calls = []
    original = model.forward

    def counted(*args, **kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.requires_grad:  # a pass of interpolated examples
            calls.append(embeds.shape[0])
            if embeds.shape[0] > limit:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    model.forward = counted
    limit = 10_000
    whole = integrated_gradients(model, tokenizer, texts, [0] * 6, max_length=32, n_steps=8, token_budget=10_000)
    calls.clear()
    # 48 tokens a pass: 4 interpolated examples of 12 tokens, so 4 texts a call, not Captum's 6.
    small = integrated_gradients(model, tokenizer, texts, [0] * 6, max_length=32, n_steps=8, token_budget=48)
    assert max(calls) == 4
    calls.clear()
    limit = 2  # a device that holds 2 examples a pass: 4 fail, halved to 2, the texts split in twos
    halved = integrated_gradients(model, tokenizer, texts, [0] * 6, max_length=32, n_steps=8, token_budget=48)
    # Each call of 4 texts meets the limit once (the halving is not carried to the next call).
    assert calls.count(4) == 2 and set(calls) == {4, 2}
    for a, b, c in zip(whole, small, halved, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.scores, c.scores, atol=1e-5)
