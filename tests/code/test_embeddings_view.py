"""The embedding-space view: PCA or UMAP planes, the fall-back for too few texts, the
interactive page's hover texts, and the settings it refuses."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from glasswork.errors import ConfigError
from glasswork.explain import embeddings
from glasswork.explain.embeddings import (
    UMAP_MIN_TEXTS,
    batch_map_page,
    check_projection,
    project,
    projection_page,
)


def _clusters(n_per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated clusters of 64-d vectors, as sentence embeddings of three topics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 64)) * 4
    labels = np.repeat(np.arange(3), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), 64))).astype(np.float32), labels


def _nearest_centroid_accuracy(points: np.ndarray, labels: np.ndarray) -> float:
    centroids = np.stack([points[labels == k].mean(0) for k in np.unique(labels)])
    nearest = np.linalg.norm(points[:, None] - centroids[None], axis=2).argmin(1)
    return float((nearest == labels).mean())


def _readable(page: str) -> str:
    """plotly writes <, > and / inside its JSON as \\u escapes; undo them to read the hover texts."""
    for escaped, char in (("\\u003c", "<"), ("\\u003e", ">"), ("\\u002f", "/")):
        page = page.replace(escaped, char)
    return page


def test_pca_plane_keeps_the_clusters_apart():
    vectors, labels = _clusters(30)
    points, used = project(vectors, "pca", seed=0)
    assert points.shape == (90, 2) and used == "PCA"
    assert _nearest_centroid_accuracy(points, labels) == 1.0


@pytest.mark.slow  # numba compiles UMAP on first use: ~20 s on two cores
def test_umap_plane_keeps_the_clusters_apart_and_is_seeded():
    vectors, labels = _clusters(40)
    points, used = project(vectors, "umap", seed=3)
    again, _ = project(vectors, "umap", seed=3)
    assert points.shape == (120, 2) and used == "UMAP"
    assert np.isfinite(points).all()
    assert _nearest_centroid_accuracy(points, labels) == 1.0
    np.testing.assert_allclose(points, again)  # the same seed draws the same map


def test_umap_on_too_few_texts_falls_back_to_pca_and_says_so():
    vectors, _ = _clusters(2)  # 6 texts: UMAP's neighbour graph would be degenerate
    points, used = project(vectors, "umap", seed=0)
    assert points.shape == (6, 2) and used.startswith("PCA") and str(UMAP_MIN_TEXTS) in used


def test_unknown_projection_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"explain.projection='tsne': expected one of \['pca', 'umap'\]"):
        check_projection("tsne")


def test_umap_without_umap_learn_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None if name == "umap" else real(name))
    with pytest.raises(ConfigError, match=r"pip install 'glasswork\[umap\]'"):
        project(np.zeros((20, 4), np.float32), "umap", seed=0)
    check_projection("pca")  # PCA needs nothing extra


def test_page_shows_each_text_on_hover_escaped_and_counts_the_errors():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = ["a fine film", "<img src=x onerror=alert(1)> awful", "zq " * 500]
    labels = np.array([1, 0, 0])
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])  # the second text is wrong
    page = _readable(projection_page(points, texts, labels, probs, ["neg", "pos"], "PCA"))
    assert "a fine film<br><b>true</b> pos · <b>predicted</b> pos (0.90)" in page
    assert "&lt;img src=x onerror=alert(1)&gt; awful" in page  # texts are data, never markup
    assert "<img src=x" not in page
    long = re.search(r'"(zq [^"]*)"', page)  # cut after its last whole word within 400 characters
    assert long and long.group(1).count("zq") == 133 and long.group(1).split("<br><b>true")[0].endswith("zq …")
    assert "right (2)" in page and "wrong (1)" in page
    assert "neg (2)" in page and "pos (1)" in page


def test_batch_map_puts_both_samples_on_one_plane_and_says_what_each_point_is():
    vectors, labels = _clusters(10)
    reference = (vectors[labels < 2], [f"train text {i}" for i in range(20)])
    probs = np.tile([0.25, 0.75], (10, 1))  # the new batch: one cluster the training data lacks
    current = (vectors[labels == 2], [f"new text {i}" for i in range(10)], probs)
    page = _readable(batch_map_page(reference, current, ["neg", "pos"], "tweets.csv", "pca", seed=0))
    assert "Where 10 texts of tweets.csv land among 20 training texts: sentence embeddings (PCA)" in page
    assert "train text 3<br><b>training data</b>" in page
    assert "new text 3<br><b>tweets.csv</b> · <b>predicted</b> pos (0.75)" in page
    assert "training data (20)" in page and "tweets.csv (10)" in page
    assert "predicted pos (10)" in page and "predicted neg (0)" in page
