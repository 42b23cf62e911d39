"""A generative model's explanations (glasswork.explain.generation) on a tiny random Llama: the
batched integrated gradients are Captum's, token by token, and complete (the scores add up to the
log-probability's rise from the baseline); the contrast is the difference of the two answers' and
changes sign with them; word ablation is the fall it says; faithfulness measures what it claims
(nothing falls when everything is kept) and the randomisation check sees a randomised model. The
same on a tiny random T5 (encoder–decoder): the prompt attributed through the encoder, the answer's
earlier tokens through the decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glasswork.explain import generation as gen
from glasswork.explain import generation_quality as quality


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    net = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the init's: logits that depend on the input
        for p in net.parameters():
            p.mul_(4.0 if p.ndim > 1 else 1.0)
    return net


PROMPT = [5, 17, 42, 8, 61, 3, 29, 77, 12]
ANSWER = [33, 9, 50]


def test_batched_integrated_gradients_are_captums_token_by_token_and_complete(model):
    from captum.attr import IntegratedGradients

    found = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=24, baseline=0)
    ids = torch.tensor([PROMPT + ANSWER])
    x = model.get_input_embeddings()(ids).detach()
    base = model.get_input_embeddings()(torch.zeros_like(ids)).detach()  # token 0 at every position
    n = len(PROMPT)
    for j, token in enumerate(ANSWER):

        def logp(embeds, j=j, token=token):
            logits = model(inputs_embeds=embeds).logits
            return torch.log_softmax(logits[:, n - 1 + j].float(), -1)[:, token]

        ref = IntegratedGradients(logp).attribute(x, baselines=base, n_steps=24, method="gausslegendre")
        expected = ref.sum(-1)[0, :-1].detach().double().numpy()
        assert np.allclose(found.scores[j], expected, atol=1e-4), j
        assert np.all(found.scores[j, n + j :] == 0)  # positions the token cannot see
    # Completeness: the scores add up to f(x) - f(baseline), up to the integral's error.
    assert np.abs(found.residuals).max() < 1e-3 * np.abs(found.logprobs - found.baseline_logprobs).max()
    # One row a pass gives the same scores as the budget's batches.
    single = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=24, batch_size=1, baseline=0)
    assert np.allclose(single.scores, found.scores, atol=1e-5)


def test_a_kept_frame_is_attributed_nothing_and_the_rest_still_adds_up(model):
    # The chat template's head and tail stay at their own embeddings: only the user's text moves.
    found = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=24, baseline=0, frame=(2, 1))
    n = len(PROMPT)
    assert np.all(found.scores[:, :2] == 0) and np.all(found.scores[:, n - 1] == 0)
    assert np.abs(found.scores[:, 2 : n - 1]).sum() > 0
    assert np.abs(found.residuals).max() < 1e-3 * np.abs(found.logprobs - found.baseline_logprobs).max()
    contrast = gen.contrastive(model, PROMPT, [33, 9], [40], n_steps=24, baseline=0, frame=(2, 1))
    assert contrast.scores[0] == contrast.scores[1] == contrast.scores[-1] == 0
    with pytest.raises(ValueError, match="frame"):
        gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=4, frame=(6, 6))


def test_the_zero_embedding_baseline_is_not_the_default_for_a_reason(model):
    # Every embedding at zero makes a Llama's output uniform (RMSNorm, no biases), but RMSNorm
    # makes the path jump within its first hundredths: 24 steps leave a large part of the
    # log-probability's rise unaccounted for, where a token baseline leaves almost nothing.
    zero = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=24)
    token = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=24, baseline=0)
    assert np.allclose(zero.baseline_logprobs, -np.log(97), atol=1e-5)
    assert np.abs(zero.residuals).max() > 100 * np.abs(token.residuals).max()


def test_the_contrast_is_the_difference_of_the_two_answers_and_turns_with_them(model):
    a, b = [33, 9], [40]
    ab = gen.contrastive(model, PROMPT, a, b, n_steps=32, baseline=0)
    ba = gen.contrastive(model, PROMPT, b, a, n_steps=32, baseline=0)
    assert np.allclose(ab.scores, -ba.scores, atol=1e-6)
    assert ab.scores.shape == (len(PROMPT),)
    assert ab.logp_a == pytest.approx(gen.answer_logprobs(model, PROMPT, a).sum(), abs=1e-5)
    assert ab.logp_b == pytest.approx(gen.answer_logprobs(model, PROMPT, b).sum(), abs=1e-5)
    assert abs(ab.residual) < 1e-3 * max(1.0, abs(ab.scores).sum())


def test_word_ablation_is_the_fall_of_each_answer_token_when_its_word_goes(model):
    groups = [-1, 0, 0, 1, 2, 2, 2, 3, -1]  # a frame token at each end stays
    scores = gen.feature_ablation(model, PROMPT, ANSWER, groups, neutral_id=0)
    assert scores.shape == (len(ANSWER), len(PROMPT))
    assert np.all(scores[:, 0] == 0) and np.all(scores[:, -1] == 0)
    full = gen.answer_logprobs(model, PROMPT, ANSWER)
    ablated = [0 if g == 2 else t for t, g in zip(PROMPT, groups, strict=True)]
    fall = full - gen.answer_logprobs(model, ablated, ANSWER)
    for i in (4, 5, 6):  # each token of word 2 carries the word's fall
        assert np.allclose(scores[:, i], fall, atol=1e-5)
    assert gen.word_groups(["<|im_start|>", "user", "Ċ", "The", "Ġfilm", "Ġwas", "Ġgreat", ",", "Ġreally"]) == [
        0, 1, 2, 3, 4, 5, 6, 6, 7,
    ]  # fmt: skip


def test_faithfulness_measures_falls_against_random_rankings(model):
    prompts = [PROMPT, PROMPT[::-1], PROMPT[2:]]
    answers = [ANSWER, ANSWER[:2], [50]]
    spans = [(1, len(p) - 1) for p in prompts]
    scores = [quality.prompt_importance(gen.integrated_gradients(model, p, a, n_steps=8, baseline=0).scores, len(p))
              for p, a in zip(prompts, answers, strict=True)]  # fmt: skip
    metrics, texts = quality.faithfulness(model, prompts, answers, scores, [0.3, 1.0], spans=spans, n_random=5, seed=1)
    # Keeping every token of the span is the prompt itself: nothing falls, for any ranking.
    assert np.allclose(texts["sufficiency_top1"], 0, atol=1e-6)
    assert np.allclose(texts["random_sufficiency_top1"], 0, atol=1e-6)
    # Deleting every one falls as far whatever the order.
    assert np.allclose(texts["comprehensiveness_top1"], texts["random_comprehensiveness_top1"], atol=1e-6)
    first = gen.answer_logprobs(model, prompts[0], answers[0]).sum()
    bare = gen.answer_logprobs(model, [prompts[0][0], prompts[0][-1]], answers[0]).sum()
    assert texts["comprehensiveness_top1"][0] == pytest.approx(first - bare, abs=1e-5)
    low, high = metrics["comprehensiveness_gain_ci_low"], metrics["comprehensiveness_gain_ci_high"]
    assert low <= metrics["comprehensiveness_gain"] <= high


def test_the_randomisation_check_sees_a_randomised_model(model):
    prompts, answers = [PROMPT, PROMPT[1:]], [ANSWER, ANSWER[:1]]
    before = gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=4).scores
    metrics, curves = quality.randomisation_check(
        model, prompts, answers, seed=0, max_spearman=0.5, max_stages=2, n_steps=4, baseline=0
    )
    curve = curves["integrated_gradients"]
    assert len(curve) == 2 and all(-1 <= v <= 1 for v in curve.values())
    assert metrics["integrated_gradients/randomisation_spearman_mean"] == pytest.approx(np.mean(list(curve.values())))
    # A kept frame's zeros are no agreement: only the attributed entries are compared.
    trained = [np.array([[0.0, 0.0, 1.0, 2.0, 3.0, 0.0]])]
    shuffled = [np.array([[0.0, 0.0, 3.0, 2.0, 1.0, 0.0]])]
    assert quality._agreement(trained, shuffled, [6], frame=(2, 1)) == pytest.approx(-1.0)
    assert quality._agreement(trained, shuffled, [6]) > -1.0  # the zeros would have agreed
    # The trained model itself is untouched (the check works on a copy).
    assert np.array_equal(gen.integrated_gradients(model, PROMPT, ANSWER, n_steps=4).scores, before)


@pytest.fixture(scope="module")
def t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=97, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, dropout_rate=0.0,
                      decoder_start_token_id=1, pad_token_id=2, eos_token_id=2)  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def test_an_encoder_decoders_integrated_gradients_are_captums_through_encoder_and_decoder(t5):
    from captum.attr import IntegratedGradients

    found = gen.integrated_gradients(t5, PROMPT, ANSWER, n_steps=24, baseline=0)
    n = len(PROMPT)
    assert found.scores.shape == (len(ANSWER), n + len(ANSWER) - 1)  # as a decoder's: prompt, then answer
    embed = t5.get_input_embeddings()
    ids = torch.tensor([PROMPT + [1] + ANSWER[:-1]])  # the decoder reads its start token, then the answer
    x = embed(ids).detach()
    base = embed(torch.zeros_like(ids)).detach()
    base[0, n] = x[0, n]  # the start token is no input of the user's: it stays
    for j, token in enumerate(ANSWER):

        def logp(embeds, j=j, token=token):
            logits = t5(inputs_embeds=embeds[:, :n], decoder_inputs_embeds=embeds[:, n:]).logits
            return torch.log_softmax(logits[:, j].float(), -1)[:, token]

        ref = IntegratedGradients(logp).attribute(x, baselines=base, n_steps=24, method="gausslegendre")
        expected = np.delete(ref.sum(-1)[0].detach().double().numpy(), n)
        assert np.allclose(found.scores[j], expected, atol=1e-4), j
        assert np.all(found.scores[j, n + j :] == 0)  # the decoder cannot see the answer's later tokens
    rise = np.abs(found.logprobs - found.baseline_logprobs).max()
    assert np.abs(gen.integrated_gradients(t5, PROMPT, ANSWER, n_steps=256, baseline=0).residuals).max() < 0.01 * rise
    single = gen.integrated_gradients(t5, PROMPT, ANSWER, n_steps=24, batch_size=1, baseline=0)
    assert np.allclose(single.scores, found.scores, atol=1e-5)
    # Word ablation and faithfulness score through the same teacher forcing: keeping every token loses nothing.
    assert np.allclose(gen.continuation_logprobs(t5, [PROMPT], [ANSWER])[0], found.logprobs, atol=1e-5)
    metrics, _ = quality.faithfulness(t5, [PROMPT], [ANSWER], [np.arange(n, 0, -1.0)], [1.0], n_random=2)
    assert metrics["sufficiency_top1"] == pytest.approx(0.0, abs=1e-5)


def test_an_encoder_decoders_contrast_attention_and_randomisation_cascade(t5):
    ab = gen.contrastive(t5, PROMPT, [33, 9], [40], n_steps=128, baseline=0)
    ba = gen.contrastive(t5, PROMPT, [40], [33, 9], n_steps=128, baseline=0)
    assert np.allclose(ab.scores, -ba.scores) and abs(ab.residual) < 0.02 * abs(ab.logp_a - ab.logp_b) + 1e-3
    weights, note = gen.attention(t5, PROMPT, ANSWER)
    assert note.startswith("cross-attention") and weights.shape == (len(ANSWER), len(PROMPT))
    assert np.allclose(weights.sum(1), 1, atol=1e-5)  # each answer token's reading of the whole prompt
    from glasswork.explain.sanity import cascade

    names = [name for name, _ in cascade(quality._untied(t5))]
    assert names == ["head", "decoder layer 1", "decoder layer 0", "encoder layer 1", "encoder layer 0", "embeddings"]
    metrics, curves = quality.randomisation_check(t5, [PROMPT] * 2, [ANSWER] * 2, seed=0, max_spearman=0.5,
                                                  n_steps=8, baseline=0)  # fmt: skip
    assert list(curves["integrated_gradients"]) == names
    assert metrics["integrated_gradients/randomisation_spearman_mean"] < 0.9
