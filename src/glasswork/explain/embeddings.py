"""Where the model puts texts: a 2-D projection of its sentence embeddings (mean-pooled last
hidden states, as all-MiniLM-L6-v2 is meant to be pooled), coloured by label and by error, as a
PNG and as an interactive page whose points show their text.

The projection is PCA (linear, cheap, the default) or UMAP (``umap-learn``, the optional extra
``glasswork[umap]``): UMAP keeps neighbourhoods rather than variance, so clusters of similar
texts, and the errors among them, stand apart, at the cost of ~20 s of numba compilation per
process on two CPU cores.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import textwrap
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA

from glasswork.errors import ConfigError
from glasswork.explain.attributions import model_device

PROJECTIONS = ("pca", "umap")
# Below this many texts UMAP's neighbour graph is degenerate (it fails outright under 4): PCA is
# used instead and the figure says so.
UMAP_MIN_TEXTS = 16
RIGHT, WRONG = "#8c959f", "#cf222e"


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


def check_projection(method: str, max_texts: int = 2) -> None:
    """Refuse an unknown projection, UMAP where ``umap-learn`` is not installed, or a sample too
    small for a plane."""
    if max_texts < 2:
        raise ConfigError(f"explain.projection_max={max_texts}: expected at least 2 texts for a 2-D map")
    if method not in PROJECTIONS:
        raise ConfigError(f"explain.projection={method!r}: expected one of {list(PROJECTIONS)}")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise ConfigError(
            "explain.projection=umap needs umap-learn, which is not installed here: "
            "pip install 'glasswork[umap]' (`make venv` installs it), or use explain.projection=pca"
        )


def project(vectors: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D points for ``vectors`` and the name of the projection used (PCA for too few texts)."""
    check_projection(method)
    if method == "umap" and len(vectors) >= UMAP_MIN_TEXTS:
        import umap

        with warnings.catch_warnings():
            # A seed makes UMAP single-threaded and it warns so on every call; we want the seed.
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            reducer = umap.UMAP(n_components=2, n_neighbors=15, metric="cosine", random_state=seed)
            return np.asarray(reducer.fit_transform(vectors)), "UMAP"
    used = "PCA" if method == "pca" else f"PCA: UMAP needs {UMAP_MIN_TEXTS}+ texts"
    return PCA(n_components=2, random_state=seed).fit_transform(vectors), used


def projection_figure(points: np.ndarray, labels: np.ndarray, predicted: np.ndarray, names: list[str], used: str):
    """Two panels over the same plane: true label, and right vs wrong."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for k, name in enumerate(names):
        chosen = labels == k
        left.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, label=f"{name} ({chosen.sum()})")
    left.set_title(f"sentence embeddings by true label ({used})")
    left.legend(markerscale=3)
    wrong = predicted != labels
    right.scatter(points[~wrong, 0], points[~wrong, 1], s=6, alpha=0.35, c=RIGHT, label=f"right ({(~wrong).sum()})")
    right.scatter(points[wrong, 0], points[wrong, 1], s=9, alpha=0.9, c=WRONG, label=f"wrong ({wrong.sum()})")
    right.set_title("errors")
    right.legend(markerscale=3)
    fig.tight_layout()
    return fig


def _hover(text: str, width: int = 70, limit: int = 400) -> str:
    """A text as hover lines: HTML-escaped, wrapped, cut at ``limit`` characters."""
    cut = text if len(text) <= limit else (text[:limit].rsplit(" ", 1)[0] or text[:limit]) + " …"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(cut, width)) or "(empty)"


def projection_page(
    points: np.ndarray,
    texts: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    used: str,
) -> str:
    """A self-contained HTML page (plotly.js inlined, no network) with the PNG's two panels:
    hovering a point shows its text, its true label and the model's prediction."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    predicted = probs.argmax(1)
    wrong = predicted != labels
    hover = [
        f"{_hover(t)}<br><b>true</b> {names[y]} · <b>predicted</b> {names[p]} ({q[p]:.2f})"
        for t, y, p, q in zip(texts, labels, predicted, probs, strict=True)
    ]
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_xaxes=True,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=(f"by true label ({used})", "errors"),
    )

    def trace(chosen: np.ndarray, name: str, col: int, **marker) -> None:
        idx = np.flatnonzero(chosen)
        fig.add_trace(
            go.Scatter(
                x=points[idx, 0],
                y=points[idx, 1],
                mode="markers",
                name=f"{name} ({len(idx)})",
                text=[hover[i] for i in idx],
                hovertemplate="%{text}<extra></extra>",
                marker=marker,
                legendgroup=str(col),
            ),
            row=1,
            col=col,
        )

    for k, name in enumerate(names):
        trace(labels == k, name, 1, size=5, opacity=0.7)
    trace(~wrong, "right", 2, size=5, opacity=0.35, color=RIGHT)
    trace(wrong, "wrong", 2, size=7, opacity=0.9, color=WRONG)
    fig.update_xaxes(matches="x")  # zoom one panel, the other follows
    fig.update_layout(
        colorway=qualitative.D3,  # matplotlib's default colours, as in the PNG
        title=f"Where the model puts {len(texts)} test texts: sentence embeddings ({used}); hover a point for its text",
        height=560,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.08},
    )
    return fig.to_html(include_plotlyjs=True, full_html=True)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG inlined for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
