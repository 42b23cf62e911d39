"""Texts longer than ``model.max_length`` tokens are counted, so that the cut is never silent."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.conftest import minilm_tokenizer

from glasswork.config import load_config
from glasswork.data.datamodule import TextCollator, truncation
from glasswork.data.prepare import check_lengths
from glasswork.errors import ConfigError
from glasswork.models.backbone import load_tokenizer, pretrained_dir
from glasswork.serving import head_and_tail


def test_texts_over_max_length_are_counted_with_special_tokens():
    tokenizer = minilm_tokenizer()
    texts = ["good film", "good " * 10, "good " * 30]  # 2, 10 and 30 words: 4, 12 and 32 tokens
    assert truncation(tokenizer, texts, 12) == {"truncated": 1, "truncated_share": 1 / 3, "longest_tokens": 32}
    assert truncation(tokenizer, texts, 3)["truncated"] == 3
    assert truncation(tokenizer, texts, 32)["truncated"] == 0


WORDS = " ".join(f"w{i}" for i in range(200))  # each "w<i>" is its own pair of word pieces


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_head_and_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end():
    tokenizer = minilm_tokenizer()
    cut = head_and_tail(tokenizer, WORDS, 42)  # 40 tokens of text, 2 special ones
    assert cut.startswith("w0 w1 w2 w3 w4") and cut.endswith("w197 w198 w199")
    assert "w100" not in cut.split()
    assert len(_ids(tokenizer, cut)) == 40
    head = cut.split(" ")[: cut.split(" ").index("w4") + 1]
    assert len(_ids(tokenizer, " ".join(head))) == 10  # a quarter of 40: five words of two pieces
    assert head_and_tail(tokenizer, "a short text", 42) == "a short text"  # fits: unchanged
    assert head_and_tail(tokenizer, [WORDS, "short"], 42) == [cut, "short"]


def test_head_and_tail_fits_texts_whose_cut_splits_a_word_or_an_emoji():
    tokenizer = minilm_tokenizer()
    odd = "naïve café 😀🎬 東京 " * 30 + "unbelievably " * 40 + "the ending"
    for budget in (10, 17, 64, 129):
        cut = head_and_tail(tokenizer, odd, budget)
        assert len(_ids(tokenizer, cut)) <= budget - 2, budget
        assert cut.endswith("the ending") and cut.startswith("naïve")


@pytest.mark.parametrize(
    ("truncation", "start", "end"), [("head", True, False), ("tail", False, True), ("head+tail", True, True)]
)
def test_model_truncation_decides_which_part_of_a_long_text_the_model_sees(tmp_path, truncation, start, end):
    tokenizer = load_tokenizer(pretrained_dir(load_config([]).model), truncation)
    seen = tokenizer.decode(tokenizer(WORDS, truncation=True, max_length=22)["input_ids"], skip_special_tokens=True)
    assert seen.replace(" ", "").startswith("w0w1") is start
    assert seen.replace(" ", "").endswith("w198w199") is end
    # A trained model's folder remembers the cut: labels.json names it, as train writes it.
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"truncation": truncation}))
    again = load_tokenizer(tmp_path)
    assert (
        again(WORDS, truncation=True, max_length=22)["input_ids"]
        == tokenizer(WORDS, truncation=True, max_length=22)["input_ids"]
    )
    collated = TextCollator(again, 22).encode(pd.DataFrame({"text": [WORDS]}))
    assert list(collated[0][0]) == tokenizer(WORDS, truncation=True, max_length=22)["input_ids"]


def test_an_unknown_truncation_is_refused_with_the_choices():
    with pytest.raises(
        ConfigError, match=r"model.truncation='middle': expected one of \['head', 'tail', 'head\+tail'\]"
    ):
        check_lengths(load_config(["model.truncation=middle"]).model)
    check_lengths(load_config(["model.truncation=head+tail"]).model)  # Hydra takes the + as it is
