"""Where a generated answer's attribution falls among the words of the user's prompt
(glasswork.explain.prompt_drift), with SmolLM2's own tokenizer: the descriptors the explanation
drift of task=text_generation tests."""

from __future__ import annotations

import numpy as np
import pytest
from tests.code.test_answers import tokenizer  # noqa: F401 - SmolLM2's tokenizer, a module fixture

from glasswork.explain.prompt_drift import digests, prompt_descriptors

SENTENCE = "The film, shot in 1999, was magnifique"
# SmolLM2's tokens and words: The | film , | shot | in | 1999 , (six pieces) | was | magn if ique
TOKENS = ["The", "Ġfilm", ",", "Ġshot", "Ġin", "Ġ", "1", "9", "9", "9", ",", "Ġwas", "Ġmagn", "if", "ique"]


def _describe(tokenizer, weights: dict[int, float], start: int = 0):  # noqa: F811
    ids = tokenizer(SENTENCE)["input_ids"]
    span = (start, len(ids))
    assert tokenizer.convert_ids_to_tokens(ids) == TOKENS
    importance = np.zeros(len(ids))
    for position, weight in weights.items():
        importance[position] = weight
    found = prompt_descriptors(tokenizer, [ids], [span], [importance])
    return {k: v[0] for k, v in found.items()}


def test_attribution_on_a_number_is_on_a_word_without_letters(tokenizer):  # noqa: F811
    found = _describe(tokenizer, dict.fromkeys(range(5, 11), 1.0))
    assert found == {"mass_non_letters": 1.0, "mass_split_words": 0.0, "mass_top_word": 1.0}


def test_a_word_in_several_lettered_pieces_is_split_and_punctuation_does_not_split_one(tokenizer):  # noqa: F811
    assert _describe(tokenizer, {12: 1.0, 13: -1.0, 14: 2.0})["mass_split_words"] == 1.0  # magn|if|ique
    found = _describe(tokenizer, {1: 1.0, 2: 1.0, 11: 2.0})  # "film," (one lettered piece) and "was"
    assert found == {"mass_non_letters": 0.0, "mass_split_words": 0.0, "mass_top_word": 0.5}


def test_only_the_users_span_counts(tokenizer):  # noqa: F811
    found = _describe(tokenizer, {0: 100.0, 3: 1.0, 4: 1.0}, start=1)
    assert found["mass_top_word"] == pytest.approx(0.5)  # "The" is outside the span; shot and in share it


def test_a_prompt_is_known_by_its_digest():
    assert digests(["«Où est la gare ?»", "b"]) == digests(["«Où est la gare ?»", "b"])
    assert len(set(digests(["a", "a ", "A"]))) == 3
