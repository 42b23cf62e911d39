"""The generative task's side of a comparison (:mod:`glasswork.comparison`): the batch the drift
step compares (``drift.current``: the shipped tweets asked the same question, or the test split),
what describes a prompt (its length and words, as a text's; the model's own hidden states as its
embedding) and what describes the model's answer to it (which answer of the set, or none; its
length; the model's mean log-probability of its own answer's tokens), the answers' probabilities
for the label-free accuracy estimate; and ``glasswork monitor``'s reading and scoring of a file
of prompts.

Explanation drift is not built for this task (README, Not built yet): its page says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.data.prepare import load_labels, load_split
from glasswork.data.sources import read_table
from glasswork.drift import View
from glasswork.errors import DataError
from glasswork.models.answers import AnswerModel, answer_metrics, normalise
from glasswork.tasks.generation import check_current
from glasswork.text_descriptors import DESCRIPTORS, text_descriptors

log = logging.getLogger(__name__)

NO_ANSWER = "(none of the answers)"  # a free answer that is no answer of the set
OUTPUT_COLUMNS = ["answer_tokens", "answer_logprob"]
NUMERIC = [*DESCRIPTORS, "predicted_probability", *OUTPUT_COLUMNS]


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The batch to compare with the reference: the shipped tweets asked the training question
    (``drift.current=tweets``, written by ``ingest``), or the held-out test split; ``prompt`` and
    ``label`` (the reference answer, where known)."""
    check_current(cfg.drift.current)
    if cfg.drift.current == "test":
        test = load_split(cfg, "test")
        classes = load_labels(cfg)["classes"]
        return test.assign(label=[classes[i] for i in test["label"]])
    path = Path(cfg.drift.current_path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `glasswork ingest task=text_generation` first (it writes the tweets)")
    frame = read_table(path, "csv")
    if "prompt" not in frame.columns:
        raise DataError(f"{path} has no 'prompt' column (columns found: {list(frame.columns)})")
    return frame.rename(columns={"response": "label"})


def own_logprob(generated: dict) -> float:
    """The mean log-probability of the answer's own tokens; an empty answer's is its end of turn's."""
    logps = generated["token_logprobs"] or [generated.get("end_logprob") or 0.0]
    return float(np.mean(logps))


def answer_values(generated: list[dict], classes: list[str]) -> list[str]:
    """Each free answer as the answer of the set it is (compared as evaluate compares them), else
    :data:`NO_ANSWER`."""
    known = {normalise(c): c for c in classes}
    return [known.get(normalise(g["response"]), NO_ANSWER) for g in generated]


def output_summary(generated: list[dict], answers: list[str], labels: list[str] | None, classes: list[str]) -> dict:
    """What the model answered, in numbers: the share of each answer, the invalid-answer rate, the
    answer length, its confidence in its own answers, and the free answers' accuracy where the
    rows have labels."""
    truth = labels if labels is not None else [""] * len(generated)
    figures = answer_metrics(generated, truth, classes) if generated else {}
    if labels is None or not generated:
        figures.pop("answer_accuracy", None)
    shares = pd.Series(answers, dtype=object).value_counts(normalize=True)
    return {"n": len(generated), **figures, "answer_shares": {str(k): float(v) for k, v in shares.items()}}


class GenerationDescriber:
    """The fine-tuned model (in ``folder``; default the work folder's) answers, scores, embeds and
    describes prompts."""

    rows = ("prompts", "the model's hidden states")  # what the batch map calls its points
    # What the model said, taken on the reference side from held-out rows (the validation split),
    # not the training rows it learned (glasswork.comparison.held_out_outputs).
    held_out = ("answer", *OUTPUT_COLUMNS)

    def __init__(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.models.backbone import inference_device, model_dir
        from glasswork.outputs import read_json

        path = Path(folder or model_dir(cfg))
        info = read_json(path / "labels.json")
        self.classes = [str(c) for c in info["classes"]]
        self.model = AnswerModel.load(
            path, self.classes, info["max_new_tokens"], info["max_length"], inference_device(cfg.trainer)
        )
        self.batch_size = cfg.trainer.eval_batch_size
        self.cfg = cfg

    def answer(self, prompts: list[str], states: bool = False) -> tuple[np.ndarray, list[dict]]:
        """The answers' probabilities and the free (greedy) answers of ``prompts`` (with ``states``,
        each prompt's hidden state from the same pass), a chunk at a time under a progress bar."""
        from tqdm.auto import tqdm

        probs, generated = [], []
        chunk = 4 * self.batch_size
        with tqdm(total=len(prompts), desc="answering prompts", unit="prompt", leave=False) as bar:
            for start in range(0, len(prompts), chunk):
                part = prompts[start : start + chunk]
                probs.append(self.model.predict_proba(pd.DataFrame({"prompt": part}), self.batch_size))
                generated += self.model.generate(part, self.batch_size, states=states)
                bar.update(len(part))
        k = len(self.classes)
        return (np.concatenate(probs) if probs else np.zeros((0, k), dtype=np.float32)), generated

    def describe(self, frame: pd.DataFrame, labels: list[str] | None) -> View:
        prompts = frame["prompt"].fillna("").astype(str).tolist()
        probs, generated = self.answer(prompts, states=True)
        width = self.model.model.config.hidden_size
        vectors = np.stack([g["prompt_state"] for g in generated]) if generated else np.zeros((0, width))
        described = text_descriptors(prompts, self.model.tokenizer)
        described.insert(0, "prompt", prompts)
        described["predicted_probability"] = (probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)).astype(float)
        answers = answer_values(generated, self.classes)
        described["answer"] = answers
        described["answer_tokens"] = [len(g["ids"]) for g in generated]
        described["answer_logprob"] = [own_logprob(g) for g in generated]
        truth = None
        if labels is not None:
            described["label"] = [str(v) for v in labels]
            truth = [str(v) for v in labels]
        # Hover texts are data (escaped by the map): the prompt's end, where the question's text is.
        hover = [f"…{p[-160:]} → {g['response'][:40]!r}" for p, g in zip(prompts, generated, strict=True)]
        findings = {"outputs": output_summary(generated, answers, truth, self.classes)}
        return View(described, vectors, probs, text_columns=["prompt"], numeric=list(NUMERIC),
                    embedding_name="hidden state", hover=hover, categorical=["answer"], findings=findings)  # fmt: skip

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None):
        from glasswork.explain.prompt_drift import explanation_drift

        return explanation_drift(baseline, self.model, current, self.cfg)


def read_prompt_batch(source: Path, cfg: DictConfig, ref):
    """``glasswork monitor``'s batch of prompts: a file or a folder of csv, parquet or jsonl files
    with ``monitor.text_column`` (``prompt`` for this task) and, where known, ``monitor.label_column``
    (``response``: the answer expected)."""
    from glasswork.monitor import read_text_batch

    batch = read_text_batch(source, cfg, ref, inputs=("prompt",))
    batch.sample = batch.sample.rename(columns={"text": "prompt"})
    return batch


def write_answers(path: Path, batch, describer: GenerationDescriber, ref, cfg: DictConfig) -> dict[str, int]:
    """Answer every prompt of ``batch`` into one parquet file (the free answer, the answer of the set
    it is, its own log-probability and each answer's probability); the count of each answer."""
    from glasswork.monitor import write_scored

    classes = describer.classes

    def score(prompts: list[str]) -> tuple[dict, list[str]]:
        probs, generated = describer.answer(prompts)
        answers = answer_values(generated, classes)
        columns = {
            "prompt": prompts,
            "response": [g["response"] for g in generated],
            "answer": answers,
            "answer_logprob": [own_logprob(g) for g in generated],
        }
        return columns | {f"prob_{c}": probs[:, i].astype(np.float64) for i, c in enumerate(classes)}, answers

    return write_scored(path, batch, cfg, score, [*classes, NO_ANSWER], ("answering the batch", "prompt"))
