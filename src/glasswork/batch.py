"""An incoming batch: one file or a folder of files (csv, parquet, jsonl), read as a stream.

A batch may hold millions of rows, so nothing here loads it whole: pyarrow reads it chunk by
chunk, the drift test gets a uniform random sample of at most ``sample_size`` rows (a
reservoir kept with random keys), and only counts are kept of the rest. A file that cannot be
read, or lacks the text column, is skipped and reported; the others are processed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from glasswork.data.sources import EncodingChecked, broken_json_line, require_unique
from glasswork.errors import DataError, first_line

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json"}
CHUNK_ROWS = 65_536


@dataclass
class Batch:
    """What was read: the files, those skipped and why, row counts, and the sample.

    ``sample`` has the columns ``text``, ``file``, ``row`` and, when the batch carries labels,
    ``label`` (as read: strings, empty where a row has none).
    """

    source: Path
    files: list[Path]
    skipped: dict[str, str] = field(default_factory=dict)
    n_rows: int = 0
    n_missing_text: int = 0
    has_labels: bool = False
    sample: pd.DataFrame = field(default_factory=pd.DataFrame)
    items: list[Path] = field(default_factory=list)  # an image batch: its images (files: the folder)

    def summary(self) -> dict:
        return {
            "source": str(self.source),
            "files": [str(f) for f in self.files],
            "skipped": self.skipped,
            "n_rows": self.n_rows,
            "n_missing_text": self.n_missing_text,
            "has_labels": self.has_labels,
            "n_sampled": len(self.sample),
        }


def batch_files(source: Path) -> list[Path]:
    """The data files of a batch: the file itself, or the folder's files in name order."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    raise DataError(f"batch {source} does not exist: give a data file or a folder of them")


def stream(
    path: Path, text_column: str, label_column: str, extra: tuple[str, ...] = (), encoding: str = "utf-8"
) -> Iterator[pa.Table]:
    """Chunks of ``path`` with ``text`` and ``label`` (both as strings; the label missing where the
    file has none), then the ``extra`` columns as they are (CSV: as strings), all missing where the
    file lacks one: every file of a batch gives the same columns, labelled or not.

    Raises:
        DataError: naming the line of a byte not in ``encoding``, or of a broken JSON line.
    """
    try:
        yield from _stream(path, text_column, label_column, extra, encoding)
    except pa.ArrowInvalid as err:
        raise DataError(_located(path, encoding) or f"{path}: {first_line(err)}") from None


def whole_numbers(labels: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Labels written ``1.0`` as ``1``: prepare reads whole-number float labels as integers, so a
    batch from a spreadsheet that wrote 1.0 must find the class 1."""
    return pc.replace_substring_regex(labels, r"^\s*([+-]?\d+)\.0*\s*$", r"\1")


def _located(path: Path, encoding: str) -> str | None:
    """Where a file Arrow could not read goes wrong, in words: a byte not in ``encoding`` or a line
    that is not JSON (read again only on this error path)."""
    try:
        with EncodingChecked(path, encoding, "monitor.encoding") as raw:
            while raw.read(1 << 20):
                pass
    except DataError as err:
        return str(err)
    return broken_json_line(path, encoding) if FORMATS.get(path.suffix.lower()) == "json" else None


def _stream(
    path: Path, text_column: str, label_column: str, extra: tuple[str, ...], encoding: str
) -> Iterator[pa.Table]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {path.suffix!r} (expected one of {sorted(FORMATS)})")
    columns = _columns(path, fmt, encoding)
    require_unique(columns, path)
    if text_column not in columns:
        raise DataError(
            f"{path} has no text column {text_column!r} (columns found: {columns}); "
            "name the right one with monitor.text_column=..."
        )
    present = [c for c in extra if c in columns]
    wanted = [text_column] + ([label_column] if label_column in columns else [])
    for chunk in _chunks(path, fmt, wanted + present, encoding):
        names = ["text", "label"][: len(wanted)]
        renamed = {new: pc.cast(chunk.column(old), pa.string()) for new, old in zip(names, wanted, strict=True)}
        renamed["label"] = (
            whole_numbers(renamed["label"]) if "label" in renamed else pa.nulls(chunk.num_rows, pa.string())
        )
        yield pa.table(renamed | {c: chunk.column(c) if c in present else pa.nulls(chunk.num_rows) for c in extra})


def _columns(path: Path, fmt: str, encoding: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names
    if fmt == "csv":
        import pyarrow.csv as pcsv

        return list(pcsv.open_csv(path, read_options=_csv_options(encoding)).schema.names)
    return _read_json(path, encoding).column_names


def _csv_options(encoding: str, **options):
    import pyarrow.csv as pcsv

    # Arrow checks UTF-8 itself; any other encoding it decodes as it reads.
    return pcsv.ReadOptions(**options) if _is_utf8(encoding) else pcsv.ReadOptions(encoding=encoding, **options)


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("_", "-").lower() in ("utf-8", "utf8")


def _chunks(path: Path, fmt: str, columns: list[str], encoding: str) -> Iterator[pa.Table | pa.RecordBatch]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        options = pcsv.ConvertOptions(include_columns=columns, column_types=dict.fromkeys(columns, pa.string()))
        reader = pcsv.open_csv(path, convert_options=options, read_options=_csv_options(encoding, block_size=1 << 24))
        yield from reader
    else:
        yield from _read_json(path, encoding).select(columns).to_batches(CHUNK_ROWS)


def _read_json(path: Path, encoding: str) -> pa.Table:
    import pyarrow.json as pjson

    if _is_utf8(encoding):
        return pjson.read_json(path)
    with path.open("rb") as file:
        return pjson.read_json(io.BytesIO(file.read().decode(encoding).encode("utf-8")))


class _Reservoir:
    """A uniform sample of at most ``size`` rows out of a stream: each row draws a random key and
    the ``size`` smallest keys are kept (only rows that beat the current cut are converted)."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.rows: pd.DataFrame | None = None

    def offer(self, table: pa.Table, file: str, start: int) -> None:
        keys = self.rng.random(table.num_rows)
        cut = np.partition(self.keys, self.size - 1)[self.size - 1] if len(self.keys) >= self.size else np.inf
        chosen = np.flatnonzero(keys < cut)
        if not len(chosen):
            return
        rows = table.take(pa.array(chosen)).to_pandas().assign(file=file, row=start + chosen)
        merged_keys = np.concatenate([self.keys, keys[chosen]])
        merged = pd.concat([self.rows, rows], ignore_index=True) if self.rows is not None else rows
        keep = np.argsort(merged_keys, kind="stable")[: self.size]
        self.keys, self.rows = merged_keys[keep], merged.iloc[keep].reset_index(drop=True)

    def drop(self, file: str) -> None:
        """Forget the rows of a file that turned out unreadable part-way."""
        if self.rows is not None:
            keep = (self.rows["file"] != file).to_numpy()
            self.keys, self.rows = self.keys[keep], self.rows[keep].reset_index(drop=True)


def read_batch(
    source: Path,
    *,
    text_column: str,
    label_column: str,
    sample_size: int,
    seed: int,
    extra: tuple[str, ...] = (),
    encoding: str = "utf-8",
) -> Batch:
    """Stream every file of ``source``; count rows, keep a uniform sample (with the ``extra``
    columns), skip what cannot be read.

    Raises:
        DataError: the batch does not exist, no file could be read, or it has no rows.
    """
    files = batch_files(source)
    batch = Batch(Path(source), files=[])
    reservoir = _Reservoir(sample_size, seed)
    for path in files:
        try:
            n_before = batch.n_rows
            for chunk in stream(path, text_column, label_column, extra, encoding):
                text = chunk.column("text")
                batch.n_missing_text += int(pc.sum(pc.or_(pc.is_null(text), pc.equal(text, ""))).as_py() or 0)
                reservoir.offer(chunk, str(path), batch.n_rows - n_before)
                batch.n_rows += chunk.num_rows
                batch.has_labels |= chunk.column("label").null_count < chunk.num_rows
        except (DataError, pa.ArrowException, OSError, UnicodeDecodeError) as err:
            batch.n_rows = n_before
            reservoir.drop(str(path))
            batch.skipped[str(path)] = str(err).splitlines()[0][:300]
            log.warning("monitor: skipped %s: %s", path, batch.skipped[str(path)])
            continue
        batch.files.append(path)
    if not batch.files:
        reasons = "; ".join(f"{f}: {why}" for f, why in batch.skipped.items()) or "the folder is empty"
        raise DataError(f"batch {source}: no readable data file ({reasons})")
    if batch.n_rows == 0:
        raise DataError(f"batch {source} has no rows ({', '.join(map(str, batch.files))}): nothing to monitor")
    sample = reservoir.rows if reservoir.rows is not None else pd.DataFrame(columns=["text", "file", "row"])
    batch.sample = sample.assign(text=sample["text"].fillna(""))
    if batch.has_labels:
        batch.sample["label"] = batch.sample.get("label", pd.Series(dtype=str)).fillna("")
    return batch
