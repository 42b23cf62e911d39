"""Baselines and coalitions (issue 22, item 6): the integrated-gradients and Kernel SHAP baselines
keep only the tokenizer's own start/end tokens, so an [UNK] (an emoji in a tweet) is scored and a
RoBERTa-style <s>/</s> model works; Kernel SHAP draws at least twice as many coalitions as a
text has features."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import minilm_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from glasswork.explain import faithfulness as faith
from glasswork.explain.attributions import TokenAttribution, integrated_gradients, pad_baseline
from glasswork.explain.model_agnostic import coalitions, kernel_shap

WORDS = "a fine film great bad movie plot dull actor".split()


def roberta_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that wraps texts RoBERTa's way (<s> ... </s>), built offline."""
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip


def tiny_roberta(vocab_size: int) -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=72, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2,
        initializer_range=0.5,
    )  # fmt: skip
    return RobertaForSequenceClassification(config).eval()


def tiny_bert(vocab_size: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2, initializer_range=0.5,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def test_the_baseline_keeps_a_roberta_models_own_start_and_end_tokens_and_replaces_unk():
    tok = roberta_tokenizer()
    ids = tok(["a fine zebra film"], return_tensors="pt")["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0].tolist()) == ["<s>", "a", "fine", "<unk>", "film", "</s>"]
    baseline = tok.convert_ids_to_tokens(pad_baseline(ids, tok)[0].tolist())
    assert baseline == ["<s>", "<pad>", "<pad>", "<pad>", "<pad>", "</s>"]  # the <unk> too


def test_an_emoji_unk_token_gets_an_attribution_from_both_methods():
    tok = minilm_tokenizer()
    model = tiny_bert(tok.vocab_size)
    text = "a dull plot 😀 and bad actor"
    ig = integrated_gradients(model, tok, [text], [0], max_length=16, n_steps=8)[0]
    shap = kernel_shap(model, tok, [text], [0], max_length=16, n_samples=64, seed=0)[0]
    assert ig.tokens == shap.tokens
    assert ig.tokens[:5] == ["[CLS]", "a", "dull", "plot", "[UNK]"]
    # Kept in the baseline, the [UNK] scored exactly 0 under both methods.
    assert abs(ig.scores[4]) > 0.01
    assert abs(shap.scores[4]) > 0.01


def test_explanations_of_a_roberta_style_model_score_words_not_its_frame():
    tok = roberta_tokenizer()
    model = tiny_roberta(len(tok))
    texts = ["a fine film", "bad movie dull plot zebra"]
    ig = integrated_gradients(model, tok, texts, [0, 1], max_length=16, n_steps=8)
    shap = kernel_shap(model, tok, texts, [0, 1], max_length=16, n_samples=32, seed=0)
    for item in ig + shap:
        assert item.tokens[0] == "<s>" and item.tokens[-1] == "</s>"
        assert all(abs(s) > 1e-6 for s in item.scores[1:-1]), item  # every word, <unk> included
        assert item.scores[0] == item.scores[-1] == 0.0  # the frame is in every coalition: a dummy


def test_faithfulness_never_deletes_a_roberta_models_start_and_end_tokens(monkeypatch):
    tok = roberta_tokenizer()
    model = tiny_roberta(len(tok))
    enc = tok("a fine film great")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    # The frame gets the highest scores: a ranking that took it for words would delete it first.
    item = TokenAttribution("a fine film great", tokens, [9.0, 0.1, 0.4, 0.2, 0.3, 9.0], 0, 0.6, 0, 0.0, False)
    seen: list[list[int]] = []
    real = faith._probabilities

    def record(model, tokenizer, ids, targets, chunk=64):
        seen.extend(ids)
        return real(model, tokenizer, ids, targets, chunk)

    monkeypatch.setattr(faith, "_probabilities", record)
    faith.faithfulness(model, tok, [item], [0.25, 0.5], n_random=5)
    assert seen and all(s[0] == tok.bos_token_id and s[-1] == tok.eos_token_id for s in seen)
    assert min(len(s) for s in seen) == 3  # sufficiency at 25% keeps one word in its frame


def test_kernel_shap_draws_at_least_twice_as_many_coalitions_as_a_long_text_has_tokens():
    tok = roberta_tokenizer()
    model = tiny_roberta(len(tok))
    text = " ".join(WORDS * 5)  # 45 words
    words = len(text.split())
    rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counting
    kernel_shap(model, tok, [text], [0], max_length=64, n_samples=16, seed=0)
    # One forward of the text itself, then the coalitions: 2 x (45 words + the frame's feature).
    assert sum(rows) - 1 >= 2 * words >= 80
    assert coalitions(40, 64) == 80 and coalitions(10, 64) == 64


@pytest.mark.parametrize("n_random", [1, 4])
def test_fewer_than_five_random_rankings_are_refused(n_random):
    from glasswork.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"explain.n_random={n_random}: expected at least 5 random rankings"):
        faith.check_measure(list(faith.ERASER_BINS), n_random)
    with pytest.raises(ConfigError, match=r"explain.fractions=\[0, 0.5\]: expected fractions of the tokens in"):
        faith.check_measure([0, 0.5], 5)
