"""A table of features for ``task=tabular_classification``: read, checked and typed, and the
preprocessing (scaling, category encoding, missing values) fitted on the training split only and
saved with the model.

Rows are numbered as a spreadsheet shows them: the header is line 1, the first row line 2.
The registered model imports this file on its own (no Glasswork installed): it needs only numpy
and pandas at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

try:
    from glasswork.errors import ConfigError, DataError
except ImportError:  # inside a registered model, beside serving_tables.py (code_paths): plain errors
    ConfigError = DataError = ValueError  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

OTHER = "(other)"  # a category the training split never held (or held too rarely), and a missing one
NUMERIC_SHARE = 0.95  # a column whose values are numbers but for a few is a numeric column with typos
RESERVED = ("label", "path")  # the prepared splits' own column names

# Fair's survey of 6,366 women (Redbook, 1974), shipped inside statsmodels: occupation codes as the
# dataset's notes name them. The label: whether any time was spent in extramarital affairs.
OCCUPATIONS = {
    1: "student",
    2: "farming, semi-skilled or unskilled",
    3: "white-collar",
    4: "teacher, nurse, writer, technician or skilled",
    5: "managerial or business",
    6: "professional with advanced degree",
}


def fair() -> pd.DataFrame:
    """statsmodels' ``fair`` dataset as a table of 8 features (6 numeric, 2 categorical) and the
    label ``affair`` (``yes`` for 32% of the rows)."""
    from statsmodels.datasets import fair as dataset

    frame = dataset.load_pandas().data
    table = frame.drop(columns=["affairs"]).copy()
    for column in ("occupation", "occupation_husb"):
        table[column] = frame[column].astype(int).map(OCCUPATIONS)
    table["affair"] = np.where(frame["affairs"] > 0, "yes", "no")
    return table.reset_index(drop=True)


@dataclass
class Columns:
    """The features of a table, by kind, in the order the model reads them."""

    numeric: list[str]
    categorical: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def feature_names(
    header: Sequence[str], source: str, label_column: str, feature_columns: Sequence[str] | None
) -> list[str]:
    """The feature columns ``data.feature_columns`` names (default: every column but the label),
    checked against the file's header."""
    header = [str(c) for c in header]
    if label_column not in header:
        raise DataError(
            f"{source} has no label column {label_column!r} (columns found: {', '.join(header)}); "
            "set data.label_column to one of them"
        )
    if feature_columns is None:
        names = [c for c in header if c != label_column]
    else:
        names = [str(c) for c in feature_columns]
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            raise ConfigError(f"data.feature_columns lists {', '.join(map(repr, twice))} more than once")
        if label_column in names:
            raise ConfigError(
                f"data.feature_columns includes the label column {label_column!r}: a model that reads its "
                "label learns nothing useful; leave it out"
            )
        missing = [c for c in names if c not in header]
        if missing:
            raise DataError(
                f"{source} has no feature column(s) {', '.join(map(repr, missing))} (columns found: "
                f"{', '.join(header)}); fix data.feature_columns, or null for every column but the label"
            )
    clash = [c for c in names if c in RESERVED]
    if clash:
        raise DataError(
            f"{source}: a feature column is named {clash[0]!r}, a name the prepared splits keep for their own "
            "column; rename it in the file"
        )
    if not names:
        raise DataError(f"{source}: no feature columns besides the label {label_column!r}")
    return names


def parse_numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The column as numbers, and the rows whose written value is not one."""
    as_number = pd.to_numeric(values.astype("string").str.strip().replace("", pd.NA), errors="coerce")
    written = values.notna().to_numpy() & (values.astype("string").str.strip() != "").fillna(False).to_numpy()
    return as_number.astype("float64"), np.flatnonzero(written & as_number.isna().to_numpy())


def bad_numbers(values: pd.Series, rows: np.ndarray, source: str, column: str, why: str) -> DataError:
    shown = ", ".join(f"line {i + 2} ({values.iloc[i]!r})" for i in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return DataError(
        f"{source}: numeric column {column!r} holds text at {shown}{more} ({why}); fix those cells, leave them "
        f"blank for a missing value, or list {column!r} in data.categorical_columns"
    )


def type_columns(
    frame: pd.DataFrame,
    names: list[str],
    source: str,
    numeric_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, Columns, dict]:
    """Each feature as a number (float, missing as NaN) or a category (text, missing as NA).

    Types are inferred: numbers and dates' numbers are numeric, flags and text are categories. A
    text column whose values are numbers but for a few (at least 95%) is a numeric column with
    typos: an error naming them, not a column of a thousand categories. ``data.numeric_columns``
    and ``data.categorical_columns`` override the guess (a code like 1-6 is a category).

    Returns the typed frame, the columns by kind and what was dropped: a column with a single
    value (it tells the model nothing: dropped and said). A column with no value at all is an error.
    """
    for setting, listed in (("numeric_columns", numeric_columns), ("categorical_columns", categorical_columns)):
        unknown = [c for c in listed if c not in names]
        if unknown:
            raise ConfigError(f"data.{setting} names {', '.join(map(repr, unknown))}, not among the features {names}")
    both = sorted(set(numeric_columns) & set(categorical_columns))
    if both:
        raise ConfigError(f"{', '.join(map(repr, both))} is in both data.numeric_columns and data.categorical_columns")
    typed, kinds, constant = {}, {}, []
    for column in names:
        typed[column], kinds[column] = _typed(frame[column].reset_index(drop=True), source, column,
                                              column in numeric_columns, column in categorical_columns)  # fmt: skip
        if typed[column].nunique(dropna=True) <= 1:
            constant.append(column)
    kept = [c for c in names if c not in constant]
    if constant:
        log.warning("prepare: column(s) %s hold a single value and are dropped (they tell the model nothing)", constant)
    if not kept:
        raise DataError(
            f"{source}: every feature column holds a single value ({', '.join(constant)}); nothing to learn"
        )
    columns = Columns([c for c in kept if kinds[c] == "numeric"], [c for c in kept if kinds[c] == "categorical"])
    report = {
        "features": {"numeric": columns.numeric, "categorical": columns.categorical},
        "dropped_constant_columns": constant,
        "missing_values": {c: int(typed[c].isna().sum()) for c in kept if typed[c].isna().any()},
    }
    return pd.DataFrame({c: typed[c] for c in kept}), columns, report


def _typed(values: pd.Series, source: str, column: str, numeric: bool, categorical: bool) -> tuple[pd.Series, str]:
    """One feature column as numbers or categories (see :func:`type_columns`)."""
    if values.isna().all() or (values.astype("string").str.strip() == "").fillna(True).all():
        raise DataError(
            f"{source}: feature column {column!r} has no value in any of its {len(values)} rows; drop it from "
            "the file or from data.feature_columns"
        )
    kind = pd.api.types
    if categorical or (not numeric and kind.is_bool_dtype(values)):
        return as_category(values), "categorical"
    if kind.is_numeric_dtype(values):
        return values.astype("float64"), "numeric"
    numbers, bad = parse_numbers(values)
    written = int(values.notna().sum())
    if numeric and len(bad):
        raise bad_numbers(values, bad, source, column, "listed in data.numeric_columns")
    if len(bad) and (written - len(bad)) >= NUMERIC_SHARE * written:
        raise bad_numbers(values, bad, source, column, f"{written - len(bad)} of its {written} values are numbers")
    return (as_category(values), "categorical") if len(bad) else (numbers, "numeric")


def as_category(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "").astype(object).where(text.notna() & (text != ""), None)


def check_label_count(labels: pd.Series, source: str, column: str, max_classes: int) -> None:
    """Refuse a numeric label with more classes than ``data.max_classes``: a regression target."""
    distinct = labels.nunique()
    if distinct > max_classes and pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        raise DataError(
            f"{source}: label column {column!r} holds {distinct} different numbers, more than data.max_classes="
            f"{max_classes}: probably a regression target, which this task does not fit. Bin it into classes, "
            "or raise data.max_classes if these are classes"
        )


@dataclass
class Preprocessor:
    """Numeric columns standardised (missing -> the training median), categories one-hot over
    the training split's (up to ``max_categories`` most frequent; any other, and a missing one,
    is ``(other)``). Fitted on the training split only; saved as JSON beside the weights."""

    numeric: dict[str, dict[str, float]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)  # each category column's most frequent, by position

    @classmethod
    def fit(cls, train: pd.DataFrame, columns: Columns, max_categories: int = 50) -> Preprocessor:
        numeric = {}
        for column in columns.numeric:
            values = train[column].astype("float64")
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            std = float(filled.std(ddof=0))
            numeric[column] = {"median": median, "mean": float(filled.mean()), "std": std if std > 1e-12 else 1.0}
        categorical, modes = {}, {}
        for column in columns.categorical:
            counts = train[column].dropna().astype(str).value_counts()
            categorical[column] = [OTHER, *sorted(counts.index[:max_categories].tolist())]
            modes[column] = categorical[column].index(counts.index[0]) if len(counts) else 0
        return cls(numeric, categorical, modes)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def blocks(self) -> dict[str, slice]:
        """Each column's positions in the model's input vector."""
        out, start = {}, 0
        for column in self.numeric:
            out[column], start = slice(start, start + 1), start + 1
        for column, categories in self.categorical.items():
            out[column], start = slice(start, start + len(categories)), start + len(categories)
        return out

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categorical.values())

    def require_columns(self, frame: pd.DataFrame, source: str) -> None:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"{source} has no column(s) {', '.join(map(repr, missing))}, which the model reads "
                f"(its features: {', '.join(self.columns)})"
            )

    def transform(self, frame: pd.DataFrame, source: str = "the table") -> tuple[np.ndarray, dict[str, int]]:
        """The model's input for each row (float32), and per categorical column how many values
        the training split never held (each read as ``(other)``). Columns in any order; extra
        columns are ignored; a missing one is an error naming it."""
        self.require_columns(frame, source)
        out = np.zeros((len(frame), self.width), dtype=np.float32)
        unseen: dict[str, int] = {}
        blocks = self.blocks
        for column, stats in self.numeric.items():
            values, bad = parse_numbers(frame[column]) if not pd.api.types.is_numeric_dtype(frame[column]) else (
                frame[column].astype("float64"), np.array([], dtype=int))  # fmt: skip
            if len(bad):
                raise bad_numbers(frame[column].reset_index(drop=True), bad, source, column, "the model reads numbers")
            filled = values.fillna(stats["median"]).to_numpy()
            out[:, blocks[column].start] = (filled - stats["mean"]) / stats["std"]
        for column, categories in self.categorical.items():
            index = {c: i for i, c in enumerate(categories)}
            text = as_category(frame[column])
            codes = np.array([index.get(str(v), 0) if v is not None else 0 for v in text], dtype=np.int64)
            new = int(sum(1 for v in text if v is not None and str(v) not in index))
            if new:
                unseen[column] = new
            out[np.arange(len(frame)), blocks[column].start + codes] = 1.0
        return out, unseen

    def fill_row(self) -> np.ndarray:
        """The input of a row at the training mean of each numeric column and the most frequent
        category of each categorical one: what a "deleted" column is replaced by."""
        row = np.zeros(self.width, dtype=np.float32)  # standardised means are 0
        for column, block in self.blocks.items():
            if column in self.categorical:
                row[block.start + self.modes.get(column, 0)] = 1.0
        return row

    def to_json(self) -> dict:
        """The fitted values, with the columns' order (which is the model's input order) written
        out: JSON files here are written with sorted keys."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "modes": self.modes,
            "order": {"numeric": list(self.numeric), "categorical": list(self.categorical)},
        }

    @classmethod
    def from_json(cls, data: dict) -> Preprocessor:
        order = data["order"]
        return cls(
            {c: data["numeric"][c] for c in order["numeric"]},
            {c: data["categorical"][c] for c in order["categorical"]},
            data.get("modes", {}),
        )
