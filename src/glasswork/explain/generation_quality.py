"""How faithful a generative model's explanations are, over plain token ids: the prompt's top
tokens deleted (comprehensiveness) or kept alone (sufficiency) against random rankings, the fall of
the answer's teacher-forced log-probability (:func:`faithfulness`); and the cascading
model-randomisation check of :func:`glasswork.explain.generation.integrated_gradients`
(:func:`randomisation_check`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from glasswork.explain.faithfulness import _aggregate, _perturb, gains_by_text
from glasswork.explain.generation import continuation_logprobs, integrated_gradients
from glasswork.explain.sanity import _reinitialise, cascade


def prompt_importance(scores: np.ndarray, n_prompt: int) -> np.ndarray:
    """One ranking score per prompt token: its |attribution| summed over the answer's tokens."""
    return np.abs(np.asarray(scores, float)).sum(axis=0)[:n_prompt]


def _ranking(scores: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    positions = np.arange(*span)
    return positions[np.argsort(-np.asarray(scores)[positions], kind="stable")]


def _falls(model, prompts, answers, rankings_sets, fractions, prefix: str, batch_size) -> dict[str, np.ndarray]:
    """``{prefix}comprehensiveness_top<f>`` and ``..sufficiency..``: per prompt, the fall of the
    answer's total log-probability with the top ``f`` of each ranking deleted or kept alone,
    averaged over the ranking sets. Every perturbed prompt goes into one batched scoring."""
    keys = [(name, keep, f, k) for name, keep in (("comprehensiveness", False), ("sufficiency", True))
            for f in fractions for k in range(len(rankings_sets))]  # fmt: skip
    cut = [_perturb(prompts, rankings_sets[k], f, keep) for _, keep, f, k in keys]
    totals = [lp.sum() for lp in continuation_logprobs(model, [p for c in cut for p in c],
                                                        list(answers) * len(keys), batch_size)]  # fmt: skip
    full = np.array([lp.sum() for lp in continuation_logprobs(model, prompts, answers, batch_size)])
    texts: dict[str, np.ndarray] = {}
    for i, (name, _, f, _) in enumerate(keys):
        fall = full - np.array(totals[i * len(prompts) : (i + 1) * len(prompts)])
        key = f"{prefix}{name}_top{f:g}"
        texts[key] = texts.get(key, 0) + fall / len(rankings_sets)
    return texts


def chance_by_prompt(
    model, prompts, answers, spans, fractions: Sequence[float], *, n_random: int = 5, seed: int = 0, batch_size=None
) -> dict[str, np.ndarray]:
    """The ``random_*`` figures of :func:`faithfulness`: they depend on the prompts, answers and
    model only, so every method measured on the same prompts can share them."""
    rng = np.random.default_rng(seed)
    sets = [[rng.permutation(np.arange(*span)) for span in spans] for _ in range(n_random)]
    return _falls(model, prompts, answers, sets, fractions, "random_", batch_size)


def faithfulness(
    model,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    scores: Sequence[np.ndarray],
    fractions: Sequence[float],
    *,
    spans: Sequence[tuple[int, int]] | None = None,
    n_random: int = 5,
    seed: int = 0,
    chance: dict[str, np.ndarray] | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Comprehensiveness and sufficiency of a ranking of the prompt tokens, against random rankings.

    ``scores[i]``: one score per token of ``prompts[i]`` (:func:`prompt_importance`), highest
    first. Only the tokens in ``spans[i]`` (``[start, end)``; the whole prompt by default) are
    ranked, deleted or kept: a chat template's frame always stays. Tokens are deleted from the
    prompt, not replaced (ERASER's convention, as for the text classifier): a replacement token is
    still read. The measure is the fall of the answer's total teacher-forced log-probability (in
    nats; a classifier's is a probability). Returns the aggregate (``faithfulness.py``'s keys: per
    fraction, AOPC, ``random_`` ones, the ``*_gain`` over random, each gain's 95% t interval over
    prompts in ``*_gain_ci_low``/``_high``) and the per-prompt arrays (the gains' too, for
    ``faithfulness.gain_change``)."""
    spans = list(spans) if spans is not None else [(0, len(p)) for p in prompts]
    prompts = [list(p) for p in prompts]
    ranked = [_ranking(s, span) for s, span in zip(scores, spans, strict=True)]
    texts = _falls(model, prompts, answers, [ranked], fractions, "", batch_size)
    texts |= chance or chance_by_prompt(model, prompts, answers, spans, fractions, n_random=n_random, seed=seed,
                                        batch_size=batch_size)  # fmt: skip
    metrics = _aggregate(texts, fractions)
    gains = gains_by_text(texts, fractions)
    for name, values in gains.items():
        low, high = _interval(values)
        metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return metrics, texts | gains


def _interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """A t interval on the mean of ``values`` (the mean itself when there is no spread)."""
    if len(values) < 2 or np.ptp(values) == 0:
        return float(np.mean(values)), float(np.mean(values))
    low, high = stats.ttest_1samp(values, 0).confidence_interval(confidence)
    return float(low), float(high)


def _untied(model):
    """A copy whose output head no longer shares the input embeddings' weight (SmolLM2 ties them):
    else re-initialising the head, the cascade's first stage, would randomise the embeddings too."""
    twin = copy.deepcopy(model)
    head, embed = twin.get_output_embeddings(), twin.get_input_embeddings()
    if head is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
    return twin


def _agreement(
    trained: list[np.ndarray], randomised: list[np.ndarray], n_prompts: list[int], frame: tuple[int, int] = (0, 0)
) -> float:
    """Mean Spearman of |scores| over the entries the model can see (``j`` against positions
    before ``n_prompt + j``) and that were attributed (not a kept ``frame``'s): the structural
    zeros would agree whatever the weights."""
    rhos = []
    head, tail = frame
    for a, b, n in zip(trained, randomised, n_prompts, strict=True):
        columns = np.arange(a.shape[1])
        seen = columns[None, :] < n + np.arange(a.shape[0])[:, None]
        seen &= ((columns >= head) & ((columns < n - tail) | (columns >= n)))[None, :]
        rho = stats.spearmanr(np.abs(a[seen]), np.abs(b[seen])).statistic
        rhos.append(0.0 if np.isnan(rho) else float(rho))  # constant scores: nothing agrees
    return float(np.mean(rhos))


def randomisation_check(
    model,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    seed: int,
    max_spearman: float,
    max_stages: int | None = None,
    **ig_args,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The cascading model-randomisation check (``sanity.py``) of :func:`integrated_gradients`:
    the layers of a copy re-initialised from the top (``sanity.cascade``: the head, each decoder
    block from the last, the embeddings), the Spearman of |attributions| with the trained model's
    after each. ``max_stages`` explains only that many stages, evenly spread, the last included
    (every layer is still randomised in turn): SmolLM2 has 32. Returns ``sanity``'s metrics
    (``integrated_gradients/randomisation_spearman_<k>``, ``..._mean``, ``..._passed``) and curve."""

    def explain(m) -> list[np.ndarray]:
        return [integrated_gradients(m, p, a, **ig_args).scores for p, a in zip(prompts, answers, strict=True)]

    trained = explain(model)
    twin = _untied(model)
    stages = cascade(twin)
    shown = set(range(len(stages)))
    if max_stages is not None and max_stages < len(stages):
        shown = {int(round(i)) for i in np.linspace(len(stages) - 1, 0, max_stages)}
    torch.manual_seed(seed)
    curve: dict[str, float] = {}
    for k, (name, modules) in enumerate(stages):
        _reinitialise(modules)  # on top of the stages above: the randomisation cascades
        if k in shown:
            curve[name] = _agreement(trained, explain(twin), [len(p) for p in prompts], ig_args.get("frame", (0, 0)))
    method = "integrated_gradients"
    values = list(curve.values())
    metrics = {f"{method}/randomisation_spearman_{k}": rho for k, rho in enumerate(values, start=1)}
    mean = float(np.mean(values))
    metrics |= {
        f"{method}/randomisation_spearman": values[-1],
        f"{method}/randomisation_spearman_mean": mean,
        f"{method}/randomisation_passed": float(mean < max_spearman),
    }
    return metrics, {method: curve}
