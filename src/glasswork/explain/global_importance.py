"""Global explanations: which words push the model towards each class across many texts, and
how the attribution mass over words moves between two batches (explanation drift).

Both rest on integrated gradients run over many texts at once, with fewer steps than the probe
texts get (the convergence delta is reported so the approximation stays visible), on batches
sorted by length so that little compute goes into padding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp
from tqdm.auto import tqdm

from glasswork.explain.attributions import TokenAttribution, integrated_gradients
from glasswork.explain.faithfulness import SPECIAL
from glasswork.explain.gate import whole_words


def attribute_many(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    max_length: int,
    n_steps: int,
    token_budget: int | None,
    texts_per_batch: int = 64,
    progress: bool = True,
) -> list[TokenAttribution]:
    """Integrated gradients for every text, in input order (computed in length-sorted batches)."""
    labels = list(labels) if labels is not None else [0] * len(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out: list[TokenAttribution | None] = [None] * len(texts)
    starts = range(0, len(texts), texts_per_batch)
    for start in tqdm(starts, desc="integrated gradients", unit="batch", disable=not progress, leave=False):
        idx = order[start : start + texts_per_batch]
        items = integrated_gradients(
            model,
            tokenizer,
            [texts[i] for i in idx],
            [labels[i] for i in idx],
            max_length=max_length,
            n_steps=n_steps,
            token_budget=token_budget,
        )
        for i, item in zip(idx, items, strict=True):
            out[i] = item
    return out  # type: ignore[return-value]


def _text_words(item: TokenAttribution) -> dict[str, float]:
    """Each distinct (lower-cased) word of one text and its summed attribution."""
    words: dict[str, float] = defaultdict(float)
    for word, score in whole_words(item.tokens, item.scores):
        words[word.lower()] += score
    return words


def class_evidence(items: Sequence[TokenAttribution], n_classes: int) -> pd.DataFrame:
    """Per class and word: in how many texts the word occurs and its mean and total evidence.

    A word's evidence for class ``c`` in a text predicted ``c`` is its attribution to that
    prediction. With two classes, a word speaking against the predicted class speaks for the
    other one, so its negated score also counts as evidence for the other class.
    """
    rows = []
    for item in items:
        for word, score in _text_words(item).items():
            rows.append((item.predicted, word, score))
            if n_classes == 2:
                rows.append((1 - item.predicted, word, -score))
    frame = pd.DataFrame(rows, columns=["class_id", "word", "evidence"])
    return (
        frame.groupby(["class_id", "word"])["evidence"]
        .agg(count="size", mean="mean", total="sum")
        .reset_index()
        .sort_values(["class_id", "mean"], ascending=[True, False], ignore_index=True)
    )


def top_words(table: pd.DataFrame, names: Sequence[str], *, min_count: int, top_k: int) -> dict[str, list[dict]]:
    """The ``top_k`` words of highest mean evidence per class among those seen in ``min_count``
    texts or more (so a word met once cannot top the list by accident)."""
    result = {}
    for class_id, name in enumerate(names):
        rows = table[(table["class_id"] == class_id) & (table["count"] >= min_count) & (table["mean"] > 0)]
        result[name] = [
            {"word": r.word, "mean": round(float(r.mean), 5), "count": int(r.count), "total": round(float(r.total), 5)}
            for r in rows.head(top_k).itertuples()
        ]
    return result


def top_words_figure(top: dict[str, list[dict]], n_texts: int, min_count: int):
    """One horizontal bar panel per class: mean evidence, with each word's text count."""
    fig, axes = plt.subplots(1, len(top), figsize=(4.2 * len(top), 0.32 * max(8, *map(len, top.values())) + 1.2))
    for ax, (name, rows) in zip(np.atleast_1d(axes), top.items(), strict=True):
        rows = rows[::-1]
        ax.barh([f"{r['word']} (n={r['count']})" for r in rows], [r["mean"] for r in rows], color="#1a7f37")
        ax.set_title(f"towards '{name}'")
        ax.set_xlabel("mean attribution per text")
    fig.suptitle(f"Words that push the model most, over {n_texts} test texts (seen in >= {min_count})", fontsize=10)
    fig.tight_layout()
    return fig


def attribution_mass(items: Sequence[TokenAttribution]) -> dict[str, float]:
    """The share of all absolute attribution that falls on each word (sums to 1)."""
    mass: dict[str, float] = defaultdict(float)
    for item in items:
        for word, score in _text_words(item).items():
            mass[word] += abs(score)
    total = sum(mass.values()) or 1.0
    return {word: value / total for word, value in mass.items()}


def mass_shift(reference: dict[str, float], current: dict[str, float], top_k: int = 15, vocabulary: int = 100) -> dict:
    """How attribution mass over words moved from ``reference`` to ``current``.

    The distributions are compared over the reference's ``vocabulary`` most attributed words
    plus one bucket for all other words, so that two samples' rare words (mostly different by
    chance) do not dominate. ``js_distance``: Jensen-Shannon distance (base 2: 0 = same,
    1 = disjoint); ``unseen_mass``: the share of current mass on words the reference never
    attributed; ``moved_most``: the words whose share changed most.
    """
    kept = sorted(reference, key=lambda w: -reference[w])[:vocabulary]
    p = np.array([reference.get(w, 0.0) for w in kept] + [1.0 - sum(reference.get(w, 0.0) for w in kept)])
    q = np.array([current.get(w, 0.0) for w in kept] + [1.0 - sum(current.get(w, 0.0) for w in kept)])
    p, q = np.clip(p, 0, None), np.clip(q, 0, None)
    words = sorted(set(reference) | set(current))
    change = np.array([current.get(w, 0.0) - reference.get(w, 0.0) for w in words])
    order = np.argsort(-np.abs(change), kind="stable")[:top_k]
    return {
        "js_distance": float(jensenshannon(p, q, base=2)) if p.sum() and q.sum() else float("nan"),
        "unseen_mass": float(sum(v for w, v in current.items() if w not in reference)),
        "vocabulary": len(kept),
        "moved_most": [
            {
                "word": words[i],
                "reference": round(reference.get(words[i], 0.0), 5),
                "current": round(current.get(words[i], 0.0), 5),
            }
            for i in order
        ],
    }


DESCRIPTORS = ("mass_non_letters", "mass_split_words", "mass_top_word")


def explanation_descriptors(item: TokenAttribution) -> dict[str, float]:
    """Where one text's absolute attribution falls: on tokens without letters (punctuation,
    symbols, numbers), on words the tokenizer had to split into pieces (rare or unknown words),
    and on its single most attributed word (how concentrated the explanation is)."""
    pieces: list[tuple[str, float, int]] = []  # word, |score|, number of pieces
    for token, score in zip(item.tokens, item.scores, strict=True):
        if token in SPECIAL:
            continue
        if token.startswith("##") and pieces:
            word, total, n = pieces[-1]
            pieces[-1] = (word + token[2:], total + abs(score), n + 1)
        else:
            pieces.append((token, abs(score), 1))
    total = sum(m for _, m, _ in pieces) or 1.0
    return {
        "mass_non_letters": sum(m for w, m, _ in pieces if not any(c.isalpha() for c in w)) / total,
        "mass_split_words": sum(m for _, m, n in pieces if n > 1) / total,
        "mass_top_word": max((m for _, m, _ in pieces), default=0.0) / total,
    }


def descriptor_shift(
    reference: dict[str, list[float]], current: dict[str, list[float]], names: Sequence[str] = DESCRIPTORS
) -> dict[str, dict]:
    """How far each descriptor (``names``: the text ones by default) moved: its two means and the
    Kolmogorov-Smirnov statistic (the largest gap between the two distributions, 0 to 1). The
    verdict is Evidently's K-S test on the same columns (``glasswork.text_drift.explanation_report``)."""
    return {
        name: {
            "reference_mean": float(np.mean(reference[name])),
            "current_mean": float(np.mean(current[name])),
            "ks_statistic": float(ks_2samp(reference[name], current[name]).statistic),
        }
        for name in names
    }


def descriptor_drift(
    reference: dict[str, list[float]],
    current: dict[str, list[float]],
    names: Sequence[str],
    alpha: float,
    n_current: int,
    n_reference: int,
):
    """The explanation drift's verdict, for every task: Evidently's K-S test of each descriptor
    (``names``; :func:`glasswork.drift_report.explanation_report`) and how far each moved. Returns
    the summary for ``drift.json`` (status, sizes, ``drifted``, ``alpha``, ``tests``) and the report."""
    from glasswork.drift_report import explanation_report

    report = explanation_report(reference, current, alpha, names)
    tests = {
        name: {**moved, "p_value": report.columns[name]["score"], "drifted": report.columns[name]["drifted"]}
        for name, moved in descriptor_shift(reference, current, names).items()
    }
    summary = {"status": "computed", "n_current": n_current, "n_reference": n_reference}
    return summary | {"drifted": report.dataset_drift, "alpha": alpha, "tests": tests}, report


def quality_change(reference: dict, current: dict, alpha: float) -> dict:
    """The faithfulness of both sides (``by_text`` gains each) with an interval on each gain's
    change, batch minus reference (:func:`glasswork.explain.faithfulness.gain_change`)."""
    from glasswork.explain.faithfulness import gain_change

    change = gain_change(reference["by_text"], current["by_text"], alpha)
    return {"current": current, "reference": reference, "change": change, "status": "computed"}


def descriptor_columns(items: Sequence[TokenAttribution]) -> dict[str, list[float]]:
    """Per descriptor, its value for each text."""
    rows = [explanation_descriptors(i) for i in items]
    return {name: [round(r[name], 5) for r in rows] for name in DESCRIPTORS}


def mean_abs_delta(items: Sequence[TokenAttribution]) -> float:
    """Mean |IG convergence delta|: how far the coarse step count is from exact."""
    return float(np.mean([abs(i.delta) for i in items])) if items else float("nan")
