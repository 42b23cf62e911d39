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


def projection_figure(
    points: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    names: list[str],
    used: str,
    vectors: str = "sentence embeddings",
):
    """Two panels over the same plane: true label, and right vs wrong."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for k, name in enumerate(names):
        chosen = labels == k
        left.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, label=f"{name} ({chosen.sum()})")
    left.set_title(f"{vectors} by true label ({used})")
    left.legend(markerscale=3)
    wrong = predicted != labels
    right.scatter(points[~wrong, 0], points[~wrong, 1], s=6, alpha=0.35, c=RIGHT, label=f"right ({(~wrong).sum()})")
    right.scatter(points[wrong, 0], points[wrong, 1], s=9, alpha=0.9, c=WRONG, label=f"wrong ({wrong.sum()})")
    right.set_title("errors")
    right.legend(markerscale=3)
    fig.tight_layout()
    return fig


def plotly_text(text: str) -> str:
    """Data as text for plotly, which draws a subset of HTML in hover texts, legends and titles.

    Only ``<``, ``>`` and ``&`` are escaped: without ``<`` no tag can form, and plotly decodes
    ``&lt;`` but not ``&quot;`` (it would show a quote in the data as ``&quot;``)."""
    return html.escape(text, quote=False)


def _hover(text: str, width: int = 70, limit: int = 400) -> str:
    """A text as hover lines: escaped, wrapped, cut at ``limit`` characters."""
    cut = text if len(text) <= limit else (text[:limit].rsplit(" ", 1)[0] or text[:limit]) + " …"
    return "<br>".join(plotly_text(line) for line in textwrap.wrap(cut, width)) or "(empty)"


# A legend entry of a map: its name, the rows it draws, and plotly marker settings.
Group = tuple[str, np.ndarray, dict]


# Plotly's hover boxes take no images: with thumbnails, hovering a point also shows its image in
# a box at the top right, drawn large with its pixels kept sharp. Only our own base64 PNG data
# URIs are shown (anything else in customdata is ignored), so the data cannot inject markup.
THUMBNAIL_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var box = document.createElement('img');
box.alt = 'the hovered image';
box.style.cssText = 'position:fixed;top:12px;right:12px;width:140px;image-rendering:pixelated;'
  + 'border:1px solid #888;background:#fff;display:none;z-index:10';
document.body.appendChild(box);
gd.on('plotly_hover', function (event) {
  var uri = event.points[0].customdata;
  if (typeof uri === 'string' && uri.indexOf('data:image/png;base64,') === 0) {
    box.src = uri;
    box.style.display = 'block';
  }
});
gd.on('plotly_unhover', function () { box.style.display = 'none'; });
"""


def map_page(
    points: np.ndarray,
    hover: list[str],
    panels: list[tuple[str, list[Group]]],
    title: str,
    thumbnails: list[str] | None = None,
) -> str:
    """A self-contained HTML page (plotly.js inlined, no network) of side-by-side panels over
    the same 2-D points; hovering a point shows its ``hover`` text (and its image, where
    ``thumbnails`` gives one data URI per point), and zooming one panel zooms the others."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=[t for t, _ in panels]
    )
    for col, (_, groups) in enumerate(panels, start=1):
        for name, chosen, marker in groups:
            idx = np.flatnonzero(chosen)
            fig.add_trace(
                go.Scatter(
                    x=points[idx, 0],
                    y=points[idx, 1],
                    mode="markers",
                    name=f"{name} ({len(idx)})",
                    text=[hover[i] for i in idx],
                    hovertemplate="%{text}<extra></extra>",
                    customdata=None if thumbnails is None else [thumbnails[i] for i in idx],
                    marker=marker,
                    legendgroup=str(col),
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(matches="x")
    fig.update_layout(title=title, height=560, template="plotly_white", legend={"orientation": "h", "y": -0.08})
    script = THUMBNAIL_SCRIPT if thumbnails is not None else None
    return fig.to_html(include_plotlyjs=True, full_html=True, post_script=script)


def class_colour(k: int) -> str:
    """Matplotlib's default colour cycle (as in the PNGs), by class index."""
    from plotly.colors import qualitative

    return qualitative.D3[k % len(qualitative.D3)]


def projection_page(
    points: np.ndarray,
    texts: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    used: str,
    kind: tuple[str, str] = ("texts", "sentence embeddings"),
    thumbnails: list[str] | None = None,
) -> str:
    """The PNG's two panels as a page: hovering a point shows its text, its true label and the
    model's prediction. ``kind``: what the rows and the embeddings are called; ``thumbnails``:
    an image per row (a data URI), shown beside the hover text."""
    names = [plotly_text(n) for n in names]  # class names come from the data: text, never markup
    predicted = probs.argmax(1)
    wrong = predicted != labels
    hover = [
        f"{_hover(t)}<br><b>true</b> {names[y]} · <b>predicted</b> {names[p]} ({q[p]:.2f})"
        for t, y, p, q in zip(texts, labels, predicted, probs, strict=True)
    ]
    by_label = [
        (name, labels == k, {"size": 5, "opacity": 0.7, "color": class_colour(k)}) for k, name in enumerate(names)
    ]
    errors = [
        ("right", ~wrong, {"size": 5, "opacity": 0.35, "color": RIGHT}),
        ("wrong", wrong, {"size": 7, "opacity": 0.9, "color": WRONG}),
    ]
    rows, vectors = kind
    what = "its text" if thumbnails is None else "the image"
    title = f"Where the model puts {len(texts)} test {rows}: {vectors} ({used}); hover a point for {what}"
    return map_page(points, hover, [(f"by true label ({used})", by_label), ("errors", errors)], title, thumbnails)


def batch_map_page(
    reference: tuple[np.ndarray, list[str]],
    current: tuple[np.ndarray, list[str], np.ndarray],
    names: list[str],
    batch: str,
    method: str,
    seed: int,
    kind: tuple[str, str] = ("texts", "sentence embeddings"),
    thumbnails: list[str] | None = None,
) -> str:
    """Where a new batch lands among the training texts: one map of both samples' sentence
    embeddings (``reference``: vectors, texts; ``current``: vectors, texts, class
    probabilities), by origin and by the model's prediction; hovering a point shows its text.
    ``kind``: what the rows and the embeddings are called (another task's words: images,
    penultimate-layer embeddings), with the hover texts to match; ``thumbnails``: an image per
    row, the reference's first (data URIs), shown on hover."""
    rows, vectors = kind
    (ref_vectors, ref_texts), (cur_vectors, cur_texts, probs) = reference, current
    names, batch = [plotly_text(n) for n in names], plotly_text(batch)  # data: text, never markup
    points, used = project(np.vstack([ref_vectors, cur_vectors]), method, seed)
    is_current = np.arange(len(points)) >= len(ref_texts)
    predicted = np.concatenate([np.full(len(ref_texts), -1), probs.argmax(1)])
    hover = [f"{_hover(t)}<br><b>training data</b>" for t in ref_texts] + [
        f"{_hover(t)}<br><b>{batch}</b> · <b>predicted</b> {names[q.argmax()]} ({q.max():.2f})"
        for t, q in zip(cur_texts, probs, strict=True)
    ]
    training = ("training data", ~is_current, {"size": 5, "opacity": 0.35, "color": RIGHT})
    origin = [training, (batch, is_current, {"size": 6, "opacity": 0.8, "color": class_colour(4)})]
    faint = (training[0], training[1], {"size": 4, "opacity": 0.15, "color": RIGHT})
    by_class = [faint] + [
        (f"predicted {name}", predicted == k, {"size": 6, "opacity": 0.8, "color": class_colour(k)})
        for k, name in enumerate(names)
    ]
    title = (
        f"Where {len(cur_texts)} {rows} of {batch} land among {len(ref_texts)} training {rows}: "
        f"{vectors} ({used}); hover a point for {'its text' if rows == 'texts' else 'what it is'}"
    )
    panels = [(f"training data vs {batch}", origin), (f"{batch} by prediction", by_class)]
    return map_page(points, hover, panels, title, thumbnails)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG inlined for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
