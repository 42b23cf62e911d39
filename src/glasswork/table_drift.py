"""The tabular task's side of a comparison (:mod:`glasswork.comparison`): the batch the drift step
compares (``drift.current``), what describes a row to Evidently (the table's own feature columns,
numbers as numbers and categories as categories: Evidently's tabular drift on its home ground,
the MLP's last hidden layer as the embeddings, and its predicted probability), and the file or
folder of new rows that ``glasswork monitor BATCH`` reads and scores.

``drift.current=shifted`` is a shift made reproducibly (``seed``) from the test split, as a new
market or a changed form would bring it (:func:`shift_table`): every numeric column moved up by
``SHIFT_SPREAD`` of its training standard deviation (whole-number columns stay whole numbers,
rounded up or down at random in proportion; values stay inside the training range), and the
rows of one category of the first categorical column over-represented (``OVER_SHARE`` of the
batch). Labels are kept, so the label-free estimate can be checked against the true accuracy.
``drift.current=test`` compares the unshifted test split: it should not drift.

What the model never learned is named, not absorbed: a category outside the ones the model
knows (read as ``(other)``; counted per column) and a feature column with no value at all
(``unseen_categories`` and ``all_missing_columns`` of the view's ``findings``, and of a
monitored batch's summary).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from glasswork.batch import Batch
from glasswork.data.tabular import OTHER, Columns, Preprocessor, as_category, bad_numbers, parse_numbers
from glasswork.drift import View
from glasswork.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CURRENT_CHOICES = ("shifted", "test")
SHIFT_SPREAD = 0.5  # drift.current=shifted: numeric columns moved by this fraction of their training std
OVER_SHARE = 0.4  # ... and one category's rows this share of the batch
MIN_SHARE = 0.05  # the category over-represented: one with at least this share of the test split,
RISE = 0.1  # ... and at least this much under OVER_SHARE (so its share rises by 10 points or more)
MISSING = "(missing)"  # a missing category, as the report shows it
PROBABILITY = "predicted_probability"
WHOLE = re.compile(r"^\s*([+-]?\d+)\.0*\s*$")  # a label written 1.0 is the class 1


def check_current(current: str) -> None:
    if current not in CURRENT_CHOICES:
        raise ConfigError(
            f"drift.current={current!r}: expected one of {list(CURRENT_CHOICES)} (task=tabular_classification)"
        )


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The test split, shifted (``drift.current=shifted``, :func:`shift_table`) or as it is
    (``test``); labels are the raw class values, as in the training data."""
    from glasswork.data.prepare import load_labels, load_split
    from glasswork.tasks.tabular import read_columns

    check_current(cfg.drift.current)
    test = load_split(cfg, "test")
    classes = load_labels(cfg)["classes"]
    test = test.assign(label=[classes[i] for i in test["label"]])
    if cfg.drift.current == "test":
        return test
    return shift_table(test, load_split(cfg, "train"), read_columns(cfg), cfg.seed)


def shift_table(test: pd.DataFrame, train: pd.DataFrame, columns: Columns, seed: int) -> pd.DataFrame:
    """``test`` as a shifted population would fill it in (same number of rows, labels kept):

    - every numeric column + ``SHIFT_SPREAD`` x its training standard deviation, a missing value
      left missing; a column of whole numbers in training stays whole (rounded up with the
      probability of the fraction, so its mean moves by the full amount) and every column is
      clipped to its training range (no rating of 6 on a 1-5 scale);
    - the rows of one category of the first categorical column drawn to ``OVER_SHARE`` of the
      batch (with replacement where it has fewer rows), the others for the rest: the category,
      chosen with ``seed``, among those holding at least ``MIN_SHARE`` of the test rows and at
      least ``RISE`` under ``OVER_SHARE`` (none such: no category is over-represented).
    """
    rng = np.random.default_rng(seed)
    frame = test.reset_index(drop=True)
    rows = _over_represented(frame, columns, rng)
    frame = frame.iloc[rows].reset_index(drop=True)
    for column in columns.numeric:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()
        seen = pd.to_numeric(train[column], errors="coerce").dropna().astype("float64").to_numpy()
        if not len(seen):
            continue
        moved = values + SHIFT_SPREAD * float(seen.std())
        if np.all(seen == np.round(seen)):
            moved = np.floor(moved) + (rng.random(len(moved)) < moved - np.floor(moved))
        frame[column] = np.clip(moved, seen.min(), seen.max())  # NaN stays NaN
    return frame


def _over_represented(frame: pd.DataFrame, columns: Columns, rng: np.random.Generator) -> np.ndarray:
    """Row positions of the shifted batch: one category's rows at ``OVER_SHARE`` (see :func:`shift_table`)."""
    n = len(frame)
    order = rng.permutation(n)
    if not columns.categorical or n == 0:
        return order
    values = frame[columns.categorical[0]].astype("string")
    shares = values.value_counts(normalize=True)
    candidates = sorted(str(c) for c, s in shares.items() if MIN_SHARE <= s <= OVER_SHARE - RISE)
    if not candidates:
        return order
    chosen = candidates[rng.integers(len(candidates))]
    is_chosen = (values == chosen).fillna(False).to_numpy(dtype=bool)
    inside, outside = np.flatnonzero(is_chosen), np.flatnonzero(~is_chosen)
    k = int(round(OVER_SHARE * n))
    picked = np.concatenate(
        [rng.choice(inside, size=k, replace=k > len(inside)), rng.choice(outside, size=n - k, replace=False)]
    )
    log.info("drift: shifted batch over-represents %s = %r (%d of %d rows)", columns.categorical[0], chosen, k, n)
    return rng.permutation(picked)


def raw_columns(frame: pd.DataFrame, pre: Preprocessor, source: str) -> tuple[pd.DataFrame, list[str]]:
    """The feature columns as Evidently tests them, and those with no value at all in ``frame``.

    Numbers as numbers (missing: NaN, which Evidently leaves out), except a column with no value
    at all: Evidently cannot test an empty column, so it holds what the model reads there (the
    training median) and is named. Categories as the model knows them: one it learned is
    itself, any other ``(other)``, a missing one ``(missing)``.
    """
    out: dict[str, object] = {}
    empty = []
    for column, stats in pre.numeric.items():
        values = frame[column].reset_index(drop=True)
        if not pd.api.types.is_numeric_dtype(values):
            values, bad = parse_numbers(values)
            if len(bad):  # as Preprocessor.transform says it: the column and the lines
                raise bad_numbers(frame[column].reset_index(drop=True), bad, source, column, "the model reads numbers")
        values = values.astype("float64").to_numpy()
        if np.isnan(values).all() and len(values):
            empty.append(column)
            values = np.full(len(values), stats["median"])
        out[column] = values
    for column, known in pre.categorical.items():
        text = as_category(frame[column].reset_index(drop=True))
        if len(text) and text.isna().all():
            empty.append(column)
        learned = set(known) - {OTHER}
        out[column] = [MISSING if v is None else (str(v) if str(v) in learned else OTHER) for v in text]
    return pd.DataFrame(out, index=range(len(frame))), [c for c in pre.columns if c in empty]


def findings(unseen: dict[str, int], empty: list[str]) -> dict:
    """What rows hold that the model never learned, in the words of ``drift.json``: per column the
    number of categories the model does not know (never in training, or too rare there to be
    kept: ``data.max_categories``; the model reads them as ``(other)``), and the feature columns
    with no value at all (the model reads the training median or ``(other)``)."""
    return {"unseen_categories": dict(unseen), "all_missing_columns": list(empty)}


class TableDescriber:
    """The trained MLP (in ``folder``, default the work folder's) scores and embeds rows; the
    table's own columns describe them."""

    rows = ("rows", "last-hidden-layer embeddings")  # what the batch map calls its points

    def __init__(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.models.backbone import inference_device, model_dir
        from glasswork.tasks.tabular import TablePredictor

        self.predictor = TablePredictor(folder or model_dir(cfg), device=inference_device(cfg.trainer))
        self.batch_size = cfg.trainer.eval_batch_size
        self.cfg = cfg

    @property
    def pre(self) -> Preprocessor:
        return self.predictor.pre

    def describe(self, frame: pd.DataFrame, labels: list[str] | None, source: str = "the batch") -> View:
        frame = frame.reset_index(drop=True)
        features, unseen = self.pre.transform(frame, source)
        vectors, probs = self.predictor.embed(features, self.batch_size)
        described, empty = raw_columns(frame, self.pre, source)
        # Binary: the probability of the positive (second) class; more: the top one (as the
        # reference side's held-out confidence, glasswork.comparison.held_out_confidence).
        described[PROBABILITY] = (probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)).astype(float)
        if labels is not None:
            described["label"] = [str(v) for v in labels]
        if empty or unseen:
            log.warning("drift: %s: unseen categories %s, columns with no value %s", source, unseen, empty)
        return View(
            described,
            vectors,
            probs,
            text_columns=[],
            numeric=[*self.pre.numeric, PROBABILITY],
            embedding_name="table",
            hover=hover_texts(frame, self.pre.columns, labels),
            categorical=list(self.pre.categorical),
            findings=findings(unseen, empty),
        )

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None):
        from glasswork.explain.column_drift import explanation_drift
        from glasswork.explain.columns import ColumnExplainer

        return explanation_drift(baseline, ColumnExplainer(self.predictor, self.cfg), current, self.cfg)


def hover_texts(frame: pd.DataFrame, columns: list[str], labels: list[str] | None, shown: int = 6) -> list[str]:
    """Per row, what hovering its point on the batch map shows: where it came from and its first
    feature values (data: the map escapes them)."""
    where = (
        [f"{f} row {r}" for f, r in zip(frame["file"], frame["row"], strict=True)]
        if {"file", "row"} <= set(frame.columns)
        else [f"row {i}" for i in range(len(frame))]
    )
    values = frame[columns[:shown]].astype(object).where(frame[columns[:shown]].notna(), None).to_numpy()
    texts = [
        f"{w}: " + ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=False))
        for w, row in zip(where, values, strict=True)
    ]
    return texts if labels is None else [f"{t}; label {lab}" for t, lab in zip(texts, labels, strict=True)]


@dataclass
class TableBatch(Batch):
    """A monitored table: :class:`~glasswork.batch.Batch` with what its rows hold that the model
    never learned, counted over every row (not only the sample)."""

    unseen_categories: dict[str, int] = field(default_factory=dict)
    all_missing_columns: list[str] = field(default_factory=list)
    label_column: str | None = None

    def summary(self) -> dict:
        return {
            **super().summary(),
            "unseen_categories": self.unseen_categories,
            "all_missing_columns": self.all_missing_columns,
            "label_column": self.label_column,  # where retraining reads the labels (on_drift=retrain)
        }


def label_candidates(cfg: DictConfig, ref) -> list[str]:
    """The columns a batch's labels may be in: the champion's own label column (its recorded
    ``data.label_column``: the table it was trained on), then ``monitor.label_column``."""
    recorded = OmegaConf.select(ref.recorded, "data.label_column") if ref.recorded is not None else None
    return list(dict.fromkeys(str(c) for c in (recorded, cfg.monitor.label_column) if c))


def as_labels(values: pd.Series) -> pd.Series:
    """Labels as text (``""`` where a row has none), a whole number written 1.0 as 1."""
    text = values.astype("string").str.strip().fillna("")
    return text.str.replace(WHOLE, r"\1", regex=True).astype(object)


def read_table_batch(source: Path, cfg: DictConfig, ref) -> TableBatch:
    """A file (csv, parquet, jsonl) or a folder of them to monitor, as a :class:`TableBatch`.

    Every file is read whole (a table's rows are small) and checked before anything is written:
    a feature column the model reads missing from a file, or text in a numeric column, is a
    :class:`~glasswork.errors.DataError` naming the column and the file (and the line); a file
    that cannot be read at all is skipped and reported. A category the model never learned is read
    as ``(other)`` and counted per column; a feature with no value in any row is named. The
    sample: a seeded uniform draw of ``monitor.sample_size`` rows with the features, the
    champion's metadata columns where a file has them, ``file``, ``row`` (0-based in its file)
    and, where a file carries the label column (:func:`label_candidates`), ``label``."""
    from glasswork.batch import batch_files
    from glasswork.data.sources import read_table
    from glasswork.outputs import read_json
    from glasswork.tasks.tabular import PREPROCESS

    pre = Preprocessor.from_json(read_json(Path(ref.model_dir) / PREPROCESS))
    candidates = label_candidates(cfg, ref)
    extra = [c for c in ref.train.columns if c not in (*pre.columns, "label", "path", "file", "row")]
    batch = TableBatch(Path(source), files=[], label_column=None)
    frames, filled = [], dict.fromkeys(pre.columns, 0)
    for path in batch_files(source):
        try:
            frame = read_table(path, encoding=cfg.monitor.encoding)
        except (DataError, ConfigError) as err:
            batch.skipped[str(path)] = str(err).splitlines()[0][:300]
            log.warning("monitor: skipped %s: %s", path, batch.skipped[str(path)])
            continue
        _, unseen = pre.transform(frame, str(path))  # a missing column or text in a number: an error
        for column, count in unseen.items():
            batch.unseen_categories[column] = batch.unseen_categories.get(column, 0) + count
        for column in pre.columns:
            filled[column] += int(_filled(frame[column]).sum())
        label = next((c for c in candidates if c in frame.columns), None)
        kept = frame[[*pre.columns, *(c for c in extra if c in frame.columns)]].reset_index(drop=True)
        kept = kept.assign(file=str(path), row=np.arange(len(frame)))
        if label is not None:
            kept["label"] = as_labels(frame[label].reset_index(drop=True)).to_numpy()
            batch.has_labels |= bool((kept["label"] != "").any())
            batch.label_column = batch.label_column or label
        frames.append(kept)
        batch.files.append(path)
        batch.n_rows += len(frame)
    _check_read(batch, source)
    batch.all_missing_columns = [c for c in pre.columns if filled[c] == 0]
    whole = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(cfg.seed)
    chosen = np.sort(rng.choice(len(whole), size=min(cfg.monitor.sample_size, len(whole)), replace=False))
    sample = whole.iloc[chosen].reset_index(drop=True)
    if batch.has_labels:
        sample["label"] = sample["label"].fillna("") if "label" in sample else ""
    elif "label" in sample:
        sample = sample.drop(columns=["label"])
    batch.sample = sample
    if batch.unseen_categories or batch.all_missing_columns:
        log.warning(
            "monitor: %s holds categories the model never learned %s (read as %s) and columns with no value %s",
            source,
            batch.unseen_categories,
            OTHER,
            batch.all_missing_columns,
        )
    return batch


def _filled(values: pd.Series) -> pd.Series:
    """Whether each cell holds a value (a blank string is none)."""
    return values.notna() & (values.astype("string").str.strip() != "").fillna(False)


def _check_read(batch: TableBatch, source: Path) -> None:
    if not batch.files:
        reasons = "; ".join(f"{f}: {why}" for f, why in batch.skipped.items()) or "the folder is empty"
        raise DataError(f"batch {source}: no readable data file ({reasons})")
    if batch.n_rows == 0:
        raise DataError(f"batch {source} has no rows ({', '.join(map(str, batch.files))}): nothing to monitor")


def score_table(path: Path, batch: TableBatch, describer: TableDescriber, ref, cfg: DictConfig) -> dict[str, int]:
    """Score every row of ``batch``, file by file, into one parquet file (``file``, ``row``,
    ``label`` where the batch has labels, ``predicted``, ``prob_<class>``). Returns the counts per
    predicted class."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from glasswork.data.sources import read_table

    names = [str(n) for n in ref.labels["names"]]
    counts = dict.fromkeys(names, 0)
    candidates = label_candidates(cfg, ref)
    writer = None
    for file in batch.files:
        frame = read_table(file, encoding=cfg.monitor.encoding).reset_index(drop=True)
        features, _ = describer.pre.transform(frame, str(file))
        _, probs = describer.predictor.embed(features, max(cfg.trainer.eval_batch_size, 1))
        predicted = probs.argmax(axis=1)
        columns = {
            "file": [str(file)] * len(frame),
            "row": np.arange(len(frame), dtype=np.int64),
            "predicted": [names[i] for i in predicted],
            **{f"prob_{n}": probs[:, i].astype(np.float64) for i, n in enumerate(names)},
        }
        if batch.has_labels:  # every file, labelled or not: one schema for the whole batch
            label = next((c for c in candidates if c in frame.columns), None)
            columns["label"] = as_labels(frame[label]).tolist() if label else [""] * len(frame)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
        for i, n in enumerate(names):
            counts[n] += int((predicted == i).sum())
    if writer is not None:
        writer.close()
    return counts
