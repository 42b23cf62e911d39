"""Per-slice test metrics: where the model does worse than its overall accuracy says.

The test split is cut three ways: by length (tertiles of the word count), by the share of words
the model's tokenizer splits into pieces (tertiles of ``oov_share``: rare words, names,
misspellings), and by true class. Each slice gets its accuracy with a 95% Wilson interval; a
slice is *flagged* when the whole interval lies below the overall accuracy, so that a small slice
is not flagged by chance alone.
"""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import binomtest

CONFIDENCE = 0.95


def define_slices(descriptors: pd.DataFrame, truth: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Named row masks over the split (``descriptors`` from :func:`glasswork.text_descriptors`)."""
    slices = _tertiles(descriptors["length_words"].to_numpy(), "length {} words", "{:.0f}")
    slices |= _tertiles(100 * descriptors["oov_share"].to_numpy(), "words split into pieces {}%", "{:.0f}")
    slices |= {f"true class {name}": truth == k for k, name in enumerate(names)}
    return {name: rows for name, rows in slices.items() if rows.any()}


def _tertiles(values: np.ndarray, title: str, number: str) -> dict[str, np.ndarray]:
    """Up to three slices cut at the tertiles of ``values`` (fewer where values repeat)."""
    edges = np.unique(np.quantile(values, [1 / 3, 2 / 3]))
    bins = np.digitize(values, edges, right=True)  # bin b holds values in (edges[b-1], edges[b]]
    slices = {}
    for b in np.unique(bins):
        rows = bins == b
        low, high = values[rows].min(), values[rows].max()
        span = number.format(low) if low == high else f"{number.format(low)}–{number.format(high)}"
        slices[title.format(span)] = rows
    return slices


def slice_metrics(slices: dict[str, np.ndarray], truth: np.ndarray, probs: np.ndarray) -> dict:
    """Per slice: size, accuracy with its Wilson interval, mean confidence, and the gap to the
    overall accuracy; ``flagged`` where the interval lies wholly below the overall accuracy."""
    right = probs.argmax(axis=1) == truth
    overall = float(right.mean())
    rows = []
    for name, chosen in slices.items():
        n, hits = int(chosen.sum()), int(right[chosen].sum())
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
                "flagged": bool(interval.high < overall),
            }
        )
    return {"overall_accuracy": overall, "confidence_level": CONFIDENCE, "slices": rows}


def slice_log_metrics(result: dict) -> dict[str, float]:
    """MLflow metrics: ``test_slice/<slice>/accuracy`` and the number of flagged slices."""
    metrics = {f"test_slice/{_key(row['slice'])}/accuracy": row["accuracy"] for row in result["slices"]}
    metrics["test_slice/n_flagged"] = float(sum(row["flagged"] for row in result["slices"]))
    return metrics


def _key(name: str) -> str:
    # MLflow metric names take letters, digits, _ - . / and spaces; keep them short and plain.
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name.replace("–", "-")).strip("_")


def slices_figure(result: dict):
    """Accuracy per slice with its interval against the overall accuracy; flagged slices in red."""
    rows = result["slices"][::-1]  # matplotlib draws the first bar at the bottom
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(rows) + 1.4))
    y = np.arange(len(rows))
    accuracy = np.array([r["accuracy"] for r in rows])
    errors = np.array([[r["accuracy"] - r["accuracy_low"], r["accuracy_high"] - r["accuracy"]] for r in rows]).T
    colours = ["#cf222e" if r["flagged"] else "#1f77b4" for r in rows]
    ax.barh(y, accuracy, xerr=errors, color=colours, alpha=0.8, capsize=3)
    ax.axvline(result["overall_accuracy"], color="k", ls=":", lw=1)
    ax.set_yticks(y, [f"{r['slice']} (n={r['n']})" for r in rows])
    ax.set_xlim(0, 1)
    level = round(100 * result["confidence_level"])
    ax.set(
        xlabel=f"accuracy, {level}% Wilson interval (red: wholly below overall)",
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
