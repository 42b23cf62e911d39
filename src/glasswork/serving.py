"""The registered model: a pyfunc over a text DataFrame, and the batched inference it uses.

This file is logged to MLflow as the model's code ("models from code"), so it imports nothing
from Glasswork: ``mlflow.pyfunc.load_model("models:/glasswork-sentiment@champion")`` works
wherever torch, transformers, pandas and mlflow are installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

# model.truncation=head+tail keeps this share of a long text's token budget from its start and
# the rest from its end: Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?")
# found 128 head + 382 tail tokens of 510 the best cut of long reviews.
HEAD_SHARE = 0.25


def head_and_tail(tokenizer, texts, max_length: int):
    """``texts`` (a string or a list) with each text longer than ``max_length`` tokens (special
    tokens included) cut to its first quarter and last three quarters of that budget, joined by
    a space; shorter texts are returned unchanged. Cuts fall on token boundaries (the fast
    tokenizer's offsets), so the characters kept are the text's own."""
    single = isinstance(texts, str)
    batch = [texts] if single else list(texts)
    room = max(max_length - tokenizer.num_special_tokens_to_add(), 1)
    offsets = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    out = []
    for text, spans in zip(batch, offsets, strict=True):
        keep = room
        while len(spans) > room and keep > 0:
            head = int(keep * HEAD_SHARE)
            start = text[: spans[head - 1][1]] if head else ""
            cut = f"{start} {text[spans[len(spans) - (keep - head)][0] :]}".strip() if keep > head else start
            # A word cut in two may tokenize into one more piece than before: cut one token more.
            over = len(tokenizer(cut, add_special_tokens=False, verbose=False)["input_ids"]) - room
            if over <= 0:
                text = cut
                break
            keep -= over
        out.append(text)
    return out[0] if single else out


class HeadTailTokenizer:
    """A fast tokenizer that, asked to truncate (``truncation=True, max_length=n``), keeps a long
    text's head and tail (:func:`head_and_tail`) instead of one end; everything else is the
    wrapped tokenizer's own (``save_pretrained`` saves it, ``labels.json`` records the cut)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, text, *args, truncation=False, max_length=None, **kwargs):
        if truncation and max_length:
            text = head_and_tail(self.tokenizer, text, max_length)
        return self.tokenizer(text, *args, truncation=truncation, max_length=max_length, **kwargs)


@torch.inference_mode()
def predict_proba(
    model, tokenizer, texts: list[str], batch_size: int = 128, max_length: int = 128, progress: bool = False
) -> np.ndarray:
    """Class probabilities for ``texts``, shape ``(len(texts), num_labels)``.

    Texts are scored in order of length so that each batch, padded to its own longest text,
    carries little padding; the result is returned in the input order.
    """
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    starts = range(0, len(texts), batch_size)
    if progress and len(starts) > 4:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
    for start in starts:
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


class SentimentClassifier(mlflow.pyfunc.PythonModel):
    """Takes a DataFrame with a ``text`` column; returns ``label`` and one ``prob_<class>`` column per class."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(context.artifacts["model"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        labels = json.loads((model_dir / "labels.json").read_text())
        if labels.get("truncation") == "head+tail":  # head and tail: the tokenizer keeps one end only
            self.tokenizer = HeadTailTokenizer(self.tokenizer)
        self.names = [str(n) for n in labels["names"]]
        self.classes = [str(c) for c in labels["classes"]]
        self.max_length = int(labels.get("max_length", 128))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if "text" not in model_input.columns:
            raise ValueError(f"expected a DataFrame with a 'text' column, got columns {list(model_input.columns)}")
        texts = model_input["text"].fillna("").astype(str).tolist()
        probs = predict_proba(self.model, self.tokenizer, texts, max_length=self.max_length)
        result = pd.DataFrame({"label": [self.classes[i] for i in probs.argmax(axis=1)]})
        for i, name in enumerate(self.names):
            result[f"prob_{name}"] = probs[:, i].astype("float64")
        return result


mlflow.models.set_model(SentimentClassifier())
