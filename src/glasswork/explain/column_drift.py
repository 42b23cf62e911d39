"""Explanation drift for tables: where integrated gradients put the evidence for the predicted
class on the test split (the explain step's reference, ``global_importance.json``) against a new
batch, and whether the explanations still carry the predictions there.

One descriptor per feature column: the share of a row's total |attribution| that falls on that
column (a categorical column's one-hot block counted as one column), tested with Evidently's K-S
test, one drifted column enough at ``drift.explanation_alpha`` over the number of columns
(Bonferroni), as for texts and images. So "the model now decides on ``age`` where it used to
decide on ``rate_marriage``" is a verdict, even where each column's own values did not move.
Besides the verdict: the Jensen-Shannon distance between the two mean share vectors, and the
faithfulness gains over random column orders on both sides with an interval on their difference
(reported, not voted, as for texts and images).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy.spatial.distance import jensenshannon


def column_shares(scores: np.ndarray, columns: list[str]) -> dict[str, list[float]]:
    """Per column, its share of each row's total |attribution| (``scores``: rows × columns); a row
    whose attributions are all zero (the baseline row itself) has a share of 0 everywhere."""
    mass = np.abs(np.asarray(scores, dtype=np.float64))
    shares = mass / np.maximum(mass.sum(1, keepdims=True), 1e-12)
    return {c: [round(float(v), 5) for v in shares[:, i]] for i, c in enumerate(columns)}


def mean_shares(shares: dict[str, list[float]]) -> dict[str, float]:
    """The rows' shares averaged, per column: where the evidence lies over the sample."""
    return {c: float(np.mean(v)) if len(v) else 0.0 for c, v in shares.items()}


def row_digests(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Each row's md5 over its feature values as text: the reference lists the rows it explained,
    so that a batch drawn from the same split (``drift.current=test``) is compared on other rows."""
    values = frame[columns].astype(str).to_numpy()
    return [hashlib.md5("\x1f".join(row).encode("utf-8")).hexdigest() for row in values]


def reference_view(explainer, sample: pd.DataFrame, scores: np.ndarray, cfg: DictConfig) -> dict:
    """What the explain step adds to ``global_importance.json`` for explanation drift: the shares
    of the global view's rows (``scores``: their integrated gradients), their digests, and the
    faithfulness gains of the first ``explain.faithfulness_max_texts`` of them."""
    columns = list(explainer.predictor.pre.columns)
    shares = column_shares(scores, columns)
    return {
        "row_digests": row_digests(sample, columns),
        "descriptors": shares,
        "mean_shares": mean_shares(shares),
        "faithfulness": explainer.gains(sample.iloc[: cfg.explain.faithfulness_max_texts]),
    }


def explanation_drift(reference: dict | None, explainer, current: pd.DataFrame, cfg: DictConfig):
    """How the attributions moved from the test split (``reference``) to the batch's rows (the
    first ``drift.explain_sample`` of ``current``, leaving out any row the reference itself
    explained): the summary for ``drift.json`` and Evidently's report (``None`` when not computed)."""
    from glasswork.explain.global_importance import descriptor_drift, quality_change

    if reference is None or "descriptors" not in reference:
        status = "not computed: the explain step's global_importance.json is missing (run `glasswork explain`)"
        return {"status": status}, None
    columns = list(explainer.predictor.pre.columns)
    if set(reference["descriptors"]) != set(columns):  # (JSON here is written with sorted keys)
        status = "not computed: the explain step's global_importance.json is another model's (other columns)"
        return {"status": status}, None
    seen = set(reference.get("row_digests", ()))
    frame = current.reset_index(drop=True)
    digests = row_digests(frame, columns)
    keep = [i for i, d in enumerate(digests) if d not in seen][: cfg.drift.explain_sample]
    if len(keep) < 2:
        status = f"not computed: {len(keep)} rows to explain (drift.explain_sample, at least 2)"
        left_out = sum(d in seen for d in digests)
        if left_out:
            status += (
                f"; {left_out} of the batch's {len(digests)} rows are rows the explain step "
                "explained, its reference, and are left out: with drift.current=test, an explain.global_max_texts "
                "below the test split's size leaves the rest to compare"
            )
        return {"status": status}, None
    rows = frame.iloc[keep].reset_index(drop=True)
    x = explainer.features(rows, "the batch")
    targets = explainer.probs(rows).argmax(1).tolist()
    net, n_steps = explainer.predictor.net, cfg.explain.global_n_steps
    scores = explainer.explain(net, x, targets, ("integrated_gradients",), n_steps)["integrated_gradients"]
    found = column_shares(scores, columns)
    alpha = cfg.drift.explanation_alpha
    n = (len(rows), len(reference["descriptors"][columns[0]]))
    summary, report = descriptor_drift(reference["descriptors"], found, columns, alpha, *n)
    before, after = reference["mean_shares"], mean_shares(found)
    summary["js_distance"] = float(jensenshannon([before[c] for c in columns], [after[c] for c in columns], base=2))
    current_quality = explainer.gains(rows.iloc[: cfg.explain.faithfulness_max_texts], "the batch")
    summary["faithfulness"] = quality_change(reference["faithfulness"], current_quality, alpha)
    return summary, report
