"""Texts longer than ``model.max_length`` tokens are counted, so that the cut is never silent."""

from __future__ import annotations

from tests.conftest import minilm_tokenizer

from glasswork.data.datamodule import truncation


def test_texts_over_max_length_are_counted_with_special_tokens():
    tokenizer = minilm_tokenizer()
    texts = ["good film", "good " * 10, "good " * 30]  # 2, 10 and 30 words: 4, 12 and 32 tokens
    assert truncation(tokenizer, texts, 12) == {"truncated": 1, "truncated_share": 1 / 3, "longest_tokens": 32}
    assert truncation(tokenizer, texts, 3)["truncated"] == 3
    assert truncation(tokenizer, texts, 32)["truncated"] == 0
