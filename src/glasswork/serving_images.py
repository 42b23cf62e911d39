"""The registered image model: a pyfunc over a DataFrame with an ``image`` column.

Logged to MLflow as the model's code ("models from code") with ``cnn.py`` and
``image_backbone.py`` beside it (``code_paths``), so it imports nothing else from Glasswork:
``mlflow.pyfunc.load_model("models:/glasswork-fashion-mnist@champion")`` works wherever torch,
pillow, safetensors, pandas and mlflow are installed (and transformers, for a fine-tuned Hugging
Face backbone). Each image is converted and resized as training converted and resized it
(``preprocess.json``), and normalised with the training split's statistics.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image

try:  # inside Glasswork
    from glasswork.models.image_backbone import load_image_net
except ImportError:  # a loaded model: cnn.py and image_backbone.py are on the path (code_paths)
    from image_backbone import load_image_net  # type: ignore[no-redef]

# Refused as a decompression bomb above this many pixels (as data.max_pixels refuses in training).
MAX_PIXELS = 25_000_000


def load_image(value, row: int, size: tuple[int, int], mode: str) -> np.ndarray:
    """One cell of the ``image`` column (PNG/JPEG/WebP bytes, or a path) as the model's uint8
    ``(H, W)`` or ``(H, W, 3)`` array; a clear error naming the row otherwise."""
    source: io.BytesIO | Path
    if isinstance(value, bytes | bytearray | memoryview):
        source, name = io.BytesIO(bytes(value)), f"row {row} (bytes)"
    elif isinstance(value, str | Path):
        source, name = Path(value), f"row {row} ({value})"
        if not source.is_file():
            raise ValueError(f"image {name}: no such file")
    else:
        raise ValueError(f"image row {row}: expected image bytes or a file path, got {type(value).__name__}")
    try:
        with Image.open(source) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ValueError(f"image {name}: {opened.width} x {opened.height} pixels, over {MAX_PIXELS:,}")
            opened.load()
            image: Image.Image = opened.convert(mode) if opened.mode != mode else opened
            if (image.height, image.width) != size:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except ValueError:
        raise
    except Exception as err:  # PIL's many ways of saying "not an image" or "truncated"
        raise ValueError(f"image {name}: not a readable image ({type(err).__name__}: {err})") from None


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Takes a DataFrame with an ``image`` column; returns ``label`` and one ``prob_<class>`` column per class."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model"])
        self.net = load_image_net(folder)
        pre = json.loads((folder / "preprocess.json").read_text())
        self.size, self.mode = tuple(pre["image_size"]), pre["image_mode"]
        self.mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
        labels = json.loads((folder / "labels.json").read_text())
        self.names = [str(n) for n in labels["names"]]
        self.classes = [str(c) for c in labels["classes"]]

    @torch.inference_mode()
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if "image" not in model_input.columns:
            raise ValueError(f"expected a DataFrame with an 'image' column, got columns {list(model_input.columns)}")
        arrays = [load_image(v, i, self.size, self.mode) for i, v in enumerate(model_input["image"])]
        probs = np.zeros((len(arrays), len(self.names)), dtype=np.float32)
        for start in range(0, len(arrays), 256):
            stacked = np.stack(arrays[start : start + 256])
            pixels = torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2))
            x = (pixels.float() / 255 - self.mean) / self.std
            probs[start : start + len(x)] = torch.softmax(self.net(x).float(), -1).numpy()
        result = pd.DataFrame({"label": [self.classes[i] for i in probs.argmax(axis=1)]})
        for i, name in enumerate(self.names):
            result[f"prob_{name}"] = probs[:, i].astype("float64")
        return result


mlflow.models.set_model(ImageClassifier())
