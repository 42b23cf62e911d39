"""Data tests of the data card: token lengths decide ``model.max_length=auto``, the card says what
was dropped and warns of small and imbalanced classes, and probe texts survive their file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.conftest import learnable_rows, tiny_overrides

from glasswork.config import load_config
from glasswork.data.card import choose_max_length
from glasswork.data.prepare import load_probe, prepare, with_max_length
from glasswork.errors import ConfigError
from glasswork.outputs import read_json


def _table_cfg(tmp_path, frame: pd.DataFrame, *extra: str):
    path = tmp_path / "mine.parquet"
    frame.to_parquet(path)
    overrides = ["data=table", f"data.path={path}", "data.text_column=body", "data.label_column=mood",
                 "data.max_rows=null", *extra]  # fmt: skip
    return load_config(tiny_overrides(tmp_path, *overrides))


def test_auto_length_covers_the_quantile_in_multiples_of_8_within_the_model_limit():
    lengths = np.arange(1, 101)  # 1..100 tokens
    assert choose_max_length(lengths, 0.95, 512) == 96  # p95 = 95.05 -> 96
    assert choose_max_length(lengths, 1.0, 64) == 64  # capped at the model's limit
    assert choose_max_length(np.array([3, 4, 5]), 0.95, 512) == 16  # at least 16


def test_prepare_chooses_max_length_from_the_data_and_the_later_steps_use_it(tmp_path):
    rows = learnable_rows(200)
    # A fifth of the texts are long (about 150 tokens): auto at 0.7 covers the short ones only.
    frame = pd.DataFrame(
        [(t + (" and more words" * 50 if i % 5 == 0 else ""), y) for i, (t, y) in enumerate(rows)],
        columns=["body", "mood"],
    )
    cfg = _table_cfg(tmp_path, frame, "model.max_length=auto", "model.length_quantile=0.7")
    report = prepare(cfg)
    card = read_json(tmp_path / "artifacts/prepare/data_card.json")
    assert report["max_length"] == card["max_length"] < 40, card
    assert 0.15 < card["cut_share"] < 0.25 and card["train_tokens"]["max"] > 150
    assert with_max_length(cfg).model.max_length == card["max_length"]
    assert cfg.model.max_length == "auto", "the composed config itself is left as it was"
    page = (tmp_path / "artifacts/prepare/data_card.md").read_text()
    assert f"max_length: {card['max_length']} (auto: covers 70% of the training texts" in page
    assert "are longer than max_length" in page  # the warning: more than 10% cut

    # A fixed length is kept, but not past the model's positions.
    assert prepare(_table_cfg(tmp_path, frame, "model.max_length=32"))["max_length"] == 32
    with pytest.raises(ConfigError, match="model.max_length=4096: this model takes at most 512"):
        prepare(_table_cfg(tmp_path, frame, "model.max_length=4096"))


def test_the_card_counts_what_was_dropped_and_warns_of_small_and_imbalanced_classes(tmp_path):
    rows = [(f"common text number {i}", "common") for i in range(600)]
    rows += [(f"rare text number {i}", "rare") for i in range(20)]  # 30:1, 16 rare rows to train
    rows += [("common text number 1", "common"), ("COMMON text number 2!", "common")]  # two duplicates
    cfg = _table_cfg(tmp_path, pd.DataFrame(rows, columns=["body", "mood"]))
    prepare(cfg)
    card = read_json(tmp_path / "artifacts/prepare/data_card.json")
    assert card["rows_read"] == 622 and card["rows_kept"] == 620
    assert card["dropped"]["duplicates"] == 1 and card["dropped"]["near_duplicates"] == 1
    assert card["class_balance"]["train"]["rare"] == 16
    assert sum(card["class_balance"]["train"].values()) == card["split_sizes"]["train"]
    assert any("class 'rare' has 16 training rows" in w for w in card["warnings"])
    assert any("30:1 apart" in w and "trainer.class_weights=auto" in w for w in card["warnings"])


def test_a_carriage_return_in_a_probe_text_round_trips(tmp_path):
    # A tweet with a lone carriage return once came back from probe.csv as two rows.
    texts = [f"{t}\r{i}" if i % 2 else f'{t} "quoted",\r\n{i}' for i, (t, _) in enumerate(learnable_rows(200))]
    frame = pd.DataFrame({"body": texts, "mood": [y for _, y in learnable_rows(200)]})
    cfg = _table_cfg(tmp_path, frame, "explain.n_probe=12")
    prepare(cfg)
    probe = load_probe(cfg)
    test = pd.read_parquet(tmp_path / "data/processed/test.parquet")
    assert len(probe) == 12
    assert set(probe["text"]) <= set(test["text"]) and probe["text"].str.contains("\r").all()
