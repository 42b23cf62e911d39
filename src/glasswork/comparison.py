"""One comparison of a batch with a model's reference, for the ``drift`` step and ``glasswork monitor``.

A :class:`Reference` is what a model was trained and checked on: its prepared training and test
splits, its classes, its validation and test predictions (the label-free estimate's calibration
and the test accuracy beside it) and its explanation baseline. The drift step builds it from
the local artifacts (:func:`local_reference`); ``glasswork monitor`` from the champion's lineage
(:func:`glasswork.monitor.find_reference`). :func:`compare_batch` then does the same for both:
the task's describer scores, embeds and describes a sample of each side, Evidently compares
them, the batch is mapped among the training data, accuracy is estimated without labels, and
the explanations are compared where the task can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.drift import (
    batch_map,
    compare,
    drift_metrics,
    label_names,
    metadata_slices,
    performance_estimate,
    verdict_words,
    with_metadata,
)
from glasswork.drift_report import DriftResult

# A generative model's answers, both sides (the describer's ``outputs`` finding): logged as
# ``drift/outputs/<side>_<name>`` and said in the verdict's line.
OUTPUT_FIGURES = {
    "invalid_answer_rate": "invalid",
    "response_tokens": "length",
    "own_answer_logprob": "own log-probability",
    "answer_accuracy": "right",
}


@dataclass
class Reference:
    """What a model was trained and checked on (rows of the splits as ``prepare`` wrote them)."""

    train: pd.DataFrame  # the prepared training split: the input, label (class index), metadata
    test: pd.DataFrame  # the prepared test split, in the order of ``predictions``
    labels: dict  # classes (raw values), names
    validation: pd.DataFrame | None = None  # validation predictions: the estimate's calibration
    predictions: pd.DataFrame | None = None  # test predictions: the test accuracy beside the estimate
    explanations: dict | None = None  # the explain step's global view (the explanation baseline)
    val: pd.DataFrame | None = None  # the prepared validation split: held-out rows for output signals


def local_reference(cfg: DictConfig) -> Reference:
    """The reference of the model in this work folder: its splits and its evaluate and explain outputs."""
    from glasswork.data.prepare import load_labels, load_split
    from glasswork.evaluate import PREDICTIONS, VAL_PREDICTIONS, read_predictions
    from glasswork.outputs import read_json
    from glasswork.steps import output

    def optional(step: str, name: str, read):
        path = output(cfg, step, name)
        return read(path) if path.is_file() else None

    return Reference(
        train=load_split(cfg, "train"),
        test=load_split(cfg, "test"),
        labels=load_labels(cfg),
        validation=optional("evaluate", VAL_PREDICTIONS, read_predictions),
        predictions=optional("evaluate", PREDICTIONS, read_predictions),
        explanations=optional("explain", "global_importance.json", read_json),
        val=load_split(cfg, "val"),
    )


@dataclass
class Comparison:
    """The outcome: Evidently's report and verdict, the accuracy estimate, the explanation drift
    (and its report), the batch map, and the reference sample's size."""

    result: DriftResult
    performance: dict
    explained: dict
    explanation_report: DriftResult | None
    landing: str
    n_reference: int
    labels_tested: bool
    findings: dict = field(default_factory=dict)  # the batch's view's (a table's unseen categories)

    @property
    def metrics(self) -> dict[str, float]:
        metrics = drift_metrics(self.result, self.performance, self.explained)
        outputs = self.findings.get("outputs", {})
        for side in ("reference", "current"):
            found = outputs.get(side) or {}
            metrics |= {f"outputs/{side}_{k}": v for k, v in found.items() if k in OUTPUT_FIGURES}
        return metrics

    @property
    def words(self) -> str:
        words = verdict_words(self.result, self.performance, self.explained)
        if outputs := self.findings.get("outputs"):
            ref, now = outputs["reference"], outputs["current"]
            words += "; answers: " + ", ".join(
                f"{name} {ref[k]:.3f}->{now[k]:.3f}" for k, name in OUTPUT_FIGURES.items() if k in ref and k in now
            )
        return words

    def summary(self) -> dict:
        """What ``drift.json`` holds for every caller."""
        return {
            "n_reference": self.n_reference,
            **self.result.to_dict(),
            "drifted_signals": self.result.drifted_signals,
            "performance": self.performance,
            "explanation_drift": self.explained,
            **self.findings,
        }


def held_out_confidence(validation: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """``n`` values of the model's predicted probability (binary: the positive class's; more
    classes: the top one) on the validation split, drawn with the seed: the reference side of
    the prediction-drift signal. On its own training rows a model is more confident than on any
    row it has not learned, so against them held-out data leans towards drift by construction
    (Fashion-MNIST's unshifted test images against training rows: K-S p = 0.046, flagged); the
    validation split is held out as the batch is."""
    from glasswork.evaluate import prediction_arrays

    probs, _ = prediction_arrays(validation)
    values = probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)
    rows = np.random.default_rng(seed).choice(len(values), size=n, replace=len(values) < n)
    return values[rows].astype(float)


def held_out_outputs(view, describer, val: pd.DataFrame, names: list, seed: int):
    """``view`` (the training rows' side) with the columns that describe the model's own outputs
    (``describer.held_out``: a generative model's answer, its length and log-probability) drawn
    from the validation split's rows instead, and their summary: on the rows it trained on, the
    model answered right 0.91 of the time and more surely (mean own log-probability -0.15) than on
    held-out reviews (0.80), so against training rows any unseen batch leans towards drift; as
    :func:`held_out_confidence` does for the predicted probability."""
    held = describer.describe(val.reset_index(drop=True), label_names(val["label"], names))
    rows = np.random.default_rng(seed).choice(
        len(held.frame), size=len(view.frame), replace=len(held.frame) < len(view.frame)
    )
    for column in describer.held_out:
        view.frame[column] = held.frame[column].to_numpy()[rows]
    view.findings = {**view.findings, **held.findings}
    return view


def compare_batch(
    ref: Reference,
    describer,
    current: pd.DataFrame,
    labels: np.ndarray | None,
    batch_name: str,
    cfg: DictConfig,
    *,
    sample_size: int,
    metadata: list[str],
    test_labels: bool,
    explain: pd.DataFrame | None = None,
) -> Comparison:
    """Compare ``current`` (the batch's sample; ``labels``: class index per row, -1 where unknown)
    with a seeded sample of ``sample_size`` training rows.

    ``metadata``: the columns both sides carry, tested as ``meta:NAME`` and sliced in the estimate;
    ``test_labels``: whether the label is one of the signals; ``explain``: the rows whose
    explanations are compared (default: all of ``current``)."""
    names = ref.labels["names"]
    reference = ref.train.sample(n=min(sample_size, len(ref.train)), random_state=cfg.seed).reset_index(drop=True)
    reference_view = describer.describe(reference, label_names(reference["label"], names) if test_labels else None)
    if ref.validation is not None:
        reference_view.frame["predicted_probability"] = held_out_confidence(ref.validation, len(reference), cfg.seed)
    if getattr(describer, "held_out", None) and ref.val is not None and len(ref.val):
        reference_view = held_out_outputs(reference_view, describer, ref.val, names, cfg.seed)
    current_view = describer.describe(current, label_names(labels, names) if test_labels else None)
    reference_view = with_metadata(reference_view, reference, metadata, ref.train)
    current_view = with_metadata(current_view, current, metadata, ref.train)
    result = compare(reference_view, current_view, cfg)
    landing = batch_map(reference_view, current_view, names, batch_name, cfg, describer.rows)
    slices = metadata_slices(current, metadata, ref.test), metadata_slices(ref.test, metadata, ref.test)
    performance = performance_estimate(ref.validation, ref.predictions, current_view.probs, labels, *slices)
    explained, page = describer.explanation_drift(current if explain is None else explain, ref.explanations)
    findings = dict(current_view.findings)
    if "outputs" in findings:  # a generative model's answers: the training rows' beside the batch's
        findings["outputs"] = {"reference": reference_view.findings.get("outputs"), "current": findings["outputs"]}
    return Comparison(result, performance, explained, page, landing, len(reference), test_labels, findings)
