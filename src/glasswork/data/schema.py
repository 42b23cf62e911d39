"""Schema checks of a labelled text table, with errors that name the file, row and column.

Rows are numbered as a spreadsheet shows them: the header is line 1, the first row line 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from glasswork.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIN_ROWS_PER_CLASS = 5  # a stratified train/val/test split needs a few of each class
ISO_DATE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?(?:Z|[+-]\d\d:?\d\d)?"


@dataclass
class CleanTable:
    """A checked table: columns ``text`` and ``label`` (the original label values), then the
    metadata columns kept to slice the evaluation by (``data.slice_columns``), under their names."""

    frame: pd.DataFrame
    classes: list
    report: dict = field(default_factory=dict)


def validate(
    frame: pd.DataFrame, source: str, text_column: str, label_column: str, slice_columns: Sequence[str] = ()
) -> CleanTable:
    """Check a raw table and return the cleaned ``text``/``label`` frame (and ``slice_columns``).

    Rules: both columns exist; there is at least one row; the text column holds text; no
    label is missing; rows with empty text are dropped (all empty is an error); duplicates are
    dropped, also texts equal up to case, spacing and punctuation (:func:`comparison_key`), so
    that no text is both trained and tested on; texts seen with two labels are dropped; at least
    two classes, each with at least ``MIN_ROWS_PER_CLASS`` rows. Slice columns exist, are neither
    the text nor the label column, and may hold missing values (a slice of their own).

    Raises:
        DataError: naming ``source`` and the row, column and rule that failed.
        ConfigError: ``data.slice_columns`` names a column twice, or the text or label column.
    """
    _require_columns(frame, source, text_column, label_column)
    _require_slice_columns(frame, source, text_column, label_column, list(slice_columns))
    if frame.empty:
        raise DataError(f"{source} has a header ({', '.join(map(str, frame.columns))}) but no rows")
    texts, labels = frame[text_column], frame[label_column]
    _require_text(texts, source, text_column)
    _require_labels(labels, source, label_column)
    clean = pd.DataFrame({"text": texts.astype("string").fillna("").str.strip(), "label": labels})
    for column in slice_columns:
        clean[column] = _metadata(frame[column])
    report = {"source": source, "rows_read": len(clean), "slice_columns": list(slice_columns)}
    empty = clean["text"] == ""
    if empty.all():
        raise DataError(f"{source}: every value of text column {text_column!r} is empty")
    report["dropped_empty_text"] = int(empty.sum())
    clean = clean[~empty]
    exact = clean.duplicated(subset=["text", "label"])
    report["dropped_duplicates"] = int(exact.sum())
    clean = clean[~exact]
    # Texts equal up to case, spacing and punctuation ("A slick melodrama." / "a slick melodrama")
    # are one text to the model: kept twice, one copy could land in train and one in test.
    key = comparison_key(clean["text"])
    near = pd.DataFrame({"key": key, "label": clean["label"]}).duplicated()
    report["dropped_near_duplicates"] = int(near.sum())
    clean, key = clean[~near], key[~near]
    conflicting = key.duplicated(keep=False)
    report["dropped_conflicting_labels"] = int(conflicting.sum())
    clean = clean[~conflicting].reset_index(drop=True)
    classes = _require_classes(clean["label"], source, label_column)
    report.update(rows_kept=len(clean), class_counts={str(k): int(v) for k, v in clean["label"].value_counts().items()})
    dropped = {k: v for k, v in report.items() if k.startswith("dropped_") and v}
    if dropped:
        log.warning("%s: dropped rows %s", source, dropped)
    return CleanTable(frame=clean, classes=classes, report=report)


def comparison_key(texts: pd.Series) -> pd.Series:
    """Each text case-folded, with every run of spaces and punctuation made one space: texts
    with the same key are duplicates. A text of punctuation only (":)") is its own key."""
    key = texts.str.casefold().str.replace(r"[\W_]+", " ", regex=True).str.strip()
    return key.mask(key == "", texts)


def _require_columns(frame: pd.DataFrame, source: str, text_column: str, label_column: str) -> None:
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise DataError(
                f"{source} has no {role} column {column!r} (columns found: {found}); "
                f"set data.{role}_column to one of them"
            )


def _require_slice_columns(
    frame: pd.DataFrame, source: str, text_column: str, label_column: str, columns: list[str]
) -> None:
    for column in columns:
        if columns.count(column) > 1:
            raise ConfigError(f"data.slice_columns lists {column!r} twice")
        if column in (text_column, label_column):
            role = "text" if column == text_column else "label"
            built_in = "true class" if role == "label" else "length and split words"
            raise ConfigError(
                f"data.slice_columns names the {role} column {column!r}: slices by {built_in} are built in; "
                "list metadata columns (source, language, date)"
            )
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise DataError(
                f"{source} has no slice column {column!r} (columns found: {found}); "
                "set data.slice_columns to columns of this table, or [] for none"
            )
        if column in ("text", "label"):  # the prepared splits' own columns
            raise ConfigError(
                f"data.slice_columns: {column!r} is a name the prepared splits use for the text and the label; "
                f"rename that column of {source}"
            )


def _metadata(values: pd.Series) -> pd.Series:
    """A slice column as the splits keep it: numbers, flags and dates as they are, ISO dates
    written as text (CSV, JSONL) as dates, anything else as text; blank cells are missing. One
    parquet type per column, whatever the file held."""
    kind = pd.api.types
    if kind.is_numeric_dtype(values) or kind.is_bool_dtype(values) or kind.is_datetime64_any_dtype(values):
        return values
    text = as_text(values)
    written = text.dropna()
    if len(written) and written.str.fullmatch(ISO_DATE).all():
        zoned = bool(written.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$").any())
        with contextlib.suppress(ValueError, OverflowError):  # 2024-13-45 looks like a date: keep it as text
            return pd.to_datetime(text, format="ISO8601", utc=zoned)
    return text


def as_text(values: pd.Series) -> pd.Series:
    """A metadata column as text, trimmed, with blank cells missing."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def conform_metadata(values: pd.Series, like: pd.Series) -> pd.Series:
    """A batch's metadata column in the type ``like`` (the same column of a split) has: a batch
    read from CSV holds text, the splits hold numbers and dates. What does not parse is missing."""
    kind = pd.api.types
    if kind.is_bool_dtype(like) or not (kind.is_numeric_dtype(like) or kind.is_datetime64_any_dtype(like)):
        return as_text(values)
    if kind.is_numeric_dtype(like):
        return pd.to_numeric(values, errors="coerce")
    stamps = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return stamps if like.dt.tz is not None else stamps.dt.tz_convert(None)


def _require_text(texts: pd.Series, source: str, column: str) -> None:
    non_missing = texts.dropna()
    if len(non_missing) and pd.api.types.is_numeric_dtype(non_missing) and not pd.api.types.is_bool_dtype(non_missing):
        raise DataError(f"{source}: text column {column!r} holds numbers, expected text (is it the right column?)")


def _require_labels(labels: pd.Series, source: str, column: str) -> None:
    missing = labels.isna().to_numpy().nonzero()[0]
    if len(missing):
        lines = ", ".join(str(i + 2) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"{source}: label column {column!r} is empty on {len(missing)} row(s), at line(s) {lines}{more}; "
            "every row needs a label (ragged rows show up here too)"
        )


def _require_classes(labels: pd.Series, source: str, column: str) -> list:
    counts = labels.value_counts()
    if len(counts) < 2:
        only = counts.index[0] if len(counts) else "none"
        raise DataError(
            f"{source}: label column {column!r} has a single class ({only!r}); a classifier needs at least two"
        )
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if len(rare):
        detail = ", ".join(f"{k!r}: {v}" for k, v in rare.items())
        raise DataError(
            f"{source}: label column {column!r} has classes with fewer than {MIN_ROWS_PER_CLASS} rows ({detail}); "
            "a stratified train/val/test split needs more of each"
        )
    try:
        return sorted(counts.index.tolist())
    except TypeError:  # mixed types: order by their text
        return sorted(counts.index.tolist(), key=str)
