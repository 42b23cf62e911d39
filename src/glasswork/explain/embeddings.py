"""Where the model puts texts: a 2-D PCA projection of its sentence embeddings (mean-pooled last
hidden states, as all-MiniLM-L6-v2 is meant to be pooled), coloured by label and by error."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA

from glasswork.explain.attributions import model_device


@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], *, batch_size: int, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentence embeddings and class probabilities, in input order (batches sorted by length)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    width = model.config.hidden_size
    vectors = np.zeros((len(texts), width), np.float32)
    probs = np.zeros((len(texts), model.config.num_labels), np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx], padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        ).to(model_device(model))
        out = model(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vectors[idx] = ((out.hidden_states[-1] * mask).sum(1) / mask.sum(1)).float().cpu().numpy()
        probs[idx] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
    return vectors, probs


def projection_figure(vectors: np.ndarray, labels: np.ndarray, predicted: np.ndarray, names: list[str], seed: int):
    """Two panels over the same PCA plane: true label, and right vs wrong."""
    points = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for k, name in enumerate(names):
        chosen = labels == k
        left.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, label=f"{name} ({chosen.sum()})")
    left.set_title("sentence embeddings by true label (PCA)")
    left.legend(markerscale=3)
    wrong = predicted != labels
    right.scatter(points[~wrong, 0], points[~wrong, 1], s=6, alpha=0.35, c="#8c959f", label=f"right ({(~wrong).sum()})")
    right.scatter(points[wrong, 0], points[wrong, 1], s=9, alpha=0.9, c="#cf222e", label=f"wrong ({wrong.sum()})")
    right.set_title("errors")
    right.legend(markerscale=3)
    fig.tight_layout()
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG inlined for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
