"""Explanation drift for images: where integrated gradients put the evidence for the predicted
class on the test split (the explain step's reference, ``global_importance.json``) against a new
batch, and whether the explanations still carry the predictions there.

Three descriptors per image, each a share of the image's total |attribution| (summed over
channels), tested with Evidently's K-S test as the text task's are:

- ``on_background``: on background pixels (within ``EMPTY_LEVEL`` of the image's darkest value,
  as the ``empty_share`` descriptor counts them): a model that starts reading the background;
- ``in_centre``: on the central half of each side (a quarter of the area): evidence moving to
  the edges;
- ``top_decile``: on the 10% most attributed pixels: how concentrated the evidence is.

Besides the verdict: the Jensen-Shannon distance between the two mean attribution maps (where
on the canvas the mass lies), and the faithfulness gains over random patch orders on both sides
with an interval on their difference (reported, not voted, as for texts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from scipy.spatial.distance import jensenshannon

from glasswork.image_descriptors import EMPTY_LEVEL

DESCRIPTORS = ("on_background", "in_centre", "top_decile")


def saliency_descriptors(maps: np.ndarray, pixels: torch.Tensor) -> dict[str, list[float]]:
    """Per descriptor, its value for each image: ``maps`` are ``(N, H, W)`` |attribution| maps of
    the uint8 ``(N, C, H, W)`` ``pixels``."""
    mass = np.abs(maps).reshape(len(maps), -1).astype(np.float64)
    total = np.maximum(mass.sum(1), 1e-12)
    grey = pixels.float().mean(1).flatten(1).numpy() / 255
    background = grey <= grey.min(1, keepdims=True) + EMPTY_LEVEL
    height, width = maps.shape[1:]
    centre = np.zeros((height, width), dtype=bool)
    centre[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    k = max(1, round(0.1 * mass.shape[1]))
    top = -np.sort(-mass, axis=1)[:, :k].sum(1)
    values = {
        "on_background": (mass * background).sum(1) / total,
        "in_centre": mass[:, centre.ravel()].sum(1) / total,
        "top_decile": top / total,
    }
    return {name: [round(float(v), 5) for v in values[name]] for name in DESCRIPTORS}


def mean_map(maps: np.ndarray) -> np.ndarray:
    """The images' |attribution| maps, each normalised to sum 1, averaged: where on the canvas the
    evidence lies."""
    mass = np.abs(maps).astype(np.float64)
    mass /= np.maximum(mass.sum((1, 2), keepdims=True), 1e-12)
    return mass.mean(0)


def attributed(predictor, pixels: torch.Tensor, cfg: DictConfig) -> tuple[torch.Tensor, list[int], np.ndarray]:
    """The normalised images, the predicted classes and the |integrated gradients| maps
    (``explain.global_n_steps``) of uint8 ``pixels``."""
    from glasswork.explain.pixels import explain_pixels

    x = predictor.normalize(pixels).to(predictor.device)
    with torch.inference_mode():
        targets = predictor.net(x).argmax(-1).tolist()
    maps = explain_pixels(predictor.net, x, targets, ["integrated_gradients"], n_steps=cfg.explain.global_n_steps)
    return x, targets, np.abs(maps["integrated_gradients"])


def faithfulness(predictor, x: torch.Tensor, targets: list[int], maps: np.ndarray, cfg: DictConfig) -> dict:
    """The gains over random patch orders of the first ``explain.faithfulness_max_texts`` images."""
    from glasswork.explain.pixels import gains_by_image

    n, e = cfg.explain.faithfulness_max_texts, cfg.explain
    return gains_by_image(predictor.net, x[:n], targets[:n], maps[:n], list(e.fractions),
                          patch=e.patch_size, n_random=e.n_random, seed=cfg.seed)  # fmt: skip


def reference_view(predictor, images: list[bytes], cfg: DictConfig) -> tuple[dict, np.ndarray, list[int]]:
    """The explain step's reference for explanation drift (``global_importance.json``) from the
    test ``images`` (PNG bytes), and the maps and predicted classes it was made from (the class
    saliency figure draws them)."""
    from glasswork.data.image_batches import decode_all

    pixels = decode_all(images)
    x, targets, maps = attributed(predictor, pixels, cfg)
    view = {
        "method": "integrated_gradients",
        "n_steps": cfg.explain.global_n_steps,
        "n_texts": len(images),
        "image_digests": digests(images),
        "descriptors": saliency_descriptors(maps, pixels),
        "mean_map": np.round(mean_map(maps), 7).tolist() if len(maps) else [],
        "faithfulness": faithfulness(predictor, x, targets, maps, cfg),
    }
    return view, maps, targets


def explanation_drift(reference: dict | None, predictor, current: pd.DataFrame, cfg: DictConfig):
    """How the attributions moved from the test split (``reference``) to the batch's images
    (the first ``drift.explain_sample`` of ``current``, leaving out any image the reference
    itself explained): the summary for ``drift.json`` and Evidently's report (``None`` when not
    computed)."""
    from glasswork.data.image_batches import decode_all
    from glasswork.explain.global_importance import descriptor_drift, quality_change

    if reference is None or "descriptors" not in reference:
        status = "not computed: the explain step's global_importance.json is missing (run `glasswork explain`)"
        return {"status": status}, None
    images = current["image"].tolist()
    seen = set(reference.get("image_digests", ()))
    images = [b for b in images if _digest(b) not in seen][: cfg.drift.explain_sample]
    if len(images) < 2:
        return {"status": f"not computed: {len(images)} images to explain (drift.explain_sample, at least 2)"}, None
    pixels = decode_all(images)
    x, targets, maps = attributed(predictor, pixels, cfg)
    found = saliency_descriptors(maps, pixels)
    alpha = cfg.drift.explanation_alpha
    n = (len(images), reference["n_texts"])
    summary, report = descriptor_drift(reference["descriptors"], found, DESCRIPTORS, alpha, *n)
    before, after = np.asarray(reference["mean_map"], dtype=float), mean_map(maps)
    if before.shape == after.shape:
        summary["js_distance"] = float(jensenshannon(before.ravel(), after.ravel(), base=2))
    current_quality = faithfulness(predictor, x, targets, maps, cfg)
    summary["faithfulness"] = quality_change(reference["faithfulness"], current_quality, alpha)
    return summary, report


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.md5(bytes(data)).hexdigest()


def digests(images: list[bytes]) -> list[str]:
    """The images' md5s: the reference lists the images it explained, so that a batch drawn from
    the same split (``drift.current=test``) is compared on other images, not on the same ones."""
    return [_digest(b) for b in images]
