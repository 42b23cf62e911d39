"""The ``evaluate`` step: held-out metrics, plots and per-text predictions of the trained model."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    f1_score,
    roc_auc_score,
)

from glasswork import tasks, tracking
from glasswork.collapse import ADVICE, confusion, learned_nothing
from glasswork.data.prepare import load_labels, load_split, split_md5
from glasswork.errors import DataError
from glasswork.models.backbone import inference_device, model_dir
from glasswork.outputs import atomic_dir, write_json
from glasswork.slices import define_slices, slice_log_metrics, slice_metrics, slices_figure
from glasswork.steps import output

log = logging.getLogger(__name__)


PREDICTIONS = "predictions.parquet"  # per test text, in test order: text, actual, predicted, prob_*
# The same per validation text: what the label-free accuracy estimate is calibrated on, so that it
# is never calibrated on the test texts it is then judged on (glasswork.estimate).
VAL_PREDICTIONS = "val_predictions.parquet"


def read_predictions(path: Path | str) -> pd.DataFrame:
    """The evaluate step's predictions: its Parquet file, or the CSV with texts that runs before
    Parquet logged (``evaluate/predictions.csv`` of an older champion)."""
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, macro-F1, ROC-AUC and average precision (the area under the precision-recall
    curve; both one-vs-rest and macro-averaged for more than two classes), and expected
    calibration error."""
    preds = probs.argmax(axis=1)
    metrics = {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro")),
        "ece": expected_calibration_error(labels, probs, n_bins),
    }
    if len(np.unique(labels)) > 1:
        metrics["roc_auc"] = roc_auc(labels, probs)
        metrics["average_precision"] = average_precision(labels, probs)
    return metrics


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC-AUC: of the second class for two, one-vs-rest and macro-averaged for more."""
    score = probs[:, 1] if probs.shape[1] == 2 else probs
    return float(roc_auc_score(labels, score, multi_class="ovr", labels=list(range(probs.shape[1]))))


def average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    """Average precision: of the second class for two, one-vs-rest and macro-averaged for more."""
    onehot = np.eye(probs.shape[1])[labels]
    if probs.shape[1] == 2:
        return float(average_precision_score(onehot[:, 1], probs[:, 1]))
    return float(average_precision_score(onehot, probs, average="macro"))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): the |accuracy - confidence| gap over equal-width confidence bins."""
    confidence, preds = probs.max(axis=1), probs.argmax(axis=1)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs((preds[in_bin] == labels[in_bin]).mean() - confidence[in_bin].mean())
    return float(ece)


def score_split(cfg: DictConfig, split: str = "test") -> tuple[pd.DataFrame, np.ndarray]:
    """The split and the trained model's class probabilities on it."""
    frame = load_split(cfg, split)
    predictor = tasks.build(cfg).predictor(model_dir(cfg), device=inference_device(cfg.trainer))
    return frame, predictor.predict_proba(frame, cfg.trainer.eval_batch_size, progress=True)


def predictions_frame(frame: pd.DataFrame, probs: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per row of a scored split: its text (or image path, where there is one), actual and
    predicted class name, ``prob_<name>`` per class."""
    shown = {c: frame[c] for c in ("text", "path") if c in frame}
    predictions = pd.DataFrame(
        {
            **shown,
            "actual": [names[i] for i in frame["label"]],
            "predicted": [names[i] for i in probs.argmax(1)],
        }
    )
    for i, name in enumerate(names):
        predictions[f"prob_{name}"] = probs[:, i]
    return predictions


def prediction_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The class probabilities (columns in class order) and the true class indices of a
    :func:`predictions_frame`."""
    columns = [c for c in predictions.columns if c.startswith("prob_")]
    index = {c.removeprefix("prob_"): i for i, c in enumerate(columns)}
    labels = predictions["actual"].astype(str).map(index)
    if labels.isna().any():
        unknown = sorted(set(predictions["actual"].astype(str)[labels.isna()]))[:5]
        raise DataError(
            f"predictions: 'actual' holds {unknown}, not among the classes of its prob_* columns {list(index)}"
        )
    return predictions[columns].to_numpy(float), labels.to_numpy(int)


def split_slices(cfg: DictConfig, frame: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The slices of a prepared split: by the task's descriptors (a text's length and split
    words, an image's brightness), by true class, and by each metadata column ``prepare`` kept."""
    task = tasks.build(cfg)
    descriptors = task.descriptors(frame, model_dir(cfg))
    metadata = frame.drop(columns=[*task.inputs(), "label", "path"], errors="ignore")
    return define_slices(descriptors, frame["label"].to_numpy(), names, metadata, by=task.slice_by)


def evaluate(cfg: DictConfig) -> dict:
    """Score the test split; write ``artifacts/evaluate/`` (metrics.json, slices.json,
    predictions.parquet, predictions.csv without the texts, PNG plots), and the validation
    split's predictions (val_predictions.parquet).

    Metrics are logged to the model's MLflow run as ``test/<name>``, per-slice accuracies as
    ``test_slice/<slice>/accuracy``.
    """
    task = tasks.build(cfg)
    cfg = task.resolve(cfg)  # e.g. model.max_length=auto: the length prepare chose
    labels = load_labels(cfg)
    frame, probs = score_split(cfg, "test")
    truth = frame["label"].to_numpy()
    metrics = classification_metrics(truth, probs)
    metrics["n"] = len(frame)
    names = labels["names"]
    nothing = learned_nothing(confusion(truth, probs.argmax(1), len(names)), names)
    metrics["learned_nothing"] = int(nothing is not None)
    baseline = task.baseline(load_split(cfg, "train"), frame, cfg.seed)
    metrics |= {f"baseline_{k}": v for k, v in baseline.items()}
    slices = slice_metrics(split_slices(cfg, frame, names), truth, probs)
    validation = predictions_frame(*score_split(cfg, "val"), names)
    with tracking.step_run(cfg, "evaluate"), atomic_dir(output(cfg, "evaluate")) as out:
        predictions = predictions_frame(frame, probs, names)
        # Parquet holds every text as it was (a tweet with a lone carriage return broke the CSV
        # reader of the next step); the CSV, without the texts, feeds `dvc plots`.
        predictions.to_parquet(out / PREDICTIONS, index=False)
        validation.to_parquet(out / VAL_PREDICTIONS, index=False)
        predictions.drop(columns=["text", "path"], errors="ignore").rename_axis("row").to_csv(out / "predictions.csv")
        # A task with more to say of its model than a classifier's figures (a generative model's
        # free answers beside its base model's: task=text_generation) writes it here too.
        extra = getattr(task, "extra_metrics", None)
        if extra is not None:
            metrics |= extra(cfg, frame, model_dir(cfg), out)
        write_json(
            out / "metrics.json",
            {"test": metrics, "test_split_md5": split_md5(cfg, "test"), "learned_nothing": nothing},
        )
        write_json(out / "slices.json", slices)
        _plots(truth, probs, names, out)
        _save(slices_figure(slices), out / "slices.png")
        mlflow.log_metrics({f"test/{k}": v for k, v in metrics.items()} | slice_log_metrics(slices))
        mlflow.set_tag("glasswork.test_split_md5", split_md5(cfg, "test"))
        mlflow.log_artifacts(str(out), "evaluate")
    log.info("evaluate: %s", {k: round(v, 4) for k, v in metrics.items()})
    if nothing:
        log.warning("evaluate: the model learned nothing: %s; it cannot take the champion alias; %s", nothing, ADVICE)
    elif metrics["macro_f1"] <= baseline["macro_f1"]:
        log.warning(
            "evaluate: the model does not beat its baseline (%s) on the same split: macro-F1 %.3f against %.3f "
            "(accuracy %.3f against %.3f); train longer (trainer.min_steps) or ask whether the network is worth "
            "its cost here",
            task.baseline_name,
            metrics["macro_f1"],
            baseline["macro_f1"],
            metrics["accuracy"],
            baseline["accuracy"],
        )
    for row in slices["slices"]:
        if row["flagged"]:
            log.info(
                "evaluate: slice '%s' (n=%d) is below the overall accuracy: %.3f (%.3f-%.3f) vs %.3f "
                "(p = %.1e, Holm-adjusted over %d slices %.1e)",
                row["slice"],
                row["n"],
                row["accuracy"],
                row["accuracy_low"],
                row["accuracy_high"],
                slices["overall_accuracy"],
                row["p_value"],
                len(slices["slices"]),
                row["p_holm"],
            )
    for row in slices["crossings"]["flagged"]:
        log.info(
            "evaluate: crossing '%s' (n=%d) is significantly worse than both its slices (%s): %.3f",
            row["slice"],
            row["n"],
            ", ".join(f"{v:.3f}" for v in row["parents"].values()),
            row["accuracy"],
        )
    return metrics


def _plots(truth: np.ndarray, probs: np.ndarray, names: list[str], out: Path) -> None:
    preds = probs.argmax(axis=1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        truth, preds, labels=list(range(len(names))), display_labels=names, ax=ax, colorbar=False
    )
    ax.set_title("Confusion matrix (test)")
    _save(fig, out / "confusion_matrix.png")

    # Binary: the positive (second) class's curve; more classes: one curve per class vs the rest.
    positives = list(enumerate(names)) if len(names) > 2 else [(1, names[1])]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for k, name in positives:
        RocCurveDisplay.from_predictions(truth == k, probs[:, k], name=f"{name} vs rest", ax=ax)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_title("ROC (test)")
    _save(fig, out / "roc.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for k, name in positives:
        PrecisionRecallDisplay.from_predictions(
            truth == k, probs[:, k], name=f"{name} vs rest", ax=ax, plot_chance_level=True
        )
    ax.set_title("Precision-recall (test)")
    _save(fig, out / "pr.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    prob_true, prob_pred = calibration_curve(preds == truth, probs.max(axis=1), n_bins=10, strategy="quantile")
    ax.plot(prob_pred, prob_true, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    ax.set(xlabel="confidence", ylabel="accuracy", title="Calibration (test)")
    ax.legend()
    _save(fig, out / "calibration.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
