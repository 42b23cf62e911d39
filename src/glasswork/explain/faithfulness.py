"""Is an explanation faithful to the model? Comprehensiveness and sufficiency (DeYoung et al.,
ERASER, ACL 2020, https://arxiv.org/abs/1911.03429), each with a random-ranking baseline.

For a text ``x`` whose predicted class has probability ``p(x)`` and the top ``k`` fraction of its
tokens by attribution ``r_k``:

- comprehensiveness(k) = p(x) - p(x without r_k): high when the tokens the explanation ranks
  first really carry the prediction (deleting them hurts);
- sufficiency(k) = p(x) - p(r_k alone): low when those tokens alone are enough.

Their area over the perturbation curve (AOPC) averages each over the fractions: ERASER's bins,
1, 5, 10, 20 and 50% of the tokens (:data:`ERASER_BINS`, the default ``explain.fractions``), so
the figures compare with published ones. The same numbers averaged over at least
:data:`MIN_RANDOM` random rankings of the same tokens show how much better than chance the
explanation is. Tokens are deleted (not masked), as in ERASER; the tokenizer's start/end tokens
always stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from glasswork.errors import ConfigError
from glasswork.explain.attributions import TokenAttribution, frame_tokens, model_device

# Start/end and pad tokens of the BERT and RoBERTa families, for code that has the tokens but no
# tokenizer (reading attributions.json); code with the tokenizer asks it (``frame_tokens``).
SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"}
ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)  # DeYoung et al. 2020, section 4.2
MIN_RANDOM = 5  # random rankings per text: fewer leave the chance level too noisy to compare with


@dataclass(frozen=True)
class Chance:
    """The random rankings' figures (``random_*`` keys of :func:`by_text`) for some texts: they
    depend on the texts, the model and the predicted classes, not on the explanation, so every
    method explaining the same texts shares them (and is compared with the same rankings)."""

    ids: list[list[int]]
    targets: list[int]
    texts: dict[str, np.ndarray]


def faithfulness(
    model,
    tokenizer,
    items: Sequence[TokenAttribution],
    fractions: Sequence[float],
    *,
    n_random: int = 5,
    seed: int = 0,
    chance: Chance | None = None,
) -> dict[str, float]:
    """AOPC comprehensiveness and sufficiency of ``items`` and of random rankings of the same tokens.

    Returns flat metrics: ``comprehensiveness_aopc``, ``sufficiency_aopc``, the same with a
    ``random_`` prefix, their differences (``*_gain``), and one value per fraction.
    """
    texts = by_text(model, tokenizer, items, fractions, n_random=n_random, seed=seed, chance=chance)
    return _aggregate(texts, fractions)


def _aggregate(texts: dict[str, np.ndarray], fractions: Sequence[float]) -> dict[str, float]:
    metrics = {key: float(values.mean()) for key, values in texts.items()}
    for prefix in ("", "random_"):
        for name in ("comprehensiveness", "sufficiency"):
            metrics[f"{prefix}{name}_aopc"] = float(np.mean([metrics[f"{prefix}{name}_top{f:g}"] for f in fractions]))
    return metrics | {k: float(v.mean()) for k, v in gains_by_text(texts, fractions).items()}


def by_text(
    model,
    tokenizer,
    items: Sequence[TokenAttribution],
    fractions: Sequence[float],
    *,
    n_random: int = 5,
    seed: int = 0,
    chance: Chance | None = None,
) -> dict[str, np.ndarray]:
    """Per text, in the order of ``items``: comprehensiveness and sufficiency at each fraction
    (``comprehensiveness_top0.1``, ...) for the explanation's ranking, and the same averaged over
    ``n_random`` random rankings (``random_`` prefix; ``chance``'s where it holds the same texts
    and classes). :func:`faithfulness` averages them."""
    skip = frame_tokens(tokenizer)
    ranked = [_ranking(item.scores, item.tokens, skip) for item in items]
    ids = [tokenizer.convert_tokens_to_ids(item.tokens) for item in items]
    targets = [item.predicted for item in items]
    if chance is None or (chance.ids, chance.targets) != (ids, targets):
        chance = chance_by_text(model, tokenizer, items, fractions, n_random=n_random, seed=seed)
    return _drops(model, tokenizer, ids, targets, [ranked], fractions, "") | chance.texts


def chance_by_text(
    model, tokenizer, items: Sequence[TokenAttribution], fractions: Sequence[float], *, n_random: int, seed: int
) -> Chance:
    """The ``random_*`` figures of :func:`by_text`, for any explanation of ``items``' texts."""
    rng = np.random.default_rng(seed)
    skip = frame_tokens(tokenizer)
    # Permutations of the positions in text order: the same for every method's ranking.
    positions = [np.sort(_ranking(item.scores, item.tokens, skip)) for item in items]
    rankings = [[rng.permutation(p) for p in positions] for _ in range(n_random)]
    ids = [tokenizer.convert_tokens_to_ids(item.tokens) for item in items]
    targets = [item.predicted for item in items]
    return Chance(ids, targets, _drops(model, tokenizer, ids, targets, rankings, fractions, "random_"))


def _drops(model, tokenizer, ids, targets, rankings_sets, fractions, prefix: str) -> dict[str, np.ndarray]:
    full = _probabilities(model, tokenizer, ids, targets)
    texts: dict[str, np.ndarray] = {}
    for name, keep_top in (("comprehensiveness", False), ("sufficiency", True)):
        for fraction in fractions:
            drops = [
                full - _probabilities(model, tokenizer, _perturb(ids, rankings, fraction, keep_top), targets)
                for rankings in rankings_sets
            ]
            texts[f"{prefix}{name}_top{fraction:g}"] = np.mean(drops, axis=0)  # MLflow keys allow no "@"
    return texts


def gains_by_text(texts: dict[str, np.ndarray], fractions: Sequence[float]) -> dict[str, np.ndarray]:
    """Each text's gains over its random rankings, AOPC over ``fractions`` (from :func:`by_text`)."""

    def aopc(key: str) -> np.ndarray:
        return np.mean([texts[f"{key}_top{f:g}"] for f in fractions], axis=0)

    return {
        "comprehensiveness_gain": aopc("comprehensiveness") - aopc("random_comprehensiveness"),
        "sufficiency_gain": aopc("random_sufficiency") - aopc("sufficiency"),
    }


SUMMARY = ("comprehensiveness_aopc", "sufficiency_aopc", "comprehensiveness_gain", "sufficiency_gain")


def measure(model, tokenizer, items: Sequence[TokenAttribution], cfg, chance: Chance | None = None) -> dict[str, float]:
    """:func:`faithfulness` with the config's fractions, random rankings and seed (``cfg.explain``,
    ``cfg.seed``): one measure wherever explanations are compared."""
    e = cfg.explain
    return faithfulness(model, tokenizer, items, list(e.fractions), n_random=e.n_random, seed=cfg.seed, chance=chance)


def faithfulness_summary(model, tokenizer, items: Sequence[TokenAttribution], cfg) -> dict:
    """The AOPCs and the gains over a random ranking of the first ``explain.faithfulness_max_texts``
    of ``items``, with the explain step's fractions and number of random rankings, and each text's
    gains (``by_text``, for an interval on a difference): the figures compared between the test
    split and a batch."""
    check_sample(cfg.explain.faithfulness_max_texts)
    items = items[: cfg.explain.faithfulness_max_texts]
    e = cfg.explain
    texts = by_text(model, tokenizer, items, list(e.fractions), n_random=e.n_random, seed=cfg.seed)
    quality, gains = _aggregate(texts, list(e.fractions)), gains_by_text(texts, list(e.fractions))
    return {k: quality[k] for k in SUMMARY} | {
        "n_texts": len(items),
        "by_text": {k: [round(float(x), 6) for x in v] for k, v in gains.items()},
    }


GAINS = ("comprehensiveness_gain", "sufficiency_gain")


def gain_change(
    reference: dict[str, list[float]], current: dict[str, list[float]], alpha: float, *, paired: bool = False
) -> dict[str, dict]:
    """Did each gain over a random ranking move from ``reference`` to ``current`` (``by_text``
    gains from :func:`faithfulness_summary`)? The difference of the means (current - reference)
    with a t interval at ``1 - alpha / 2`` (Bonferroni over the two gains), and ``lower`` or
    ``higher`` when the interval lies wholly below or above zero, else ``unchanged``.

    Two sets of different texts (a batch against the test split) take Welch's interval; with
    ``paired`` the two lists hold the same texts in the same order (two models on one sample),
    and the interval is on the per-text differences, which leaves out how hard each text is and
    so is much narrower. Gains that differ by chance alone are called ``lower`` or ``higher``
    (either gain) at a rate of at most ``alpha``."""
    changes: dict[str, dict] = {}
    for name in GAINS:
        ref, cur = np.asarray(reference[name], dtype=float), np.asarray(current[name], dtype=float)
        if paired and len(ref) != len(cur):
            raise ValueError(f"paired gains need the same texts: {len(ref)} and {len(cur)} values of {name}")
        if min(len(ref), len(cur)) < 2:
            changes[name] = {"verdict": f"not tested: {len(ref)} and {len(cur)} texts (at least 2 a side)"}
            continue
        difference = float(cur.mean() - ref.mean())
        spread = np.ptp(cur - ref) if paired else max(np.ptp(ref), np.ptp(cur))
        if spread == 0:  # no spread: the difference is exact
            difference = 0.0 if abs(difference) < 1e-9 else difference  # but for the means' rounding
            low = high = difference
            p_value = 1.0 if difference == 0 else 0.0
        else:
            test = stats.ttest_rel(cur, ref) if paired else stats.ttest_ind(cur, ref, equal_var=False)
            low, high = (float(x) for x in test.confidence_interval(1 - alpha / len(GAINS)))
            p_value = float(test.pvalue)
        verdict = "lower" if high < 0 else "higher" if low > 0 else "unchanged"
        changes[name] = {"difference": difference, "ci_low": low, "ci_high": high, "p_value": p_value,
                         "confidence": 1 - alpha / len(GAINS), "verdict": verdict}  # fmt: skip
    return changes


def change_words(change: dict) -> str:
    """One gain's entry of :func:`gain_change` in words: verdict, difference and interval."""
    if "difference" not in change:
        return change["verdict"]
    return (
        f"{change['verdict']}, {change['difference']:+.3f}, "
        f"{change['confidence']:.1%} interval {change['ci_low']:+.3f} to {change['ci_high']:+.3f}"
    )


def check_alpha(setting: str, alpha: float | None, off: str | None = None) -> None:
    """A significance level lies strictly between 0 and 1; ``off`` names what null turns off,
    where null is allowed."""
    if alpha is None and off is not None:
        return
    if alpha is None or not 0 < alpha < 1:
        null = f", or null to turn {off} off" if off else ""
        raise ConfigError(f"{setting}={alpha}: expected a significance level between 0 and 1 (e.g. 0.05){null}")


def check_sample(max_texts: int) -> None:
    """Refuse a faithfulness sample of no texts."""
    if max_texts < 1:
        raise ConfigError(f"explain.faithfulness_max_texts={max_texts}: expected at least 1 text")


def check_measure(fractions: Sequence[float], n_random: int) -> None:
    """Refuse fractions outside (0, 1] and fewer than :data:`MIN_RANDOM` random rankings."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(
            f"explain.fractions={list(fractions)}: expected fractions of the tokens in (0, 1], "
            f"e.g. ERASER's {list(ERASER_BINS)}"
        )
    if n_random < MIN_RANDOM:
        raise ConfigError(
            f"explain.n_random={n_random}: expected at least {MIN_RANDOM} random rankings per text "
            "(fewer leave the chance level too noisy to compare with)"
        )


def faithfulness_figure(metrics: dict[str, float], methods: Sequence[str], fractions: Sequence[float]):
    """Comprehensiveness and sufficiency per fraction of tokens (``metrics``: the explain step's,
    keyed ``<method>/<name>_top<fraction>``), each method as a solid line beside its random
    ranking, dashed in the same colour. A faithful explanation's solid line stands above its
    dashed one on the left and below it on the right."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharex=True)
    x = 100 * np.asarray(fractions, float)
    panels = (
        ("comprehensiveness", "comprehensiveness: top tokens deleted (higher is better)"),
        ("sufficiency", "sufficiency: top tokens kept alone (lower is better)"),
    )
    for ax, (name, title) in zip(axes, panels, strict=True):
        for i, method in enumerate(methods):
            ours = [metrics[f"{method}/{name}_top{f:g}"] for f in fractions]
            chance = [metrics[f"{method}/random_{name}_top{f:g}"] for f in fractions]
            aopc, random_aopc = metrics[f"{method}/{name}_aopc"], metrics[f"{method}/random_{name}_aopc"]
            ax.plot(x, ours, "o-", color=f"C{i}", label=f"{method}: AOPC {aopc:.3f} (random {random_aopc:.3f})")
            ax.plot(x, chance, "--", color=f"C{i}", alpha=0.6)
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.set_xscale("log")  # ERASER's bins, 1 to 50%, spread evenly
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("% of tokens, ranked by the explanation")
        # Below the panel: inside it, the legend would cover the lines it names.
        ax.legend(
            fontsize=7,
            title="dashed: a random ranking",
            title_fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
        )
    axes[0].set_ylabel("drop in the predicted class's probability")
    fig.tight_layout()
    return fig


def _ranking(scores: Sequence[float], tokens: Sequence[str], skip: set[str] = SPECIAL) -> np.ndarray:
    """Positions of the ordinary tokens (all but ``skip``), most supportive of the prediction first."""
    positions = np.array([i for i, t in enumerate(tokens) if t not in skip])
    if not len(positions):
        return positions
    order = np.argsort(-np.asarray(scores)[positions], kind="stable")
    return positions[order]


def _perturb(ids: list[list[int]], rankings: list[np.ndarray], fraction: float, keep_top: bool) -> list[list[int]]:
    """Delete the top ``fraction`` of each text's ranked tokens, or keep only them."""
    out = []
    for seq, ranking in zip(ids, rankings, strict=True):
        k = max(1, int(round(fraction * len(ranking)))) if len(ranking) else 0
        top = set(ranking[:k].tolist())
        ordinary = set(ranking.tolist())
        keep = [tok for i, tok in enumerate(seq) if (i in top) == keep_top or i not in ordinary]
        out.append(keep)
    return out


@torch.inference_mode()
def _probabilities(model, tokenizer, ids: list[list[int]], targets: list[int], chunk: int = 64) -> np.ndarray:
    """The probability of each text's target class, for token-id sequences of any lengths: in
    chunks of ``chunk`` texts of similar length, so that little of each pass is padding (a
    perturbed text keeps as little as a tenth of its tokens)."""
    pad = tokenizer.pad_token_id
    device = model_device(model)
    order = np.argsort([len(s) for s in ids], kind="stable")
    out = np.empty(len(ids))
    for start in range(0, len(ids), chunk):
        picked = order[start : start + chunk]
        rows = [ids[i] for i in picked]
        width = max(len(s) for s in rows)
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in rows], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in rows], device=device)
        probs = torch.softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1).cpu()
        out[picked] = probs[torch.arange(len(rows)), torch.tensor([targets[i] for i in picked])].numpy()
    return out
