"""Per-slice test metrics: where the model does worse than its overall accuracy says.

The test split is cut three ways: by length (tertiles of the word count), by the share of words
the model's tokenizer splits into pieces (tertiles of ``oov_share``: rare words, names,
misspellings), and by true class; and then by each metadata column the user kept
(``data.slice_columns``: source, language, date). Each slice gets its accuracy with a 95% Wilson
interval and the one-sided exact binomial p-value of an accuracy below the overall one; a slice is
*flagged* when that p-value, Holm-adjusted over all the slices, is at most ``ALPHA``: the chance
that any slice at all is flagged by chance alone stays within 5%, however many slices there are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import binomtest

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise error rate of the slice flags (Holm)
# Per metadata column, the most frequent values get a slice each and the rest one slice together:
# a column of 500 authors would otherwise give 500 slices of a few texts, unreadable in the plot
# and, in the registry's slice gate, a Bonferroni correction so strict that no slice could fail.
MAX_VALUES = 8
# Crossings of two slices (``length 21–78 words & true class rotten``) are tested when they hold at
# least this many texts, and at most this many of the flagged ones are kept, worst first.
CROSSING_MIN_SIZE = 30
MAX_CROSSINGS = 10


# Which descriptors are cut at their tertiles: column -> (slice name with {} for the range,
# scale, format). Texts by words and split words (glasswork.text_descriptors); images by
# brightness (glasswork.image_descriptors).
TEXT_SLICES = {
    "length_words": ("length {} words", 1, "{:.0f}"),
    "oov_share": ("words split into pieces {}%", 100, "{:.0f}"),
}
IMAGE_SLICES = {"brightness": ("brightness {}", 1, "{:.2f}")}


def define_slices(
    descriptors: pd.DataFrame,
    truth: np.ndarray,
    names: list[str],
    metadata: pd.DataFrame | None = None,
    by: dict[str, tuple[str, float, str]] | None = None,
) -> dict[str, np.ndarray]:
    """Named row masks over the split: tertiles of the ``descriptors`` columns named in ``by``
    (:data:`TEXT_SLICES` by default), true class, and ``metadata`` (the split's own columns
    besides the input and label, see :func:`column_slices`)."""
    slices: dict[str, np.ndarray] = {}
    for column, (name, scale, fmt) in (TEXT_SLICES if by is None else by).items():
        slices |= _tertiles(scale * descriptors[column].to_numpy(), name, fmt.format)
    slices |= {f"true class {name}": truth == k for k, name in enumerate(names)}
    if metadata is not None:
        for column in metadata.columns:
            slices |= column_slices(metadata[column])
    return {name: rows for name, rows in slices.items() if rows.any()}


def column_slices(values: pd.Series, like: pd.Series | None = None) -> dict[str, np.ndarray]:
    """The slices of one metadata column, named after it.

    A number or date column with more than ``MAX_VALUES`` distinct values is cut at its tertiles
    (``year ≤ 1998``, ``1998 < year ≤ 2004``, ``year > 2004``); any other column gets one slice
    per value (``source = web``), for its ``MAX_VALUES`` most frequent values, and one for the
    rest together (``source: 3 other values``). Missing values are a slice of their own
    (``source missing``).

    With ``like`` (the test split's column, in the same type), numbers and dates are cut where
    ``like`` is cut, so that a batch's slice has the same rows' worth of range, and the same name,
    as the test split's slice it is set beside: cut on its own, a later batch's tertiles would name
    other ranges and find no test-split accuracy to compare with.
    """
    column = str(values.name)
    present = values.notna().to_numpy()
    known = values[present]
    defining = (values if like is None else like).dropna()
    numeric = pd.api.types.is_numeric_dtype(defining) and not pd.api.types.is_bool_dtype(defining)
    dates = pd.api.types.is_datetime64_any_dtype(defining)
    if (numeric or dates) and defining.nunique() > MAX_VALUES:
        within = _ranges(_numbers(known)[0], *_numbers(defining), column)
    else:
        text = known.astype(str).str.slice(0, 40).to_numpy()
        counts = pd.Series(text).value_counts(sort=True)
        within = {f"{column} = {value}": text == value for value in counts.index[:MAX_VALUES]}
        if len(counts) > MAX_VALUES:
            within[f"{column}: {len(counts) - MAX_VALUES} other values"] = ~np.isin(text, counts.index[:MAX_VALUES])
    slices = {}
    for name, rows in within.items():
        slices[name] = np.zeros(len(values), bool)
        slices[name][present] = rows
    slices[f"{column} missing"] = ~present
    return slices


def _numbers(values: pd.Series) -> tuple[np.ndarray, Callable[[float], str]]:
    """A number or date column as floats, and how to write one back."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _date_numbers(pd.DatetimeIndex(values))
    return values.to_numpy(float), "{:.6g}".format


def _ranges(
    values: np.ndarray, defining: np.ndarray, fmt: Callable[[float], str], column: str
) -> dict[str, np.ndarray]:
    """``values`` cut at the tertiles of ``defining``, named by the cut points. The cut points are
    values that occur (``inverted_cdf``), so that ``year ≤ 1998`` is exact for whole years."""
    edges = np.unique(np.quantile(defining, [1 / 3, 2 / 3], method="inverted_cdf"))
    bins = np.digitize(values, edges, right=True)  # bin b holds values in (edges[b-1], edges[b]]
    names = [f"{column} ≤ {fmt(edges[0])}"]
    names += [f"{fmt(low)} < {column} ≤ {fmt(high)}" for low, high in pairwise(edges)]
    names += [f"{column} > {fmt(edges[-1])}"]
    return {name: bins == b for b, name in enumerate(names)}


def _date_numbers(stamps: pd.DatetimeIndex) -> tuple[np.ndarray, Callable[[float], str]]:
    """Dates as numbers to cut at tertiles, and how to write one back (days, or minutes when the
    column holds times of day)."""
    if stamps.tz is not None:
        stamps = stamps.tz_convert(None)
    stamps = stamps.as_unit("ns")
    pattern = "%Y-%m-%d" if (stamps == stamps.normalize()).all() else "%Y-%m-%d %H:%M"
    return stamps.asi8.astype(float), lambda value: pd.Timestamp(int(value)).strftime(pattern)


def _tertiles(values: np.ndarray, title: str, fmt: Callable[[float], str]) -> dict[str, np.ndarray]:
    """Up to three slices cut at the tertiles of ``values`` (fewer where values repeat)."""
    edges = np.unique(np.quantile(values, [1 / 3, 2 / 3]))
    bins = np.digitize(values, edges, right=True)  # bin b holds values in (edges[b-1], edges[b]]
    slices = {}
    for b in np.unique(bins):
        rows = bins == b
        low, high = values[rows].min(), values[rows].max()
        span = fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"
        slices[title.replace("{}", span)] = rows  # not format(): a column name may hold braces
    return slices


def slice_metrics(slices: dict[str, np.ndarray], truth: np.ndarray, probs: np.ndarray) -> dict:
    """Per slice: size, accuracy with its Wilson interval, mean confidence, the gap to the
    overall accuracy, and the p-value of an accuracy below it (``p_value``; ``p_holm``: adjusted
    over the slices); ``flagged`` where ``p_holm`` is at most ``ALPHA``."""
    right = probs.argmax(axis=1) == truth
    overall = float(right.mean())
    rows: list[dict] = []
    p_values = []
    for name, chosen in slices.items():
        n, hits = int(chosen.sum()), int(right[chosen].sum())
        p_values.append(float(binomtest(hits, n, overall, alternative="less").pvalue))
        interval = binomtest(hits, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        rows.append(
            {
                "slice": name,
                "n": n,
                "accuracy": hits / n,
                "accuracy_low": float(interval.low),
                "accuracy_high": float(interval.high),
                "mean_confidence": float(probs[chosen].max(axis=1).mean()),
                "gap": hits / n - overall,
                "p_value": p_values[-1],
            }
        )
    for row, p_holm in zip(rows, holm(p_values), strict=True):
        row |= {"p_holm": float(p_holm), "flagged": bool(p_holm <= ALPHA)}
    crossings = crossed_slices(slices, right, overall)
    return {
        "overall_accuracy": overall,
        "confidence_level": CONFIDENCE,
        "alpha": ALPHA,
        "correction": "holm",
        "slices": rows,
        "crossings": crossings,
    }


def holm(p_values: list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: the smallest times m, the next times m - 1, ..., never
    below the one before. The same as statsmodels' ``multipletests(method="holm")``, which runs a
    full ``gc.collect()`` on every call (a third of a second in a process holding a model)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def crossed_slices(slices: dict[str, np.ndarray], right: np.ndarray, overall: float) -> dict:
    """Pairs of slices whose crossing does significantly worse than either of them and than the
    overall accuracy: where two conditions meet (long texts *from* one source), a weakness that a
    slice at a time cannot show.

    Every pair with at least ``CROSSING_MIN_SIZE`` texts is tested (pairs of one column's slices
    are empty), with a Wilson interval at a Bonferroni-corrected level over the pairs tested: a
    few hundred crossings would otherwise flag some by chance alone. The interval must lie wholly
    below the weaker slice's accuracy too, or every large part of a weak slice (``true class
    rotten`` and any length) would be flagged for the weakness the slice alone already shows.
    Reported, not gated: the registry's slice gate stays on single slices.
    """
    names = list(slices)
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            rows = slices[first] & slices[second]
            if rows.sum() >= CROSSING_MIN_SIZE:
                pairs.append((first, second, rows))
    level = 1 - (1 - CONFIDENCE) / max(1, len(pairs))
    flagged: list[dict] = []
    for first, second, rows in pairs:
        n, hits = int(rows.sum()), int(right[rows].sum())
        parents = {name: float(right[slices[name]].mean()) for name in (first, second)}
        if hits / n >= min(parents.values()):
            continue  # no worse than its weaker slice: the slice alone already says it
        interval = binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
        if interval.high < min(overall, *parents.values()):
            flagged.append(
                {
                    "slice": f"{first} & {second}",
                    "n": n,
                    "accuracy": hits / n,
                    "accuracy_low": float(interval.low),
                    "accuracy_high": float(interval.high),
                    "gap": hits / n - overall,
                    "parents": parents,
                    "flagged": True,
                }
            )
    flagged.sort(key=lambda row: row["accuracy"])
    return {
        "min_size": CROSSING_MIN_SIZE,
        "n_tested": len(pairs),
        "confidence_level": level,
        "n_flagged": len(flagged),
        "flagged": flagged[:MAX_CROSSINGS],
    }


def slice_log_metrics(result: dict) -> dict[str, float]:
    """MLflow metrics: ``test_slice/<slice>/accuracy`` and the number of flagged slices."""
    metrics = {f"test_slice/{metric_key(row['slice'])}/accuracy": row["accuracy"] for row in result["slices"]}
    metrics["test_slice/n_flagged"] = float(sum(row["flagged"] for row in result["slices"]))
    metrics["test_slice/n_flagged_crossings"] = float(result["crossings"]["n_flagged"])
    return metrics


def metric_key(name: str) -> str:
    """A slice's name as a piece of an MLflow metric name (letters, digits, ``_ - .``); the signs
    of a range become words, so that ``score ≤ 0`` and ``score > 0`` stay two metrics."""
    for sign, word in (("–", "-"), ("≤", " le "), ("<", " lt "), (">", " gt ")):
        name = name.replace(sign, word)
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_")


def slices_figure(result: dict):
    """Accuracy per slice with its interval against the overall accuracy; flagged slices in red,
    then the flagged crossings of two slices (hatched, with their corrected intervals)."""
    rows = (result["slices"] + result["crossings"]["flagged"])[::-1]  # the first bar is drawn at the bottom
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(rows) + 1.4))
    y = np.arange(len(rows))
    accuracy = np.array([r["accuracy"] for r in rows])
    errors = np.array([[r["accuracy"] - r["accuracy_low"], r["accuracy_high"] - r["accuracy"]] for r in rows]).T
    colours = ["#cf222e" if r["flagged"] else "#1f77b4" for r in rows]
    bars = ax.barh(y, accuracy, xerr=errors, color=colours, alpha=0.8, capsize=3)
    for bar, row in zip(bars, rows, strict=True):
        if "parents" in row:
            bar.set_hatch("//")
    ax.axvline(result["overall_accuracy"], color="k", ls=":", lw=1)
    ax.set_yticks(y, [f"{r['slice']} (n={r['n']})" for r in rows])
    ax.set_xlim(0, 1)
    level = round(100 * result["confidence_level"])
    xlabel = f"accuracy, {level}% Wilson interval (red: below overall, Holm-adjusted p ≤ {result['alpha']:g})"
    crossings = result["crossings"]
    if crossings["flagged"]:
        xlabel += (
            f"\nhatched: crossings worse than both slices ({crossings['n_flagged']} of "
            f"{crossings['n_tested']}, {100 * crossings['confidence_level']:.2f}%)"
        )
    ax.set(
        xlabel=xlabel,
        title=f"Slices (test): overall accuracy {result['overall_accuracy']:.3f} (dotted)",
    )
    return fig


def compare_slices(
    slices: dict[str, np.ndarray], champion_right: np.ndarray, challenger_right: np.ndarray, alpha: float
) -> list[dict]:
    """Per slice, the challenger against the champion on the *same* texts: the texts it gets
    wrong that the champion got right (``lost``) and the reverse (``won``), and McNemar's exact
    one-sided test that it is worse. A slice ``regressed`` when that p-value is at or below
    ``alpha`` over the number of slices (Bonferroni: eight slices, eight chances of a fluke)."""
    rows = []
    for name, chosen in slices.items():
        lost = int((chosen & champion_right & ~challenger_right).sum())
        won = int((chosen & ~champion_right & challenger_right).sum())
        # Only the discordant texts carry information; under "no worse", each is a fair coin.
        p_value = float(binomtest(lost, lost + won, 0.5, alternative="greater").pvalue) if lost + won else 1.0
        rows.append(
            {
                "slice": name,
                "n": int(chosen.sum()),
                "champion_accuracy": float(champion_right[chosen].mean()),
                "accuracy": float(challenger_right[chosen].mean()),
                "lost": lost,
                "won": won,
                "p_value": p_value,
                "regressed": p_value <= alpha / len(slices),
            }
        )
    return rows
