"""The explanation gate: rules on the explain step's output that a model must pass to take
``champion`` (it is still registered when it fails, for the record).

- ``registry.explain_thresholds``: minimum values of ``explain/*`` metrics, e.g.
  ``{integrated_gradients/comprehensiveness_gain: 0.05}``;
- ``registry.forbidden_tokens``: tokens the model must not rely on (names of people or places,
  say): none of them may be among a probe text's ``registry.forbidden_top_k`` most supportive
  tokens under any method;
- ``registry.faithfulness_gate``: no faithfulness gain of the model's integrated gradients may
  be significantly lower than the champion's on the same test texts (the explain step's paired
  interval, ``contrast.json``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from glasswork.errors import PipelineOrderError
from glasswork.explain.faithfulness import SPECIAL, change_words
from glasswork.outputs import read_json
from glasswork.steps import output


def explanation_failures(cfg: DictConfig) -> list[str]:
    """Every rule of the gate that the explained model fails, in words (empty when it passes)."""
    rules = cfg.registry
    if not rules.explain_thresholds and not rules.forbidden_tokens:
        return []
    folder = output(cfg, "explain")
    if not output(cfg, "explain", "metrics.json").is_file():
        raise PipelineOrderError(
            f"{folder / 'metrics.json'} is missing: the explanation gate needs `glasswork explain` first"
        )
    metrics = read_json(folder / "metrics.json")["explain"]
    failures = []
    for name, minimum in (rules.explain_thresholds or {}).items():
        value = metrics.get(name)
        if value is None:
            failures.append(f"explanation rule on {name}: no such explain metric (have e.g. {sorted(metrics)[:4]})")
        elif value < minimum:
            failures.append(f"explain/{name} = {value:.4f} is below the required {minimum}")
    if rules.forbidden_tokens:
        failures += _forbidden(
            read_json(folder / "attributions.json"), set(rules.forbidden_tokens), rules.forbidden_top_k
        )
    return failures


def faithfulness_gate(cfg: DictConfig, champion_version: str | None) -> tuple[list[str], list[str]]:
    """The faithfulness gate, in words: its reasons against promotion (each gain that fell
    significantly from the champion's, ``champion_version`` being the alias's holder now, or why
    the comparison cannot be read) and, when nothing fell, the line that says so. Both empty when
    the gate is off or there is no champion."""
    if not cfg.registry.faithfulness_gate or champion_version is None:
        return [], []
    path = output(cfg, "explain", "contrast.json")
    if not path.is_file():
        raise PipelineOrderError(
            f"{path} is missing: the faithfulness gate needs `glasswork explain` first "
            "(or registry.faithfulness_gate=false)"
        )
    versus = read_json(path)
    compared, paired = versus.get("champion_version"), versus.get("global_faithfulness")
    if compared != champion_version or paired is None:
        found = f"compared with champion v{compared}" if compared else f"said {versus.get('status', 'nothing')!r}"
        return [
            f"faithfulness gate: no paired faithfulness measure against champion v{champion_version} (the explain "
            f"step {found}): re-run `glasswork explain` (or set registry.faithfulness_gate=false)"
        ], []
    # The global view is always integrated gradients, whatever explain.methods lists.
    against = f"from champion v{champion_version}'s on {paired['n_texts']} test examples"
    fell = [
        f"integrated gradients' {name.removesuffix('_gain')} gain fell {against}: {change_words(change)}"
        for name, change in paired["change"].items()
        if change["verdict"] == "lower"
    ]
    if fell:
        return fell, []
    held = "; ".join(f"{name.removesuffix('_gain')} {change_words(c)}" for name, c in paired["change"].items())
    return [], [f"integrated gradients' faithfulness gains did not fall {against} ({held})"]


def _forbidden(explained: dict, forbidden: set[str], top_k: int) -> list[str]:
    failures = []
    for method, items in explained.items():
        for item in items:
            words = whole_words(item["tokens"], item["scores"])
            top = [w for w, _ in sorted(words, key=lambda ws: -ws[1])[:top_k]]
            hits = sorted(forbidden & {w.lower() for w in top})
            if hits:
                failures.append(f"{method} relies on forbidden token(s) {hits} in {item['text'][:80]!r}")
    return failures


def whole_words(tokens: list[str], scores: list[float]) -> list[tuple[str, float]]:
    """Whole words and their summed scores (word pieces '##x' join the word before them)."""
    words: list[tuple[str, float]] = []
    for token, score in zip(tokens, scores, strict=True):
        if token in SPECIAL:
            continue
        if token.startswith("##") and words:
            word, total = words[-1]
            words[-1] = (word + token[2:], total + score)
        else:
            words.append((token, score))
    return words
