"""The evaluate step's part that only a generative model has: the fine-tuned model and the base
model it started from, side by side on the test split (``task=text_generation``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from glasswork.models.answers import AnswerModel, answer_metrics, normalise, reference_nll
from glasswork.outputs import write_json

log = logging.getLogger(__name__)

GENERATION = "generation.json"
ANSWERS = "answers.parquet"
ROWS = (
    ("answer_accuracy", "free answer right (greedy, first word)"),
    ("invalid_answer_rate", "free answer not one of the answers"),
    ("response_tokens", "free answer length (tokens)"),
    ("own_answer_logprob", "mean log-probability of its own answer's tokens"),
    ("reference_nll", "reference responses: negative log-likelihood a token"),
    ("reference_perplexity", "reference responses: perplexity"),
)


def generation_metrics(model: AnswerModel, frame: pd.DataFrame, answers: list[str], batch_size: int):
    """One model's free answers and reference likelihood on ``frame`` (``prompt``, ``label``)."""
    prompts = frame["prompt"].tolist()
    truth = [answers[i] for i in frame["label"]]
    generated = model.generate(prompts, batch_size)
    metrics = answer_metrics(generated, truth, answers) | reference_nll(model, prompts, truth, batch_size)
    return metrics, generated


def compare_with_base(
    tuned: AnswerModel, base: AnswerModel, frame: pd.DataFrame, answers: list[str], batch_size: int, out: Path
) -> dict[str, float]:
    """Both models' :func:`generation_metrics`; writes ``generation.json`` (the table, with the
    change) and ``answers.parquet`` (every prompt's reference and both free answers). Returns the
    fine-tuned model's figures, and the base model's as ``base_<name>``."""
    mine, my_answers = generation_metrics(tuned, frame, answers, batch_size)
    theirs, their_answers = generation_metrics(base, frame, answers, batch_size)
    table = [
        {
            "metric": key,
            "meaning": words,
            "base": theirs[key],
            "fine_tuned": mine[key],
            "change": mine[key] - theirs[key],
        }
        for key, words in ROWS
    ]
    write_json(out / GENERATION, {"n": len(frame), "rows": table})
    pd.DataFrame(
        {
            "prompt": frame["prompt"].tolist(),
            "reference": [answers[i] for i in frame["label"]],
            "fine_tuned": [g["response"] for g in my_answers],
            "base": [g["response"] for g in their_answers],
            "fine_tuned_answer": [normalise(g["response"]) for g in my_answers],
            "base_answer": [normalise(g["response"]) for g in their_answers],
        }
    ).to_parquet(out / ANSWERS, index=False)
    log.info(
        "evaluate: free answers right %.3f (base model %.3f), invalid %.3f (base %.3f), reference perplexity %.2f "
        "(base %.2f)",
        mine["answer_accuracy"],
        theirs["answer_accuracy"],
        mine["invalid_answer_rate"],
        theirs["invalid_answer_rate"],
        mine["reference_perplexity"],
        theirs["reference_perplexity"],
    )
    return mine | {f"base_{k}": v for k, v in theirs.items()}
