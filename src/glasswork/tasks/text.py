"""``task=text_classification``: a pretrained transformer fine-tuned on labelled texts."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.outputs import read_json, write_json
from glasswork.slices import TEXT_SLICES

log = logging.getLogger(__name__)


class TextPredictor:
    """A trained sequence classifier and its tokenizer (:func:`glasswork.serving.predict_proba`)."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from glasswork.models.backbone import load_tokenizer, load_trained

        self.model, self.tokenizer = load_trained(folder, device=device), load_tokenizer(folder)
        # The length it was trained at, saved with it (older models: the pipeline's old default).
        self.max_length = int(read_json(Path(folder) / "labels.json").get("max_length", 128))

    def predict_proba(self, frame: pd.DataFrame, batch_size: int, progress: bool = False) -> np.ndarray:
        from glasswork.serving import predict_proba

        texts = frame["text"].tolist()
        return predict_proba(self.model, self.tokenizer, texts, batch_size, self.max_length, progress=progress)


class TextClassification:
    """Texts in a ``text`` column; a Hugging Face sequence classifier (``model.package``/``model.dir``)."""

    name = "text_classification"
    input_column = "text"
    baseline_name = "TF-IDF + logistic regression"
    steps = ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register")

    slice_by = TEXT_SLICES  # descriptors the test metrics are sliced by (tertiles)

    def __init__(self, cfg: DictConfig | None = None):
        # The whole run's config, when the caller passes it (glasswork.tasks.build does).
        self.cfg = cfg

    def inputs(self) -> list[str]:
        return [self.input_column]

    def resolve(self, cfg: DictConfig) -> DictConfig:
        from glasswork.data.prepare import with_max_length

        return with_max_length(cfg)  # model.max_length=auto: the length prepare chose

    def preflight(self, cfg: DictConfig) -> list:
        from glasswork.preflight import check_text_run

        return check_text_run(cfg)

    def ingest(self, cfg: DictConfig) -> dict:
        from glasswork.data.prepare import ingest_texts

        return ingest_texts(cfg)

    def read(self, cfg: DictConfig):
        from glasswork.data.prepare import read_texts

        return read_texts(cfg)

    def card(self, cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
        from glasswork.data.prepare import text_card

        return text_card(cfg, report, splits, names)

    @cached_property
    def _tokenizer(self):
        from glasswork.models.backbone import load_tokenizer, pretrained_dir

        # The side it cuts long texts on is saved with the tokenizer, so every later step and the
        # registered model cut them the same way.
        if self.cfg is None:
            raise RuntimeError("TextClassification needs the run's config (glasswork.tasks.build passes it)")
        return load_tokenizer(pretrained_dir(self.cfg.model), self.cfg.model.truncation)

    def module(self, cfg: DictConfig, num_labels: int, class_weights: list[float] | None = None):
        from glasswork.models.backbone import build_model
        from glasswork.models.classifier_module import ClassifierModule

        return ClassifierModule(
            build_model(cfg.model, num_labels, cfg.seed),
            num_labels,
            lr=cfg.model.lr * cfg.trainer.lr_scale,
            weight_decay=cfg.model.weight_decay,
            warmup_fraction=cfg.model.warmup_fraction,
            class_weights=class_weights,
        )

    def datamodule(self, cfg: DictConfig, train: pd.DataFrame, val: pd.DataFrame):
        from glasswork.data.datamodule import TextCollator, TextDataModule

        return TextDataModule(
            train,
            val,
            TextCollator(self._tokenizer, cfg.model.max_length, cfg.trainer.pad_to_multiple_of),
            cfg.trainer.batch_size,
            cfg.trainer.eval_batch_size,
            cfg.seed,
            cfg.trainer.num_workers,
            bucket_by_length=cfg.trainer.bucket_by_length,
            pin_memory=cfg.trainer.accelerator in ("gpu", "cuda"),
        )

    def log_training_data(self, cfg: DictConfig, train: pd.DataFrame) -> None:
        log_truncation(cfg, self._tokenizer, train["text"].tolist())

    def save(self, net, folder: Path, labels: dict, cfg: DictConfig) -> None:
        net.save_pretrained(folder)
        self._tokenizer.save_pretrained(folder)
        write_json(
            folder / "labels.json", {**labels, "max_length": cfg.model.max_length, "truncation": cfg.model.truncation}
        )

    def predictor(self, folder: Path, device: str = "cpu") -> TextPredictor:
        return TextPredictor(folder, device)

    def descriptors(self, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        from glasswork.models.backbone import load_tokenizer
        from glasswork.text_descriptors import text_descriptors

        return text_descriptors(frame["text"].tolist(), load_tokenizer(folder))

    def drift_batch(self, cfg: DictConfig) -> pd.DataFrame:
        from glasswork.text_drift import current_batch

        return current_batch(cfg)

    def describer(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.text_drift import TextDescriber

        return TextDescriber(cfg, folder)

    def monitor_batch(self, source: Path, cfg: DictConfig, ref):
        from glasswork.monitor import read_text_batch

        return read_text_batch(source, cfg, ref)

    def score_batch(self, path: Path, batch, describer, ref, cfg: DictConfig) -> dict[str, int]:
        from glasswork.monitor import write_predictions

        return write_predictions(path, batch, describer, ref, cfg)

    def retraining(self, cfg: DictConfig, summary: dict) -> list[str] | None:
        from glasswork.retraining import text_retraining

        return text_retraining(cfg, summary)

    def pyfunc(self):
        from glasswork import serving
        from glasswork.tasks.base import PyfuncSpec, requirements

        return PyfuncSpec(
            code=str(Path(serving.__file__)),
            requirements=requirements("torch", "transformers", "tokenizers"),
            description="Glasswork text classifier (pyfunc: a DataFrame with a 'text' column in; "
            "the label and class probabilities out).",
        )

    def explain(self, cfg: DictConfig) -> dict:
        from glasswork.explain.step import explain_texts

        return explain_texts(cfg)

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
        from glasswork.baseline import tfidf_baseline

        return tfidf_baseline(train, test, seed)


def log_truncation(cfg: DictConfig, tokenizer, texts: list[str]) -> None:
    """``data/train_truncated_share`` and the like in MLflow, and a warning when the model will
    not see the end of some training texts."""
    import mlflow

    from glasswork.data.datamodule import truncation
    from glasswork.data.prepare import TRUNCATIONS

    found = truncation(tokenizer, texts, cfg.model.max_length)
    mlflow.log_metrics({f"data/train_{k}": float(v) for k, v in found.items()})
    if found["truncated"]:
        log.warning(
            "train: %d of %d training texts (%.1f%%) are longer than model.max_length=%d tokens (the longest: %d) "
            "and are cut there (model.truncation=%s keeps the %s); raise model.max_length or model.length_quantile%s "
            "if the rest matters",
            found["truncated"],
            len(texts),
            100 * found["truncated_share"],
            cfg.model.max_length,
            found["longest_tokens"],
            cfg.model.truncation,
            TRUNCATIONS[cfg.model.truncation],
            # Tokenizers that do not know their model's limit report a huge sentinel instead.
            f" (at most {limit} for this model)" if (limit := tokenizer.model_max_length) < 100_000 else "",
        )
