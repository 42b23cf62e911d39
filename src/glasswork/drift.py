"""The ``drift`` step: has the data moved? An Evidently report of a current batch against the
training reference, over what the task's describer says of each row (a text's length and words,
an image's brightness and contrast: :mod:`glasswork.text_drift`, :mod:`glasswork.image_drift`),
the model's embeddings and predicted probability, the label when both sides have one, and the
data's metadata columns (``data.slice_columns``) that both sides carry; the label-free accuracy
estimate and the verdict in words. ``glasswork monitor`` runs the same comparison
(:mod:`glasswork.comparison`) on each new batch against the champion's own reference data.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.schema import conform_metadata
from glasswork.drift_report import DriftResult, build_drift_report
from glasswork.errors import ConfigError
from glasswork.estimate import Calibration, estimated_accuracy, fit_calibration
from glasswork.evaluate import PREDICTIONS, VAL_PREDICTIONS, prediction_arrays
from glasswork.explain.embeddings import batch_map_page, check_projection
from glasswork.explain.faithfulness import (
    GAINS,
    change_words,
    check_alpha,
    check_sample,
)
from glasswork.explain.faithfulness import SUMMARY as FAITHFULNESS_SUMMARY
from glasswork.outputs import atomic_dir, write_json
from glasswork.slices import column_slices, metric_key
from glasswork.steps import output
from glasswork.text_descriptors import DESCRIPTORS

log = logging.getLogger(__name__)

NUMERIC = [*DESCRIPTORS, "predicted_probability"]
# Sentence embeddings enter the report reduced by a PCA fitted on the reference: the domain
# classifier's verdicts were the same as on all 384 dimensions, and Evidently's t-SNE plot of
# them takes seconds instead of tens of seconds.
EMBEDDING_COMPONENTS = 16
META = "meta:"  # a metadata column of the data (data.slice_columns) as a drift signal


@dataclass
class View:
    """One side of a comparison: the columns the report tests, the model's embeddings, and its
    class probabilities (rows in the same order). Which columns are text and which are numbers,
    the embeddings' name and what hovering a point of the batch map shows come from the task
    (the defaults are the text task's)."""

    frame: pd.DataFrame
    embeddings: np.ndarray
    probs: np.ndarray
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    numeric: list[str] = field(default_factory=lambda: list(NUMERIC))
    embedding_name: str = "sentence"
    hover: list[str] | None = None  # per row; None: the text column
    categorical: list[str] = field(default_factory=list)  # columns tested as categories (a table's)
    findings: dict = field(default_factory=dict)  # what the rows hold that the model never learned
    thumbnails: list[str] | None = None  # per row, an image's data URI the batch map shows on hover

    @property
    def has_labels(self) -> bool:
        return "label" in self.frame.columns

    def take(self, rows: np.ndarray) -> View:
        """The rows at these positions (e.g. one random split of a described pool)."""
        hover = None if self.hover is None else [self.hover[i] for i in rows]
        thumbnails = None if self.thumbnails is None else [self.thumbnails[i] for i in rows]
        frame = self.frame.iloc[rows].reset_index(drop=True)
        embeddings, probs = self.embeddings[rows], self.probs[rows]
        return replace(self, frame=frame, embeddings=embeddings, probs=probs, hover=hover, thumbnails=thumbnails)

    @property
    def hover_texts(self) -> list[str]:
        return self.hover if self.hover is not None else self.frame["text"].astype(str).tolist()


def drift_metadata(split: pd.DataFrame, batch: pd.DataFrame, inputs: tuple[str, ...] = ("text",)) -> list[str]:
    """The split's metadata columns (``data.slice_columns``) that both sides carry, with at least
    one value of the split's type ("five" in a number column is missing), to be tested for
    drift: numbers, flags and categories. Dates are left out: a later batch always has later
    dates, so they would always drift."""
    return [
        column
        for column in split.columns
        if column not in (*inputs, "label", "path")
        and not pd.api.types.is_datetime64_any_dtype(split[column])
        and split[column].notna().any()
        and column in batch.columns
        and conform_metadata(batch[column], split[column]).notna().any()
    ]


def metadata_slices(frame: pd.DataFrame, columns: list[str], test: pd.DataFrame) -> dict[str, np.ndarray]:
    """``frame``'s slices by its metadata ``columns`` in the test split's types, cut and named as
    the evaluate step cuts and names the test split's (``source = web``, ``1998 < year ≤ 2004``)."""
    slices: dict[str, np.ndarray] = {}
    for column in columns:
        slices |= column_slices(conform_metadata(frame[column], test[column]).rename(column), like=test[column])
    return {name: rows for name, rows in slices.items() if rows.any()}


def with_metadata(view: View, frame: pd.DataFrame, columns: list[str], split: pd.DataFrame) -> View:
    """``view`` with ``frame``'s metadata ``columns`` (rows in the same order) as ``meta:NAME``
    signals, in the type ``split`` keeps them: numbers, or categories with ``(missing)``."""
    for column in columns:
        values = conform_metadata(frame[column], split[column])
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            values = values.astype("string").fillna("(missing)")
        view.frame[META + column] = values.to_numpy()
    return view


def compare(reference: View, current: View, cfg: DictConfig) -> DriftResult:
    """The Evidently report of ``current`` against ``reference`` (see ``drift_report`` for the
    verdict), with the metadata signals (``meta:NAME``) both sides carry."""
    from sklearn.decomposition import PCA

    k = min(EMBEDDING_COMPONENTS, len(reference.frame) - 1, reference.embeddings.shape[1])
    pca = PCA(n_components=k, random_state=cfg.seed).fit(reference.embeddings)
    columns = [f"embedding_{i}" for i in range(k)]

    def with_embeddings(view: View) -> pd.DataFrame:
        reduced = pd.DataFrame(pca.transform(view.embeddings), columns=columns)
        return pd.concat([view.frame.reset_index(drop=True), reduced], axis=1)

    labelled = reference.has_labels and current.has_labels
    metadata = [c for c in reference.frame.columns if c.startswith(META) and c in current.frame.columns]
    numeric = [c for c in metadata if pd.api.types.is_numeric_dtype(reference.frame[c])]
    return build_drift_report(
        with_embeddings(reference),
        with_embeddings(current),
        text_columns=reference.text_columns,
        numerical_columns=reference.numeric + numeric,
        categorical_columns=(["label"] if labelled else [])
        + reference.categorical
        + [c for c in metadata if c not in numeric],
        embeddings={reference.embedding_name: columns},
        drift_share=cfg.drift.drift_share,
        text_method=cfg.drift.text_method,
        embeddings_plot=cfg.drift.embeddings_plot,
    )


def batch_map(
    reference: View, current: View, names: list[str], batch: str, cfg: DictConfig, kind: tuple[str, str] | None = None
) -> str:
    """The interactive map of where ``current`` lands among the training data
    (``embeddings.html``; ``explain.projection`` picks PCA or UMAP)."""
    return batch_map_page(
        (reference.embeddings, reference.hover_texts),
        (current.embeddings, current.hover_texts, current.probs),
        names,
        batch,
        cfg.explain.projection,
        cfg.seed,
        **({"kind": kind} if kind else {}),
        thumbnails=_joined(reference.thumbnails, current.thumbnails),
    )


def _joined(first: list[str] | None, second: list[str] | None) -> list[str] | None:
    """Both sides' thumbnails in the map's order, or none when a side has none."""
    return first + second if first is not None and second is not None else None


def label_indices(values: pd.Series, classes: list) -> tuple[np.ndarray, list[str]]:
    """Class index per row (-1 where the value is not a class the model knows) and the unknown values."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    as_text = values.astype(str)
    index = as_text.map(lookup).fillna(-1).astype(int).to_numpy()
    return index, sorted(set(as_text[index < 0]))


def label_names(index, names: list) -> list[str] | None:
    """Class names for class indices (``unknown`` for -1); ``None`` stays ``None``."""
    return None if index is None else [str(names[i]) if i >= 0 else "unknown" for i in index]


def performance_estimate(
    validation: pd.DataFrame | None,
    tested: pd.DataFrame | None,
    probs: np.ndarray,
    labels: np.ndarray | None,
    slices: dict[str, np.ndarray] | None = None,
    test_slices: dict[str, np.ndarray] | None = None,
) -> dict:
    """Accuracy of the current batch estimated from confidence alone, calibrated per class on the
    validation split's predictions (``validation``, the evaluate step's ``val_predictions.parquet``:
    never the texts the estimate is judged on), beside the accuracy on the test split (``tested``,
    its ``predictions.parquet``), and the true accuracy where labels are known (``labels``: class
    indices, -1 for rows without a known label).

    With ``slices`` (the batch's rows by metadata value, :func:`metadata_slices`), the same per
    slice, beside the slice's accuracy on the test split (``test_slices``, rows in the order of
    ``tested``) where it has one."""
    if validation is None or tested is None:
        name = VAL_PREDICTIONS if validation is None else PREDICTIONS
        return {"status": f"not computed: the evaluate step's {name} is missing (run `glasswork evaluate`)"}
    calibration = fit_calibration(*prediction_arrays(validation))
    right = (tested["actual"] == tested["predicted"]).to_numpy()
    result = {
        "status": "computed",
        "estimated_accuracy": estimated_accuracy(calibration, probs),
        "calibrated_on": f"validation split ({len(validation)} rows, per class)",
        "mean_confidence": float(probs.max(axis=1).mean()),
        "reference_accuracy": float(right.mean()),
    }
    if labels is not None and (labels >= 0).any():
        known = labels >= 0
        result["actual_accuracy"] = float((probs[known].argmax(axis=1) == labels[known]).mean())
        result["n_labelled"] = int(known.sum())
    if slices:
        by_test = {k: v for k, v in (test_slices or {}).items() if len(v) == len(right)}
        result["slices"] = [
            _slice_estimate(name, rows, calibration, probs, labels, right, by_test) for name, rows in slices.items()
        ]
    return result


def _slice_estimate(
    name: str,
    rows: np.ndarray,
    calibration: Calibration,
    probs: np.ndarray,
    labels: np.ndarray | None,
    right: np.ndarray,
    tested: dict[str, np.ndarray],
) -> dict:
    """One slice of the batch: its estimated accuracy, its accuracy on the test split, and its
    true accuracy where the batch has labels."""
    row: dict = {
        "slice": name,
        "n": int(rows.sum()),
        "estimated_accuracy": estimated_accuracy(calibration, probs[rows]),
    }
    if name in tested and tested[name].any():
        row["test_accuracy"] = float(right[tested[name]].mean())
    if labels is not None and (known := rows & (labels >= 0)).any():
        row["actual_accuracy"] = float((probs[known].argmax(axis=1) == labels[known]).mean())
    return row


def save_explanation_page(report: DriftResult | None, explained: dict, path: Path) -> Path:
    """Evidently's page of the explanation-drift tests, or a page that says why there is none."""
    if report is not None:
        report.save_html(path)
        # Evidently's preset says "Dataset Drift" and "Data Drift"; here the columns are explanation
        # descriptors. The words occur only in the page's data (widget titles), not in its code.
        page = path.read_text(encoding="utf-8")
        for words in ("Dataset Drift", "Dataset drift", "Data Drift"):
            page = page.replace(words, "Explanation " + words.split()[1])
        path.write_text(page, encoding="utf-8")
        return path
    path.write_text(
        "<!doctype html><title>Explanation drift</title>"
        f"<p>Explanation drift {html.escape(explained['status'])}.</p>\n",
        encoding="utf-8",
    )
    return path


def drift_metrics(result: DriftResult, performance: dict, explained: dict) -> dict[str, float]:
    """The numbers logged as ``drift/*``: the verdict, each signal's score and verdict, the
    accuracy estimate, and the explanation drift."""
    metrics = {
        "dataset_drift": int(result.dataset_drift),
        "share_drifted": result.share_drifted,
        "n_drifted": result.n_drifted,
    }
    for name, info in result.columns.items():
        # A table's column names are the user's ("tenure (months)", "charges €"): MLflow takes
        # letters, digits and a few signs only.
        key = metric_key(name.replace(":", "_"))
        metrics[f"{key}_score"] = info["score"]
        metrics[f"{key}_drifted"] = int(info["drifted"])
    metrics |= {k: v for k, v in performance.items() if k.endswith("accuracy")}
    for row in performance.get("slices", []):
        metrics[f"slice/{metric_key(row['slice'])}/estimated_accuracy"] = row["estimated_accuracy"]
    if explained["status"] == "computed":
        metrics["explanation_drift"] = int(explained["drifted"])
        # Where the attribution mass lies (words for texts, the canvas for images); a task's
        # explanations may have no "unseen" part (pixels are always the same pixels).
        metrics |= {f"explanation_{k}": explained[k] for k in ("js_distance", "unseen_mass") if k in explained}
        # A table's descriptors are its column names: made MLflow-safe as the signals' are.
        metrics |= {f"explanation_{metric_key(k)}_ks": t["ks_statistic"] for k, t in explained["tests"].items()}
        metrics |= {f"explanation_{k}": explained["faithfulness"]["current"][k] for k in FAITHFULNESS_SUMMARY}
        for k, moved in explained["faithfulness"].get("change", {}).items():
            if "difference" in moved:  # 1 when the gain fell by more than chance
                metrics[f"explanation_{k}_change"] = moved["difference"]
                metrics[f"explanation_{k}_fell"] = int(moved["verdict"] == "lower")
    return metrics


def drift(cfg: DictConfig) -> dict:
    """Write ``artifacts/drift/`` (report.html, explanation_report.html, embeddings.html,
    drift.json, metrics.json) and log ``drift/*``. The batch and what describes a row come from
    the task; the comparison is :func:`glasswork.comparison.compare_batch`, as ``glasswork
    monitor``'s, against the work folder's own model and splits."""
    from glasswork import tasks
    from glasswork.comparison import compare_batch, local_reference

    task = tasks.build(cfg)
    cfg = task.resolve(cfg)
    n = cfg.drift.sample_size
    if n < 10:
        raise ConfigError(f"drift.sample_size={n}: expected at least 10 rows per side")
    check_projection(cfg.explain.projection)
    check_sample(cfg.explain.faithfulness_max_texts)
    check_alpha("drift.explanation_alpha", cfg.drift.explanation_alpha)
    current = task.drift_batch(cfg)
    current = current.sample(n=min(n, len(current)), random_state=cfg.seed).reset_index(drop=True)
    ref = local_reference(cfg)
    labels = label_indices(current["label"], ref.labels["classes"])[0] if "label" in current else None
    found = compare_batch(
        ref,
        task.describer(cfg),
        current,
        labels,
        cfg.drift.current,
        cfg,
        sample_size=n,
        metadata=drift_metadata(ref.train, current, tuple(task.inputs())),
        test_labels=labels is not None,
    )
    summary = {"current": cfg.drift.current, "n_current": len(current), **found.summary()}
    metrics = found.metrics
    with tracking.step_run(cfg, "drift"), atomic_dir(output(cfg, "drift")) as out:
        found.result.save_html(out / "report.html")
        save_explanation_page(found.explanation_report, found.explained, out / "explanation_report.html")
        (out / "embeddings.html").write_text(found.landing, encoding="utf-8")
        write_json(out / "drift.json", summary)
        write_json(out / "metrics.json", {"drift": metrics})
        mlflow.log_metrics({f"drift/{k}": float(v) for k, v in metrics.items()})
        mlflow.set_tag("glasswork.drift_verdict", "drift" if found.result.dataset_drift else "no drift")
        mlflow.log_artifacts(str(out), "drift")
    log.info("drift: %s vs training reference -> %s", cfg.drift.current, found.words)
    return summary


def verdict_words(result: DriftResult, performance: dict, explained: dict) -> str:
    """The verdict in one line: which signals drifted, the accuracy estimate, explanation drift."""
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    drifted = ", ".join(result.drifted_signals) or "none"
    return (
        f"{verdict} ({result.n_drifted} of {result.n_columns} signals drifted: {drifted}); "
        f"{_performance_words(performance)}; explanation drift: {_explanation_words(explained)}"
    )


def _performance_words(performance: dict) -> str:
    if performance["status"] != "computed":
        return performance["status"]
    words = (
        f"estimated accuracy {performance['estimated_accuracy']:.3f} "
        f"(test split: {performance['reference_accuracy']:.3f})"
    )
    if "actual_accuracy" in performance:
        words += f", actual {performance['actual_accuracy']:.3f}"
    return words


def _explanation_words(explained: dict) -> str:
    if explained["status"] != "computed":
        return explained["status"]
    tests = ", ".join(
        f"{k} {t['reference_mean']:.3f}->{t['current_mean']:.3f} (p={t['p_value']:.1e})"
        for k, t in explained["tests"].items()
    )
    if "moved_most" in explained:  # words
        moved = ", ".join(f"{m['word']} {m['reference']:.3f}->{m['current']:.3f}" for m in explained["moved_most"][:5])
        tests += f"; moved most: {moved}"
    elif "js_distance" in explained:  # the canvas or the columns: how far the mean attribution moved
        tests += f"; mean attribution JS distance {explained['js_distance']:.3f}"
    faithful = faithfulness_words(explained["faithfulness"])
    return f"{'DRIFT' if explained['drifted'] else 'none'}: {tests}; faithfulness: {faithful}"


def faithfulness_words(quality: dict) -> str:
    """The batch's faithfulness gains beside the test split's, in one line, with the interval on
    their difference where there is one."""
    words = []
    for k in GAINS:
        line = f"{k.removesuffix('_gain')} gain {quality['current'][k]:+.3f}"
        if quality["reference"]:
            line += f" (test split {quality['reference'][k]:+.3f}"
            moved = quality.get("change", {}).get(k, {})
            if "difference" in moved:
                line += f"; {change_words(moved)}"
            line += ")"
        words.append(line)
    return ", ".join(words)
