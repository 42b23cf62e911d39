"""The registered generative model: a pyfunc over a DataFrame with a ``prompt`` column.

Logged to MLflow as the model's code ("models from code") with ``answers.py`` and ``teacher_forcing.py``
beside it (``code_paths``), so it imports nothing else from Glasswork:
``mlflow.pyfunc.load_model("models:/glasswork-instructions@champion")`` works wherever torch,
transformers, pandas and mlflow are installed. Each prompt is put in the model's chat template
(the one it was fine-tuned with, saved with its tokenizer), its start cut as training cut it
where it is too long, and answered greedily (the same prompt, the same answer: runs reproduce)
with at most the ``max_new_tokens`` of training's config. ``params={"probabilities": True}`` adds
each answer token's probability (``token_probabilities``, a JSON list per row).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

try:  # inside Glasswork
    from glasswork.models.answers import AnswerModel
except ImportError:  # a loaded model: answers.py is on the path (code_paths)
    from answers import AnswerModel  # type: ignore[no-redef]


class PromptAnswerer(mlflow.pyfunc.PythonModel):
    """Takes a DataFrame with a ``prompt`` column; returns ``response`` (and, on request, its tokens' probabilities)."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model"])
        info = json.loads((folder / "labels.json").read_text())
        self.model = AnswerModel.load(folder, info["classes"], info["max_new_tokens"], info["max_length"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return answer_frame(self.model, model_input, bool((params or {}).get("probabilities", False)))


def answer_frame(model: AnswerModel, frame: pd.DataFrame, probabilities: bool = False) -> pd.DataFrame:
    """``response`` for each row's ``prompt`` (and ``token_probabilities``, a JSON list, on request)."""
    if "prompt" not in frame.columns:
        raise ValueError(f"the input DataFrame has no 'prompt' column (columns: {', '.join(map(str, frame.columns))})")
    prompts = frame["prompt"]
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"row(s) {[i + 1 for i in empty[:10]]} of the input have no prompt (expected text)")
    generated = model.generate(prompts.tolist()) if len(prompts) else []
    out = pd.DataFrame({"response": pd.Series([g["response"] for g in generated], dtype=object)})
    if probabilities:
        import math

        out["token_probabilities"] = [
            json.dumps([round(math.exp(lp), 6) for lp in g["token_logprobs"]]) for g in generated
        ]
    return out


mlflow.models.set_model(PromptAnswerer())
