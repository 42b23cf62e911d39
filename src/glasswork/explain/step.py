"""The ``explain`` step: explain a fixed probe sample of test texts and publish the page."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.prepare import load_labels, load_split
from glasswork.errors import ConfigError
from glasswork.explain import report
from glasswork.explain.attributions import integrated_gradients
from glasswork.explain.faithfulness import faithfulness
from glasswork.models.backbone import load_tokenizer, load_trained
from glasswork.outputs import atomic_dir, write_json
from glasswork.train import model_dir

log = logging.getLogger(__name__)

METHODS = ("integrated_gradients",)


def check_methods(methods) -> None:
    """Refuse an empty or unknown method list, naming the valid methods."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"explain.methods={list(methods)}: unknown {unknown}; valid methods: {list(METHODS)}")


def explain(cfg: DictConfig) -> dict:
    """Explain ``explain.n_probe`` test texts; write ``artifacts/explain/`` (HTML, json, probe)."""
    check_methods(cfg.explain.methods)
    test = load_split(cfg, "test")
    if not 0 < cfg.explain.n_probe <= len(test):
        raise ConfigError(
            f"explain.n_probe={cfg.explain.n_probe}: expected 1..{len(test)} (the size of the test split)"
        )
    # A fixed, seeded probe sample: the same texts for every model trained on this split.
    probe = test.sample(n=cfg.explain.n_probe, random_state=cfg.seed).sort_index()
    path = model_dir(cfg)
    names = load_labels(cfg)["names"]
    model, tokenizer = load_trained(path, attn_implementation="eager"), load_tokenizer(path)
    items = integrated_gradients(
        model,
        tokenizer,
        probe["text"].tolist(),
        probe["label"].tolist(),
        max_length=cfg.model.max_length,
        n_steps=cfg.explain.n_steps,
        internal_batch_size=cfg.explain.internal_batch_size,
    )
    deltas = np.abs([i.delta for i in items])
    metrics = {
        "ig_mean_abs_delta": float(deltas.mean()),
        "ig_max_abs_delta": float(deltas.max()),
        "probe_accuracy": float(np.mean([i.predicted == i.label for i in items])),
        "n_probe": len(items),
        "n_truncated": int(sum(i.truncated for i in items)),
    }
    quality = faithfulness(
        model, tokenizer, items, list(cfg.explain.fractions), n_random=cfg.explain.n_random, seed=cfg.seed
    )
    metrics |= {f"integrated_gradients/{k}": v for k, v in quality.items()}
    summary = {
        "method": f"integrated gradients (Captum), {cfg.explain.n_steps} steps, [PAD] baseline",
        "model": f"{cfg.model.name} (MLflow run {tracking.current_run_id(cfg)})",
        "probe": f"{len(items)} test texts drawn with seed {cfg.seed}",
        "mean |convergence delta|": f"{metrics['ig_mean_abs_delta']:.2e}",
        "comprehensiveness AOPC (random ranking)": f"{quality['comprehensiveness_aopc']:.3f} "
        f"({quality['random_comprehensiveness_aopc']:.3f})",
        "sufficiency AOPC (random ranking)": f"{quality['sufficiency_aopc']:.3f} "
        f"({quality['random_sufficiency_aopc']:.3f})",
    }
    with tracking.step_run(cfg, "explain"), atomic_dir(Path(cfg.paths.artifacts_dir) / "explain") as out:
        page = report.render(items, names, "Glasswork — token attributions", summary)
        (out / "attributions.html").write_text(page, encoding="utf-8")
        write_json(out / "attributions.json", [i.to_dict() for i in items])
        write_json(out / "metrics.json", {"explain": metrics})
        probe.to_csv(out / "probe.csv", index=False)
        mlflow.log_metrics({f"explain/{k}": v for k, v in metrics.items()})
        mlflow.log_artifacts(str(out), "explain")
    log.info("explain: %s", metrics)
    return metrics
