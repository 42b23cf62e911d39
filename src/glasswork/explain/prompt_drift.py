"""Explanation drift for generative models: where integrated gradients put the evidence for the
model's own answer among the words of the user's prompt, on test prompts (the explain step's
reference, ``global_importance.json``) against a batch's prompts, and whether the explanations
still carry the answers there.

The three descriptors of the text classifier (:func:`glasswork.explain.global_importance.
explanation_descriptors`), each a share of a prompt's |attribution| summed over the answer's
tokens, with the model's own words (:func:`glasswork.explain.generation.word_groups`): on words
without letters (numbers, symbols), on words the tokenizer split into several pieces (rare or
foreign words), and on the single most attributed word. Tested with Evidently's K-S test, one
descriptor enough at ``drift.explanation_alpha`` over three (Bonferroni); besides, the
faithfulness gains on both sides with an interval on their change (reported, not voted).

Both sides are measured by the same function as the explain step's faithfulness
(``explain.faithfulness_max_texts`` prompts each: integrated gradients at ``explain.n_steps``):
the reference is those test prompts, so a sample that small has little power, which the drift
step's ``n_current``/``n_reference`` say.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.explain.global_importance import DESCRIPTORS


def prompt_descriptors(
    tokenizer, ids: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], scores: Sequence[np.ndarray]
) -> dict[str, list[float]]:
    """Per descriptor, its value for each prompt: ``scores`` are each prompt's per-token
    importance (|attribution| summed over the answer), ``spans`` the user's tokens in ``ids``."""
    from glasswork.explain.generation import word_groups

    rows = []
    for prompt_ids, (start, end), importance in zip(ids, spans, scores, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(list(prompt_ids[start:end]))
        mass = np.abs(np.asarray(importance, dtype=np.float64)[start:end])
        groups = word_groups(tokens)
        words: dict[int, list[int]] = {}
        for position, group in enumerate(groups):
            words.setdefault(group, []).append(position)
        total = float(mass.sum()) or 1.0
        # Letters as the token reads ("Ġ", the byte-level space, is a letter to Python); a word is
        # split when several of its pieces hold letters ("magn|if|ique", not "film|,").
        lettered = [any(c.isalpha() for c in tokenizer.convert_tokens_to_string([t])) for t in tokens]
        masses = {g: float(mass[p].sum()) for g, p in words.items()}
        pieces = {g: sum(lettered[i] for i in p) for g, p in words.items()}
        rows.append(
            {
                "mass_non_letters": sum(m for g, m in masses.items() if pieces[g] == 0) / total,
                "mass_split_words": sum(m for g, m in masses.items() if pieces[g] > 1) / total,
                "mass_top_word": max(masses.values(), default=0.0) / total,
            }
        )
    return {name: [round(r[name], 5) for r in rows] for name in DESCRIPTORS}


def digests(prompts: Sequence[str]) -> list[str]:
    """The prompts' md5s: the reference lists the prompts it explained, so that a batch drawn from
    the same split (``drift.current=test``) is compared on other prompts, not on the same ones."""
    return [hashlib.md5(str(p).encode("utf-8")).hexdigest() for p in prompts]


def explanation_drift(reference: dict | None, model, current: pd.DataFrame, cfg: DictConfig):
    """How the attributions moved from the test prompts (``reference``) to the batch's (at most
    ``explain.faithfulness_max_texts`` and ``drift.explain_sample`` of ``current``, leaving out any
    the reference explained): the summary for ``drift.json`` and Evidently's report (``None``
    when not computed)."""
    from glasswork.explain.generation_step import measure_prompts
    from glasswork.explain.global_importance import descriptor_drift, quality_change

    reference = reference or {}
    known = reference.get("faithfulness", {})
    if "descriptors" not in known:
        status = "not computed: the explain step's global_importance.json is missing (run `glasswork explain`)"
        return {"status": status}, None
    seen = set(reference.get("prompt_digests", ()))
    prompts = current["prompt"].fillna("").astype(str).tolist()
    n = min(cfg.drift.explain_sample, cfg.explain.faithfulness_max_texts)
    kept = [p for p, d in zip(prompts, digests(prompts), strict=True) if d not in seen][:n]
    if len(kept) < 2:
        status = f"not computed: {len(kept)} prompts to explain (drift.explain_sample, at least 2)"
        return {"status": status + f"; {len(prompts) - len(kept)} were the reference's own"}, None
    _, found = measure_prompts(model, kept, cfg)
    alpha = cfg.drift.explanation_alpha
    n = (len(kept), known["n_texts"])
    summary, report = descriptor_drift(known["descriptors"], found["descriptors"], DESCRIPTORS, alpha, *n)
    before, after = ({k: v for k, v in side.items() if k != "descriptors"} for side in (known, found))
    summary["faithfulness"] = quality_change(before, after, alpha)
    return summary, report
