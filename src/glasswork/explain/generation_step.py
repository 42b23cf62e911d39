"""The ``explain`` step for ``task=text_generation``: for each probe prompt, the model's own greedy
answer explained token by token (integrated gradients on the embeddings, to the prompt's tokens
and the answer's earlier ones; word ablation), why that answer rather than the next most likely
one (contrastive integrated gradients), the attention where the model exposes it; how faithful
integrated gradients are (the prompt's top tokens deleted or kept alone against random rankings,
the fall of the answer's log-probability), the cascading randomisation check, and the same
faithfulness for the champion on the same prompts (the register step's gate reads it)."""

from __future__ import annotations

import html
import logging
import time
from typing import cast

import mlflow
import numpy as np
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.prepare import load_labels, load_probe, load_split
from glasswork.errors import ConfigError
from glasswork.explain import generation as gen
from glasswork.explain import generation_quality as quality
from glasswork.explain.budget import check_share, cost
from glasswork.explain.embeddings import png_bytes
from glasswork.explain.faithfulness import (
    GAINS,
    SUMMARY,
    check_alpha,
    check_measure,
    check_sample,
    faithfulness_figure,
)
from glasswork.explain.prompt_drift import digests, prompt_descriptors
from glasswork.explain.report import STYLE, figure_sections, quality_rows
from glasswork.explain.sanity import cascade_figure, check_sanity
from glasswork.models.answers import AnswerModel, normalise
from glasswork.models.backbone import model_dir
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)

METHODS = ("integrated_gradients", "feature_ablation")
# The baseline of integrated gradients: token id 0 at every position (SmolLM2's <|endoftext|>;
# Captum's TextTokenInput default). Not every embedding at zero: a Llama's RMSNorm makes the output
# jump within a few hundredths of the path's start from zero, where 8 or 24 interpolation steps
# leave half the log-probability unaccounted for (tests/model/test_generation_explain.py).
BASELINE_ID = 0
BASELINE = (
    "token id 0 (<|endoftext|> in SmolLM2) at every position of the user's text and the answer "
    "(the chat template's tokens keep their own)"
)


def check_generation_explain(cfg: DictConfig) -> None:
    """The generation explain step's settings, before anything is read or written."""
    e = cfg.explain
    unknown = [m for m in e.methods if m not in METHODS]
    if unknown or not e.methods:
        raise ConfigError(f"explain.methods={list(e.methods)}: unknown {unknown}; for text_generation: {list(METHODS)}")
    check_measure(e.fractions, e.n_random)
    check_sanity(e.sanity_n_texts, None)
    check_sample(e.faithfulness_max_texts)
    check_share(e.max_share_of_train)
    check_alpha("explain.contrast_alpha", e.contrast_alpha)
    if not isinstance(e.n_steps, int) or isinstance(e.n_steps, bool) or e.n_steps < 1:
        raise ConfigError(
            f"explain.n_steps={e.n_steps!r}: expected a whole number of interpolation steps of at least 1"
        )


def user_span(model: AnswerModel, ids: list[int]) -> tuple[int, int]:
    """Where the user's own text lies in a templated prompt's ids: after the template's head (a
    system line, the user turn's opening) and before its tail (the turn's end, the assistant's
    opening). Only those tokens are ranked, deleted or kept: the template is the model's frame."""
    empty = model.prompt_ids([""])[0]
    head = 0
    while head < min(len(empty), len(ids)) and empty[head] == ids[head]:
        head += 1
    tail = 0
    while tail < min(len(empty), len(ids)) - head and empty[-1 - tail] == ids[-1 - tail]:
        tail += 1
    return head, len(ids) - tail


def frame(span: tuple[int, int], n_prompt: int) -> tuple[int, int]:
    """The chat template's tokens before and after the user's text: integrated gradients keep them
    at their own embeddings (only the user's words move from the baseline; the template's first
    token, where a decoder parks its attention, stays what the model always saw)."""
    return span[0], n_prompt - span[1]


class _Explained:
    """One prompt, the model's greedy answer to it, and their explanations."""

    def __init__(self, model: AnswerModel, prompt: str, cfg: DictConfig):
        e, tok = cfg.explain, model.tokenizer
        self.prompt = prompt
        self.prompt_ids = model.prompt_ids([prompt])[0]
        self.span = user_span(model, self.prompt_ids)
        self.frame = frame(self.span, len(self.prompt_ids))
        answer = model.generate([prompt])[0]
        # The answer's own tokens, not the end-of-turn token that closes it (its probability says
        # when the model stops, not what it says); an empty answer is explained as its end.
        self.answer_ids = answer["ids"] or model.end[:1]
        self.response = answer["response"]
        self.prompt_tokens = tok.convert_ids_to_tokens(self.prompt_ids)
        self.answer_tokens = tok.convert_ids_to_tokens(self.answer_ids)
        n = len(self.prompt_ids)
        self.ig = gen.integrated_gradients(
            model.model, self.prompt_ids, self.answer_ids, n_steps=e.n_steps, baseline=BASELINE_ID, frame=self.frame
        )
        self.scores: dict[str, np.ndarray] = {"integrated_gradients": self.ig.scores}
        if "feature_ablation" in e.methods:
            start, end = self.span
            groups = [-1] * start + gen.word_groups(self.prompt_tokens[start:end]) + [-1] * (n - end)
            self.scores["feature_ablation"] = gen.feature_ablation(
                model.model, self.prompt_ids, self.answer_ids, groups, neutral_id=BASELINE_ID
            )
        logps = model.answer_logprobs([prompt])[0]
        first, second = (int(i) for i in np.argsort(-logps)[:2])
        found = gen.contrastive(
            model.model,
            self.prompt_ids,
            model.answer_ids[first],
            model.answer_ids[second],
            n_steps=e.n_steps,
            frame=self.frame,
            baseline=BASELINE_ID,
        )
        self.contrast = {
            "a": model.classes[first],
            "b": model.classes[second],
            "scores": found.scores,
            "logp_a": found.logp_a,
            "logp_b": found.logp_b,
            "residual": found.residual,
        }
        # Each answer token's attention to the prompt (rows: the positions that predict it).
        self.attention, self.attention_note = gen.attention(model.model, self.prompt_ids, self.answer_ids)

    def record(self, actual: str) -> dict:
        start, end = self.span
        return {
            "prompt_tokens": self.prompt_tokens,
            "user_span": [start, end],
            "answer_tokens": self.answer_tokens,
            "response": self.response,
            "actual": actual,
            "scores": {m: np.round(v[:, : len(self.prompt_ids)], 6).tolist() for m, v in self.scores.items()},
            "completeness_residual": np.round(self.ig.residuals, 6).tolist(),
            "contrast": {
                k: (np.round(v, 6).tolist() if isinstance(v, np.ndarray) else v) for k, v in self.contrast.items()
            },
            "attention": None if self.attention is None else np.round(self.attention, 6).tolist(),
            "attention_note": self.attention_note,
        }


def measure_prompts(model: AnswerModel, prompts: list[str], cfg: DictConfig) -> tuple[dict, dict]:
    """Integrated gradients' faithfulness on ``prompts``: each prompt's greedy answer, its user
    tokens ranked by the summed |attribution| over the answer, deleted (comprehensiveness) or kept
    alone (sufficiency) against ``explain.n_random`` random rankings; the fall of the answer's
    log-probability. Returns the metrics and the summary the champion contrast pairs (with
    ``descriptors``: where each prompt's attribution falls, the explanation drift's measure)."""
    e = cfg.explain
    ids = model.prompt_ids(prompts)
    answers = [g["ids"] or model.end[:1] for g in model.generate(prompts)]
    spans = [user_span(model, p) for p in ids]
    scores = [
        quality.prompt_importance(
            gen.integrated_gradients(
                model.model, p, a, n_steps=e.n_steps, baseline=BASELINE_ID, frame=frame(span, len(p))
            ).scores,
            len(p),
        )
        for p, a, span in zip(ids, answers, spans, strict=True)
    ]
    metrics, texts = quality.faithfulness(
        model.model, ids, answers, scores, list(e.fractions), spans=spans, n_random=e.n_random, seed=cfg.seed
    )
    summary = {k: metrics[k] for k in SUMMARY} | {
        "n_texts": len(prompts),
        "by_text": {k: [round(float(x), 6) for x in texts[k]] for k in GAINS},
        "descriptors": prompt_descriptors(model.tokenizer, ids, spans, scores),
    }
    return metrics, summary


def explain_generation(cfg: DictConfig) -> dict:
    """Explain the ``explain.n_probe`` probe prompts; measure integrated gradients' faithfulness on
    ``explain.faithfulness_max_texts`` test prompts and the randomisation check on
    ``explain.sanity_n_texts``; compare with the champion; write ``artifacts/explain/``
    (attributions.html and .json, heatmaps.png, contrastive.png, faithfulness.png,
    randomisation.png, contrast.json, metrics.json) and log them to the model's MLflow run."""
    from glasswork import tasks
    from glasswork.explain import generation_figures as figs

    started = time.perf_counter()
    check_generation_explain(cfg)
    e = cfg.explain
    answers = [str(c) for c in load_labels(cfg)["classes"]]
    model = cast(AnswerModel, tasks.build(cfg).predictor(model_dir(cfg)))
    probe, test = load_probe(cfg), load_split(cfg, "test")
    explained = []
    for prompt, label in zip(probe["prompt"], probe["label"], strict=True):
        explained.append((_Explained(model, prompt, cfg), answers[int(label)]))
    sample = test.sample(n=min(len(test), e.faithfulness_max_texts), random_state=cfg.seed)["prompt"].tolist()
    measured, summary = measure_prompts(model, sample, cfg)
    metrics: dict[str, float] = {f"integrated_gradients/{k}": v for k, v in measured.items()}
    checked = test.sample(n=min(len(test), e.sanity_n_texts), random_state=cfg.seed)["prompt"].tolist()
    checked_ids = model.prompt_ids(checked)
    sanity, curves = quality.randomisation_check(
        model.model,
        checked_ids,
        [g["ids"] or model.end[:1] for g in model.generate(checked)],
        seed=cfg.seed,
        max_spearman=e.sanity_max_spearman,
        max_stages=e.sanity_max_stages,
        n_steps=e.global_n_steps,  # as the text task's check: fewer steps, every stage re-explained
        baseline=BASELINE_ID,
        # The template's head and tail have the same length in every prompt (the user's text varies).
        frame=frame(user_span(model, checked_ids[0]), len(checked_ids[0])),
    )
    metrics |= sanity
    versus = generation_contrast(cfg, summary, sample, answers)
    for k, change in versus.get("global_faithfulness", {}).get("change", {}).items():
        if "difference" in change:
            metrics[f"contrast/global_{k}_change"] = change["difference"]
            metrics[f"contrast/global_{k}_fell"] = int(change["verdict"] == "lower")
    metrics["probe_answer_accuracy"] = float(np.mean([normalise(x.response) == a for x, a in explained]))
    metrics["completeness_residual_max"] = float(max(np.abs(x.ig.residuals).max() for x, _ in explained))
    quality_png = png_bytes(_quality_figure(metrics, list(e.fractions)))
    sanity_png = png_bytes(cascade_figure(curves, len(checked), e.sanity_max_spearman))
    heatmaps_png = png_bytes(
        figs.heatmap_grid([(x.prompt_tokens, x.answer_tokens, x.ig.scores, x.span) for x, _ in explained])
    )
    contrast_png = png_bytes(figs.contrast_figure([(x.prompt_tokens, x.contrast, x.span) for x, _ in explained]))
    figures = {
        "Integrated gradients of each answer token on the prompt's words (probe prompts)": heatmaps_png,
        "Why this answer rather than the other (contrastive integrated gradients)": contrast_png,
        f"How faithful integrated gradients are ({summary['n_texts']} test prompts; dashed: random)": quality_png,
        "Model-randomisation check: layers re-initialised from the top": sanity_png,
    }
    page = _page(explained, metrics, figures, versus, cfg)
    metrics |= cost(cfg, started)
    with tracking.step_run(cfg, "explain"), atomic_dir(output(cfg, "explain")) as out:
        pngs = {"faithfulness": quality_png, "randomisation": sanity_png, "heatmaps": heatmaps_png}
        for name, png in (pngs | {"contrastive": contrast_png}).items():
            (out / f"{name}.png").write_bytes(png)
        (out / "attributions.html").write_text(page, encoding="utf-8")
        write_json(
            out / "attributions.json",
            {
                "baseline": BASELINE,
                "explained": "each answer token's log-probability (teacher-forced), greedy answers",
                "probes": [x.record(actual) for x, actual in explained],
            },
        )
        write_json(out / "contrast.json", {"method": "integrated_gradients", **versus})
        # The explanation drift's reference: the same test prompts, where their attribution fell.
        reference = {"method": "integrated_gradients", "n_steps": e.n_steps, "prompt_digests": digests(sample)}
        write_json(out / "global_importance.json", reference | {"n_texts": len(sample), "faithfulness": summary})
        write_json(out / "metrics.json", {"explain": metrics, "faithfulness": summary})
        mlflow.log_metrics({f"explain/{k}": v for k, v in metrics.items()})
        mlflow.log_artifacts(str(out), "explain")
    log.info("explain: %s", {k: round(v, 4) for k, v in metrics.items() if "_top" not in k})
    return metrics


def generation_contrast(cfg: DictConfig, mine: dict, prompts: list[str], answers: list[str]) -> dict:
    """Integrated gradients' faithfulness for the champion on the same test prompts, each model
    explaining its own answers: the paired change of each gain at ``explain.contrast_alpha``,
    which the register step's faithfulness gate reads."""
    from glasswork.explain.contrast import champion_model_dir, paired_faithfulness

    found = champion_model_dir(cfg, tracking.current_run_id(cfg))
    if found is None:
        return {"status": "no champion to compare with"}
    version, folder = found
    info = read_json(folder / "labels.json")
    if [str(c) for c in info["classes"]] != answers:
        return {"status": f"champion v{version} answers from another set: not compared"}
    champion = AnswerModel.load(folder, answers, info["max_new_tokens"], info["max_length"])
    _, theirs = measure_prompts(champion, prompts, cfg)
    return {
        "status": f"compared with champion v{version}",
        "champion_version": version,
        "global_faithfulness": paired_faithfulness(mine, theirs, cfg.explain.contrast_alpha),
    }


def _quality_figure(metrics: dict[str, float], fractions: list[float]):
    figure = faithfulness_figure(metrics, ["integrated_gradients"], fractions)
    for ax in figure.axes:  # the shared figure speaks of tokens and probabilities
        ax.set_ylabel("fall of the answer's log-probability (nats)")
    return figure


def _page(explained, metrics: dict[str, float], figures: dict, versus: dict, cfg: DictConfig) -> str:
    """The HTML page: the figures, the faithfulness table, then one section per probe prompt with
    its heatmap as a table; every token and text from the data is escaped."""
    from glasswork.explain import generation_figures as figs

    e = cfg.explain
    summary = quality_rows(["integrated_gradients"], metrics, e.sanity_max_spearman)
    sections = []
    for i, (x, actual) in enumerate(explained):
        verdict = "right" if normalise(x.response) == normalise(actual) else "wrong"
        c = x.contrast
        title = (
            f"Prompt {i + 1}: answered {x.response!r} ({verdict}; reference {actual!r}); "
            f"{c['a']} over {c['b']} by {c['logp_a'] - c['logp_b']:+.2f} nats"
        )
        table = figs.heatmap_html(x.prompt_tokens[x.span[0] : x.span[1]], x.answer_tokens,
                                  x.ig.scores[:, x.span[0] : x.span[1]])  # fmt: skip
        sections.append(f"<div class='item'><h3>{html.escape(title)}</h3><p>{html.escape(x.prompt)}</p>{table}</div>")
    status = html.escape(str(versus.get("status", "")))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Glasswork — answer attributions</title>
<style>{STYLE}</style></head><body><h1>Glasswork — answer attributions</h1>
<p>Each answer token's log-probability (the model's own greedy answer, teacher-forced) is
attributed to the prompt's tokens and the answer's earlier ones by integrated gradients from
{html.escape(BASELINE)} ({e.n_steps} steps); word ablation replaces a word's tokens by that
same token. Faithfulness deletes the prompt's top tokens (comprehensiveness, higher is better) or keeps
only them (sufficiency, lower is better) and measures the fall of the answer's log-probability,
random rankings in brackets; the chat template's own tokens are never deleted. Champion: {status}.</p>
<table><tr><th>method</th><th>comprehensiveness AOPC</th><th>sufficiency AOPC</th><th>randomisation</th></tr>
{summary}</table>{figure_sections(figures)}
<h2>Probe prompts</h2>{"".join(sections)}
</body></html>"""
