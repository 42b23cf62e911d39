"""The ``explain`` step: explain a fixed probe sample of test texts with every configured
method, measure how faithful each explanation is, and publish one page."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf
from scipy.stats import spearmanr

from glasswork import tracking
from glasswork.data.prepare import load_labels, load_probe, load_split, with_max_length
from glasswork.errors import ConfigError
from glasswork.explain import report
from glasswork.explain.attention import attention_rollout
from glasswork.explain.attributions import TokenAttribution, frame_tokens, integrated_gradients
from glasswork.explain.budget import GlobalPlan, check_share, training_seconds
from glasswork.explain.contrast import champion_version, contrast
from glasswork.explain.embeddings import (
    check_projection,
    data_uri,
    embed,
    png_bytes,
    project,
    projection_figure,
    projection_page,
)
from glasswork.explain.faithfulness import (
    SPECIAL,
    chance_by_text,
    change_words,
    check_alpha,
    check_measure,
    check_sample,
    faithfulness_figure,
    measure,
)
from glasswork.explain.faithfulness import SUMMARY as FAITHFULNESS_SUMMARY
from glasswork.explain.global_importance import (
    top_words_figure,
)
from glasswork.explain.global_view import (
    global_explanation,
    global_faithfulness,
    global_summary,
    global_within_budget,
)
from glasswork.explain.model_agnostic import kernel_shap
from glasswork.explain.sanity import cascade_figure, check_sanity, randomisation_check
from glasswork.models.backbone import inference_device, load_tokenizer, load_trained, model_dir
from glasswork.outputs import atomic_dir, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)


def _integrated_gradients(model, tokenizer, texts, labels, cfg: DictConfig) -> list[TokenAttribution]:
    e = cfg.explain
    return integrated_gradients(
        model,
        tokenizer,
        texts,
        labels,
        max_length=cfg.model.max_length,
        n_steps=e.n_steps,
        internal_batch_size=e.internal_batch_size,
        token_budget=e.token_budget,
    )


def _attention_rollout(model, tokenizer, texts, labels, cfg: DictConfig) -> list[TokenAttribution]:
    return attention_rollout(model, tokenizer, texts, labels, max_length=cfg.model.max_length)


def _kernel_shap(model, tokenizer, texts, labels, cfg: DictConfig) -> list[TokenAttribution]:
    e = cfg.explain
    return kernel_shap(
        model,
        tokenizer,
        texts,
        labels,
        max_length=cfg.model.max_length,
        n_samples=e.shap_samples,
        seed=cfg.seed,
        token_budget=e.token_budget,
    )


METHODS: dict[str, Callable[..., list[TokenAttribution]]] = {
    "integrated_gradients": _integrated_gradients,
    "attention_rollout": _attention_rollout,
    "kernel_shap": _kernel_shap,
}


def check_methods(methods, setting: str = "explain.methods", allow_none: bool = False) -> None:
    """Refuse an unknown method or (unless ``allow_none``) an empty list, naming the valid methods."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not (methods or allow_none):
        raise ConfigError(f"{setting}={list(methods)}: unknown {unknown}; valid methods: {list(METHODS)}")


def explain(cfg: DictConfig) -> dict:
    """The explain step: the task's own explanations (:meth:`glasswork.tasks.base.Task.explain`)."""
    from glasswork import tasks

    return tasks.build(cfg).explain(cfg)


def explain_texts(cfg: DictConfig) -> dict:
    """Explain ``explain.n_probe`` test texts; write ``artifacts/explain/`` (HTML, json, probe, metrics)."""
    cfg = with_max_length(cfg)  # model.max_length=auto: the length prepare chose
    started = time.perf_counter()
    check_methods(cfg.explain.methods)
    check_projection(cfg.explain.projection, cfg.explain.projection_max)
    check_sample(cfg.explain.faithfulness_max_texts)
    check_measure(cfg.explain.fractions, cfg.explain.n_random)
    check_sanity(cfg.explain.sanity_n_texts, cfg.explain.sanity_max_length)
    check_methods(cfg.explain.sanity_methods, "explain.sanity_methods", allow_none=True)
    check_alpha("explain.contrast_alpha", cfg.explain.contrast_alpha)
    check_share(cfg.explain.max_share_of_train)
    test = load_split(cfg, "test")
    probe = load_probe(cfg)  # drawn by prepare and versioned with the data
    path = model_dir(cfg)
    names = load_labels(cfg)["names"]
    # Eager attention: fused kernels return no attention weights (attention rollout needs them).
    device = inference_device(cfg.trainer)
    model, tokenizer = load_trained(path, attn_implementation="eager", device=device), load_tokenizer(path)
    texts, labels = probe["text"].tolist(), probe["label"].tolist()

    explained = {m: METHODS[m](model, tokenizer, texts, labels, cfg) for m in cfg.explain.methods}
    metrics = _metrics(model, tokenizer, explained, cfg)
    sanity, sanity_png = _randomisation(model, tokenizer, test, cfg)
    metrics |= sanity
    method = "integrated_gradients" if "integrated_gradients" in explained else next(iter(explained))
    tracking.configure(cfg)
    champion = champion_version(cfg, tracking.current_run_id(cfg)) is not None
    items, sample, plan = global_within_budget(model, tokenizer, test, cfg, started, champion)
    global_view = global_explanation(model, tokenizer, sample, names, cfg, items)
    metrics |= {"global/n_texts": global_view["n_texts"], "global/ig_mean_abs_delta": global_view["mean_abs_delta"]}
    metrics |= {f"global/{k}": global_view["faithfulness"][k] for k in FAITHFULNESS_SUMMARY}
    versus = contrast(
        cfg,
        lambda net, tok: METHODS[method](net, tok, texts, labels, cfg),
        explained[method],
        load_labels(cfg),
        tracking.current_run_id(cfg),
        global_faithfulness=(lambda net, tok: global_faithfulness(net, tok, sample, cfg), global_view["faithfulness"]),
    )
    if "rank_correlation" in versus:
        metrics["contrast/rank_correlation"] = versus["rank_correlation"]
        for k, champion in versus["champion_faithfulness"].items():  # this model's minus the champion's
            metrics[f"contrast/{k}_change"] = metrics[f"{method}/{k}"] - champion
    for k, change in versus.get("global_faithfulness", {}).get("change", {}).items():
        if "difference" in change:  # the paired interval over the global view's texts
            metrics[f"contrast/global_{k}_change"] = change["difference"]
            metrics[f"contrast/global_{k}_fell"] = int(change["verdict"] == "lower")  # as drift's
    summary = (
        _summary(cfg, explained, metrics) | _contrast_summary(method, versus, metrics) | global_summary(global_view)
    )
    top_png = png_bytes(
        top_words_figure(global_view["top_words"], global_view["n_texts"], cfg.explain.global_min_count)
    )
    projection, projection_html = _projection(model, tokenizer, test, names, cfg)
    quality_png = png_bytes(faithfulness_figure(metrics, list(explained), list(cfg.explain.fractions)))
    metrics |= _cost(cfg, time.perf_counter() - started)
    summary["cost"] = _cost_words(metrics, plan)
    with tracking.step_run(cfg, "explain"), atomic_dir(output(cfg, "explain")) as out:
        (out / "embeddings.png").write_bytes(projection)
        (out / "embeddings.html").write_text(projection_html, encoding="utf-8")
        (out / "global_importance.png").write_bytes(top_png)
        (out / "faithfulness.png").write_bytes(quality_png)
        if sanity_png is not None:
            (out / "randomisation.png").write_bytes(sanity_png)
        write_json(out / "global_importance.json", global_view)
        pngs = {
            "How faithful each explanation is (probe texts; dashed: a random ranking)": quality_png,
            "Model-randomisation check: layers re-initialised from the top, one more at a time": sanity_png,
            "Words that push the model towards each class (test split)": top_png,
            "Where the model puts the test texts (embeddings.html: hover a point for its text)": projection,
        }
        figures = {title: data_uri(png) for title, png in pngs.items() if png is not None}
        page = report.render(explained, names, "Glasswork — token attributions", summary, figures)
        (out / "attributions.html").write_text(page, encoding="utf-8")
        write_json(out / "attributions.json", {m: [i.to_dict() for i in items] for m, items in explained.items()})
        write_json(out / "metrics.json", {"explain": metrics})
        write_json(out / "contrast.json", {"method": method, **versus})
        mlflow.log_metrics({f"explain/{k}": v for k, v in metrics.items()})
        mlflow.log_artifacts(str(out), "explain")
    log.info("explain: %s", {k: round(v, 4) for k, v in metrics.items() if "_top" not in k})
    return metrics


def _randomisation(model, tokenizer, test, cfg: DictConfig) -> tuple[dict[str, float], bytes | None]:
    """The cascading randomisation check (:mod:`glasswork.explain.sanity`) of the
    ``explain.sanity_methods`` on a seeded sample of ``explain.sanity_n_texts`` test texts, and its
    curve as a PNG (None when no method is checked)."""
    e = cfg.explain
    methods = [m for m in e.methods if m in e.sanity_methods]
    if not methods:
        return {}, None
    sample = test.sample(n=min(len(test), e.sanity_n_texts), random_state=cfg.seed)
    if len(sample) < e.sanity_n_texts:
        log.warning("explain: the randomisation check takes all %d test texts (explain.sanity_n_texts=%d)",
                    len(sample), e.sanity_n_texts)  # fmt: skip
    texts, labels = sample["text"].tolist(), sample["label"].tolist()
    skip = frame_tokens(tokenizer)
    # It explains its texts once per layer: with the global view's steps, on their first
    # sanity_max_length tokens, the trained and the randomised models alike.
    length = min(cfg.model.max_length, e.sanity_max_length or cfg.model.max_length)
    quick = OmegaConf.merge(cfg, {"explain": {"n_steps": e.global_n_steps}, "model": {"max_length": length}})

    def explain_with(net) -> dict[str, list[TokenAttribution]]:
        return {m: METHODS[m](net, tokenizer, texts, labels, quick) for m in methods}

    def agreement(first, second, absolute: bool = False) -> float:
        return rank_agreement(first, second, absolute, skip=skip)

    metrics, curves = randomisation_check(
        model, explain_with, agreement, seed=cfg.seed, max_spearman=e.sanity_max_spearman
    )
    metrics |= {"sanity_n_texts": len(sample), "sanity_max_length": length}
    return metrics, png_bytes(cascade_figure(curves, len(sample), e.sanity_max_spearman))


def _cost(cfg: DictConfig, seconds: float) -> dict[str, float]:
    """What explaining took, and its share of the training time (``train/seconds``)."""
    cost = {"seconds": round(seconds, 1)}
    train_seconds = training_seconds(cfg)
    limit = cfg.explain.max_share_of_train
    if train_seconds:
        cost["share_of_train"] = seconds / train_seconds
        if limit is not None and cost["share_of_train"] > limit:
            # The global view was already cut as far as it goes: what is left is fixed in size.
            log.warning(
                "explain: took %.0f s, %.0f%% of the %.0f s of training (explain.max_share_of_train=%s): lower "
                "explain.n_probe, explain.faithfulness_max_texts or explain.sanity_max_length, or drop "
                "kernel_shap from explain.methods (it runs twice as many forward passes as a text has tokens)",
                seconds,
                100 * cost["share_of_train"],
                train_seconds,
                limit,
            )
    return cost


def _cost_words(metrics: dict[str, float], plan: GlobalPlan | None) -> str:
    share = metrics.get("share_of_train")
    words = f"{metrics['seconds']:.0f} s" + (f" ({share:.0%} of the training time)" if share is not None else "")
    if plan is not None and plan.n_texts < plan.wanted:
        words += f"; the global view took {plan.n_texts} of {plan.wanted} texts to stay within the budget"
    return words


def _contrast_summary(method: str, versus: dict, metrics: dict[str, float]) -> dict[str, str]:
    if "rank_correlation" not in versus:
        return {"champion vs this model": versus["status"]}
    moved = ", ".join(f"{m['word']} {m['mean_change']:+.3f} (x{m['count']})" for m in versus["moved_most"][:8])
    champion = versus["champion_faithfulness"]
    summary = {
        "champion vs this model": f"{versus['status']}: mean Spearman of {method} over "
        f"{versus['n_compared']} texts = {versus['rank_correlation']:.3f}",
        "words whose attribution moved most (this model minus champion)": moved,
        "faithfulness, this model (champion)": ", ".join(
            f"{k.removesuffix('_gain')} gain {metrics[f'{method}/{k}']:+.3f} ({champion[k]:+.3f})"
            for k in champion
            if k.endswith("_gain")
        ),
    }
    if "global_faithfulness" in versus:
        paired = versus["global_faithfulness"]
        title = f"faithfulness change from the champion ({paired['n_texts']} global-view test texts, paired)"
        summary[title] = "; ".join(
            f"{k.removesuffix('_gain')} gain: {change_words(c)}" for k, c in paired["change"].items()
        )
    return summary


def _projection(model, tokenizer, test, names: list[str], cfg: DictConfig) -> tuple[bytes, str]:
    """The plane of sentence embeddings of (a seeded sample of) the test split (``explain.projection``),
    as a PNG and as an interactive page."""
    sample = test.sample(n=min(len(test), cfg.explain.projection_max), random_state=cfg.seed)
    vectors, probs = embed(
        model,
        tokenizer,
        sample["text"].tolist(),
        batch_size=cfg.trainer.eval_batch_size,
        max_length=cfg.model.max_length,
    )
    labels = sample["label"].to_numpy()
    points, used = project(vectors, cfg.explain.projection, cfg.seed)
    png = png_bytes(projection_figure(points, labels, probs.argmax(1), names, used))
    return png, projection_page(points, sample["text"].tolist(), labels, probs, names, used)


def _metrics(model, tokenizer, explained: dict[str, list[TokenAttribution]], cfg: DictConfig) -> dict[str, float]:
    first = next(iter(explained.values()))
    metrics: dict[str, float] = {
        "probe_accuracy": float(np.mean([i.predicted == i.label for i in first])),
        "n_probe": len(first),
        "n_truncated": int(sum(i.truncated for i in first)),
    }
    if "integrated_gradients" in explained:
        deltas = np.abs([i.delta for i in explained["integrated_gradients"]])
        metrics |= {"ig_mean_abs_delta": float(deltas.mean()), "ig_max_abs_delta": float(deltas.max())}
    e = cfg.explain  # every method is compared with the same random rankings of the same texts
    chance = chance_by_text(model, tokenizer, first, list(e.fractions), n_random=e.n_random, seed=cfg.seed)
    for method, items in explained.items():
        metrics |= {f"{method}/{k}": v for k, v in measure(model, tokenizer, items, cfg, chance).items()}
    methods = list(explained)
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            metrics[f"agreement/{a}_vs_{b}"] = rank_agreement(explained[a], explained[b], skip=frame_tokens(tokenizer))
    return metrics


def rank_agreement(
    first: list[TokenAttribution], second: list[TokenAttribution], absolute: bool = False, skip: set[str] = SPECIAL
) -> float:
    """Mean Spearman rank correlation of two explanations' token scores over the same texts (the
    tokens in ``skip``, the start/end ones, left out)."""
    values = []
    for a, b in zip(first, second, strict=True):
        keep = [k for k, t in enumerate(a.tokens) if t not in skip]
        if len(keep) > 2:
            x, y = np.array([a.scores[k] for k in keep]), np.array([b.scores[k] for k in keep])
            rho = spearmanr(np.abs(x) if absolute else x, np.abs(y) if absolute else y).statistic
            values.append(0.0 if np.isnan(rho) else float(rho))
    return float(np.mean(values)) if values else float("nan")


def _summary(cfg: DictConfig, explained: dict, metrics: dict[str, float]) -> dict[str, str]:
    summary = {
        "model": f"{cfg.model.name} (MLflow run {tracking.current_run_id(cfg)})",
        "probe": f"{int(metrics['n_probe'])} test texts drawn with seed {cfg.seed}",
        "methods": ", ".join(explained),
    }
    if "ig_mean_abs_delta" in metrics:
        summary["integrated gradients"] = (
            f"{cfg.explain.n_steps} steps, pad-token baseline (start/end tokens kept), "
            f"mean |convergence delta| {metrics['ig_mean_abs_delta']:.1e}"
        )
    for method in explained:
        c, rc = metrics[f"{method}/comprehensiveness_aopc"], metrics[f"{method}/random_comprehensiveness_aopc"]
        s, rs = metrics[f"{method}/sufficiency_aopc"], metrics[f"{method}/random_sufficiency_aopc"]
        summary[f"{method}: comprehensiveness / sufficiency AOPC"] = (
            f"{c:.3f} / {s:.3f}   (mean of {cfg.explain.n_random} random rankings: {rc:.3f} / {rs:.3f}; "
            f"higher / lower is better; bins {', '.join(f'{100 * f:g}%' for f in cfg.explain.fractions)})"
        )
    for method in explained:
        if f"{method}/randomisation_spearman" not in metrics:
            summary[f"{method}: model-randomisation check"] = "not run (explain.sanity_methods)"
            continue
        rho, last = metrics[f"{method}/randomisation_spearman_mean"], metrics[f"{method}/randomisation_spearman"]
        verdict = "passed" if metrics[f"{method}/randomisation_passed"] else "FAILED"
        summary[f"{method}: model-randomisation check"] = (
            f"{verdict}: Spearman |scores| trained vs layers randomised from the top, mean over the cascade "
            f"{rho:.3f} (must be below {cfg.explain.sanity_max_spearman}; all layers random: {last:.3f}), on the "
            f"first {int(metrics['sanity_max_length'])} tokens of {int(metrics['sanity_n_texts'])} test texts"
        )
    for key, value in metrics.items():
        if key.startswith("agreement/"):
            summary[f"rank agreement {key.split('/', 1)[1]}"] = f"{value:.3f} (Spearman, mean over texts)"
    return summary
