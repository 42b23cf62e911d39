"""Schema checks of a labelled text table, with errors that name the file, row and column.

Rows are numbered as a spreadsheet shows them: the header is line 1, the first row line 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from glasswork.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIN_ROWS_PER_CLASS = 5  # a stratified train/val/test split needs a few of each class
ISO_DATE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?(?:Z|[+-]\d\d:?\d\d)?"


@dataclass
class CleanTable:
    """A checked table: columns ``text`` (Arrow strings: a large table is not held as Python
    strings) and ``label`` (the original label values), then the metadata columns kept to slice
    the evaluation by (``data.slice_columns``), under their names."""

    frame: pd.DataFrame
    classes: list
    report: dict = field(default_factory=dict)


def validate(
    frame: pd.DataFrame, source: str, text_column: str, label_column: str, slice_columns: Sequence[str] = ()
) -> CleanTable:
    """Check a raw table and return the cleaned ``text``/``label`` frame (and ``slice_columns``).

    Rules: both columns exist; there is at least one row; the text column holds text; no
    label is missing; labels that are whole numbers written as floats (``1.0``) are integers, other
    floats are refused; rows with empty text are dropped (all empty is an error); duplicates are
    dropped, also texts equal up to case, spacing and punctuation (:func:`comparison_key`), so
    that no text is both trained and tested on; texts seen with two labels are dropped; at least
    two classes, each with at least ``MIN_ROWS_PER_CLASS`` rows. Slice columns exist, are neither
    the text nor the label column, and may hold missing values (a slice of their own).

    Duplicates are found on 128-bit hashes of the texts and keys, computed chunk by chunk: a table
    of millions of rows is never held as Python strings, nor its text copied more than once.

    Raises:
        DataError: naming ``source`` and the row, column and rule that failed.
        ConfigError: ``data.slice_columns`` names a column twice, or the text or label column.
    """
    header = [str(c) for c in frame.attrs.get("header", frame.columns)]
    _require_columns(header, source, text_column, label_column)
    _require_slice_columns(header, source, text_column, label_column, list(slice_columns))
    if frame.empty:
        raise DataError(f"{source} has a header ({', '.join(header)}) but no rows")
    _require_text(frame[text_column], source, text_column)
    labels = as_classes(frame[label_column], source, label_column)
    metadata = {column: _metadata(frame[column]) for column in slice_columns}
    text = _arrow_text(frame[text_column])
    # The raw table is ours now (prepare passes it straight on): drop it, and its texts go chunk
    # by chunk as the kept ones are copied out (_kept_text).
    del frame
    report = {"source": source, "rows_read": len(text), "slice_columns": list(slice_columns)}
    empty, text_hash, key_hash = _scan(text)
    if empty.all():
        raise DataError(f"{source}: every value of text column {text_column!r} is empty")
    report["dropped_empty_text"] = int(empty.sum())
    keep = np.flatnonzero(~empty)
    codes = pd.factorize(labels)[0]
    exact = _duplicated(_rows(text_hash, keep), _rows(codes, keep))
    del text_hash  # a quarter of the text's size on a table of short texts
    report["dropped_duplicates"] = int(exact.sum())
    keep = keep[~exact]
    # Texts equal up to case, spacing and punctuation ("A slick melodrama." / "a slick melodrama")
    # are one text to the model: kept twice, one copy could land in train and one in test.
    near = _duplicated(_rows(key_hash, keep), _rows(codes, keep))
    report["dropped_near_duplicates"] = int(near.sum())
    keep = keep[~near]
    conflicting = _duplicated(_rows(key_hash, keep), keep=False)
    report["dropped_conflicting_labels"] = int(conflicting.sum())
    keep = keep[~conflicting]
    chunks = list(text.chunks)
    del text
    clean = pd.DataFrame({"text": _kept_text(chunks, keep), "label": labels.iloc[keep].to_numpy()})
    for column, values in metadata.items():
        clean[column] = values.iloc[keep].reset_index(drop=True)
    classes = require_classes(clean["label"], source, label_column)
    report.update(rows_kept=len(clean), class_counts={str(k): int(v) for k, v in clean["label"].value_counts().items()})
    dropped = {k: v for k, v in report.items() if k.startswith("dropped_") and v}
    if dropped:
        log.warning("%s: dropped rows %s", source, dropped)
    return CleanTable(frame=clean, classes=classes, report=report)


def comparison_key(texts: pd.Series) -> pd.Series:
    """Each text case-folded, with every run of spaces and punctuation made one space: texts
    with the same key are duplicates. A text of punctuation only (":)") is its own key."""
    chunk = pa.array(texts.astype("string"), type=pa.string())
    return pd.Series(_keys(chunk), index=texts.index, dtype=object)


# Python's [\W_]+ in RE2 (Arrow's regex engine, whose \W is ASCII only): neither a letter nor a digit.
NOT_WORD = r"[^\p{L}\p{N}]+"
HASH_CHUNK = 65_536
HASH_KEYS = ("glasswork-hash-1", "glasswork-hash-2")  # pandas' hash_array takes a 16-byte key


def _keys(chunk: pa.Array) -> np.ndarray:
    spaced = pc.utf8_trim(pc.replace_substring_regex(chunk, NOT_WORD, " "), " ")
    texts = chunk.to_numpy(zero_copy_only=False)
    keys = np.array([k.casefold() for k in spaced.to_numpy(zero_copy_only=False)], dtype=object)
    return np.where(keys == "", texts, keys)


def _scan(text: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk by chunk, of each trimmed text: whether it is empty, a 128-bit hash of it and one of
    its :func:`comparison_key` (two 64-bit columns each)."""
    # Filled in place: a list of chunks concatenated at the end would hold every hash twice.
    empty = np.empty(len(text), dtype=bool)
    text_hash = np.empty((len(text), 2), dtype=np.uint64)
    key_hash = np.empty((len(text), 2), dtype=np.uint64)
    for start in range(0, len(text), HASH_CHUNK):
        chunk = pc.utf8_trim_whitespace(text.slice(start, HASH_CHUNK).combine_chunks().fill_null(""))
        rows = slice(start, start + len(chunk))
        empty[rows] = pc.equal(chunk, "").to_numpy(zero_copy_only=False)
        text_hash[rows] = _hash128(chunk.to_numpy(zero_copy_only=False))
        key_hash[rows] = _hash128(_keys(chunk))
    return empty, text_hash, key_hash


def _kept_text(chunks: list[pa.Array], keep: np.ndarray) -> pd.Series:
    """The kept rows' texts (``keep``: ascending row numbers), trimmed, as Arrow strings. Each raw
    chunk is let go once its kept rows are copied: the text is never held twice over."""
    kept, start = [], 0
    for i, chunk in enumerate(chunks):
        rows = keep[(keep >= start) & (keep < start + len(chunk))] - start
        kept.append(pc.utf8_trim_whitespace(chunk.take(pa.array(rows)).fill_null("")))
        start += len(chunk)
        chunks[i] = None
    return pd.Series(pa.chunked_array(kept, type=pa.string()), dtype=pd.ArrowDtype(pa.string()))


def _hash128(values: np.ndarray) -> np.ndarray:
    return np.column_stack([pd.util.hash_array(values, hash_key=key, categorize=False) for key in HASH_KEYS])


def _duplicated(hashes: np.ndarray, codes: np.ndarray | None = None, keep: str | bool = "first") -> np.ndarray:
    """Rows equal to another on their hash (and label code), as ``DataFrame.duplicated`` says.

    Each 64-bit half is tested on its own (one hash set at a time, not a frame's factorized
    columns): a row wrongly called a duplicate would need a collision in both halves at once.
    """
    mix = np.uint64(0) if codes is None else codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    found = np.ones(len(hashes), dtype=bool)
    for half in (0, 1):
        found &= _sorted_duplicated(hashes[:, half] ^ mix, keep)
    return found


def _rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, without the copy when ``rows`` is every row (the common case)."""
    return values if len(rows) == len(values) else values[rows]


def _sorted_duplicated(values: np.ndarray, keep: str | bool) -> np.ndarray:
    """``Series.duplicated`` by a stable sort (two arrays of the input's size, no hash table)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    del values
    same_as_previous = np.empty(len(ordered), dtype=bool)
    same_as_previous[0:1] = False
    np.equal(ordered[1:], ordered[:-1], out=same_as_previous[1:])
    del ordered
    if keep is False:
        same_as_previous |= np.r_[same_as_previous[1:], False]
    found = np.empty(len(order), dtype=bool)
    found[order] = same_as_previous
    return found


def _arrow_text(texts: pd.Series) -> pa.ChunkedArray:
    """The text column as Arrow strings (no copy when it is one already)."""
    if isinstance(texts.dtype, pd.ArrowDtype) and pa.types.is_string(texts.dtype.pyarrow_dtype):
        return pa.Table.from_pandas(texts.to_frame(), preserve_index=False).column(0)
    return pa.chunked_array([pa.array(texts.astype("string"), type=pa.string())])


def as_classes(labels: pd.Series, source: str, column: str) -> pd.Series:
    """The label column as classes: Python values, whole-number floats as integers (a class
    ``1.0`` is the class ``1``: a batch labelled 1 must find it)."""
    if isinstance(labels.dtype, pd.ArrowDtype):
        labels = pd.Series(pa.Table.from_pandas(labels.to_frame(), preserve_index=False).column(0).to_pandas())
    _require_labels(labels, source, column)
    if pd.api.types.is_float_dtype(labels):
        fractional = np.flatnonzero((labels % 1 != 0).to_numpy())
        if len(fractional):
            lines = ", ".join(f"line {i + 2} ({labels.iloc[i]})" for i in fractional[:5])
            raise DataError(
                f"{source}: label column {column!r} holds numbers that are not whole at {lines}; labels are "
                "classes: expected whole numbers (1.0 is read as 1) or text"
            )
        labels = labels.astype("int64")
    return labels.reset_index(drop=True)


def _require_columns(header: list[str], source: str, text_column: str, label_column: str) -> None:
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in header:
            found = ", ".join(header) or "none"
            raise DataError(
                f"{source} has no {role} column {column!r} (columns found: {found}); "
                f"set data.{role}_column to one of them"
            )


def _require_slice_columns(
    header: list[str], source: str, text_column: str, label_column: str, columns: list[str]
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
        if column not in header:
            found = ", ".join(header)
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
    if isinstance(texts.dtype, pd.ArrowDtype) and pa.types.is_string(texts.dtype.pyarrow_dtype):
        return  # a CSV column read as text (and not copied to find out)
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


def require_classes(labels: pd.Series, source: str, column: str) -> list:
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
