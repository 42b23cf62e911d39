"""The explain step's global view: integrated gradients over a seeded sample of the test split,
sized to the step's time budget (:mod:`glasswork.explain.budget`), with the words that carry
each class, the attribution mass the drift step compares against, and its faithfulness."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from glasswork.explain.attributions import TokenAttribution
from glasswork.explain.budget import MIN_GLOBAL_TEXTS, plan_global_view, training_seconds
from glasswork.explain.faithfulness import faithfulness_summary
from glasswork.explain.global_importance import (
    attribute_many,
    attribution_mass,
    class_evidence,
    descriptor_columns,
    mean_abs_delta,
    top_words,
)

log = logging.getLogger(__name__)


def global_sample(test, cfg: DictConfig):
    """The global view's seeded sample of the test split (``explain.global_max_texts``; null: all)."""
    n = len(test) if cfg.explain.global_max_texts is None else min(len(test), cfg.explain.global_max_texts)
    return test.sample(n=n, random_state=cfg.seed)


def global_within_budget(model, tokenizer, test, cfg: DictConfig, started: float, champion: bool):
    """The global view's attributions and texts: the whole seeded sample, or its first texts where
    the whole would take the step past ``explain.max_share_of_train`` of the training time
    (:mod:`glasswork.explain.budget`); and the plan, where there was a budget."""
    e, sample = cfg.explain, global_sample(test, cfg)
    train_seconds = training_seconds(cfg)
    if e.max_share_of_train is None or not train_seconds or len(sample) <= MIN_GLOBAL_TEXTS:
        return _global_attributions(model, tokenizer, sample, cfg), sample, None
    first = sample.head(MIN_GLOBAL_TEXTS)
    clock = time.perf_counter()
    items = _global_attributions(model, tokenizer, first, cfg)
    now = time.perf_counter()
    plan = plan_global_view(
        e,
        done=len(first),
        seconds_done=now - clock,
        wanted=len(sample),
        seconds_left=e.max_share_of_train * train_seconds - (now - started),
        n_probe=e.n_probe,
        n_projected=min(len(test), e.projection_max),
        champion=champion,
    )
    sample = sample.head(plan.n_texts)
    if plan.n_texts > len(first):
        items += _global_attributions(model, tokenizer, sample.iloc[len(first) :], cfg)
    if plan.n_texts < plan.wanted:
        log.warning(
            "explain: the global view takes %d of its %d texts, to keep the step within %.0f%% of the %.0f s of "
            "training (explain.max_share_of_train; null explains them all)",
            plan.n_texts,
            plan.wanted,
            100 * e.max_share_of_train,
            train_seconds,
        )
    return items, sample, plan


def _global_attributions(model, tokenizer, sample, cfg: DictConfig) -> list[TokenAttribution]:
    e = cfg.explain
    return attribute_many(
        model,
        tokenizer,
        sample["text"].tolist(),
        sample["label"].tolist(),
        max_length=cfg.model.max_length,
        n_steps=e.global_n_steps,
        token_budget=e.token_budget,
    )


def global_faithfulness(model, tokenizer, sample, cfg: DictConfig) -> dict:
    """The global view's faithfulness of another model (the champion) on the same texts: only the
    first ``explain.faithfulness_max_texts`` of the sample, the ones it is measured on, are explained."""
    first = sample.head(cfg.explain.faithfulness_max_texts)
    return faithfulness_summary(model, tokenizer, _global_attributions(model, tokenizer, first, cfg), cfg)


def global_explanation(
    model, tokenizer, sample, names: list[str], cfg: DictConfig, items: list[TokenAttribution] | None = None
) -> dict:
    """Integrated gradients over the global view's ``sample`` of the test split (or its ``items``,
    already computed): the words with most evidence per class, and the attribution mass over
    words (the drift step's reference)."""
    e = cfg.explain
    items = _global_attributions(model, tokenizer, sample, cfg) if items is None else items
    table = class_evidence(items, len(names))
    return {
        "n_texts": len(sample),
        "n_steps": e.global_n_steps,
        "mean_abs_delta": mean_abs_delta(items),
        "min_count": e.global_min_count,
        "top_words": top_words(table, names, min_count=e.global_min_count, top_k=e.global_top_k),
        "attribution_mass": attribution_mass(items),
        "descriptors": descriptor_columns(items),  # per text: the explanation-drift reference
        # How faithful these attributions are: the reference of the drift step's faithfulness on a
        # batch, and of the champion's on the same texts.
        "faithfulness": faithfulness_summary(model, tokenizer, items, cfg),
    }


def global_summary(view: dict) -> dict[str, str]:
    summary = {
        "global view": f"integrated gradients ({view['n_steps']} steps, mean |delta| {view['mean_abs_delta']:.1e}) "
        f"over {view['n_texts']} test texts; words seen in at least {view['min_count']} texts",
        "global view's faithfulness": _faithfulness_words(view["faithfulness"]),
    }
    for name, rows in view["top_words"].items():
        summary[f"words pushing towards '{name}'"] = ", ".join(f"{r['word']} (x{r['count']})" for r in rows[:10])
    return summary


def _faithfulness_words(quality: dict[str, float]) -> str:
    return (
        f"comprehensiveness AOPC {quality['comprehensiveness_aopc']:.3f} (gain over a random ranking "
        f"{quality['comprehensiveness_gain']:+.3f}), sufficiency AOPC {quality['sufficiency_aopc']:.3f} "
        f"(gain {quality['sufficiency_gain']:+.3f})"
    )
