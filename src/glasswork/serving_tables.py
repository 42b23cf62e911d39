"""The registered tabular model: a pyfunc over a DataFrame with the training columns, in any order.

Logged to MLflow as the model's code ("models from code") with ``mlp.py`` and ``tabular.py``
beside it (``code_paths``), so it imports nothing else from Glasswork:
``mlflow.pyfunc.load_model("models:/glasswork-fair@champion")`` works wherever torch, safetensors,
pandas and mlflow are installed. Each row is preprocessed as the training split was
(``preprocess.json``: the training medians, means, spreads and categories); a value the training
split never held in a categorical column is read as ``(other)``. Extra columns are ignored; a
missing one is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

try:  # inside Glasswork
    from glasswork.data.tabular import Preprocessor
    from glasswork.models.mlp import MLP
except ImportError:  # a loaded model: mlp.py and tabular.py are on the path (code_paths)
    from mlp import MLP  # type: ignore[no-redef]
    from tabular import Preprocessor  # type: ignore[no-redef]


class TableClassifier(mlflow.pyfunc.PythonModel):
    """Takes a DataFrame with the training columns; returns ``label`` and one ``prob_<class>`` column per class."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model"])
        self.net = MLP.from_pretrained(folder)
        self.pre = Preprocessor.from_json(json.loads((folder / "preprocess.json").read_text()))
        labels = json.loads((folder / "labels.json").read_text())
        self.names = [str(n) for n in labels["names"]]
        self.classes = [str(c) for c in labels["classes"]]

    @torch.inference_mode()
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        features, _ = self.pre.transform(model_input.reset_index(drop=True), "the input DataFrame")
        probs = torch.softmax(self.net(torch.from_numpy(features)).float(), -1).numpy()
        out = pd.DataFrame({"label": [self.classes[i] for i in probs.argmax(1)]}) if len(probs) else pd.DataFrame(
            {"label": pd.Series([], dtype=object)})  # fmt: skip
        for i, name in enumerate(self.names):
            out[f"prob_{name}"] = probs[:, i].astype(np.float64) if len(probs) else np.zeros(0)
        return out


mlflow.models.set_model(TableClassifier())
