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
