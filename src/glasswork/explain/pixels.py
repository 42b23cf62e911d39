"""Explanations of an image classifier, pixel by pixel, and how faithful they are.

Three methods, each through Captum, each a map of ``H x W`` scores per image (channels summed):

- ``integrated_gradients``: gradients integrated along the straight path from a baseline image to
  the input (Sundararajan et al. 2017). The baseline is the **training split's mean image**: every
  pixel at the training mean, which is zero once normalised (``preprocess.json``), so "absent"
  means "average", not "black";
- ``grad_cam``: the class's gradient-weighted activations of the last conv block (Selvaraju et
  al. 2017), positive part, upsampled bilinearly to the image;
- ``occlusion``: the fall in the class's logit when a ``patch x patch`` window is set to the
  baseline, slid with half a window's stride (Zeiler & Fergus 2014).

**Faithfulness** is ERASER's comprehensiveness and sufficiency (:mod:`.faithfulness`) with pixel
patches in the place of tokens: the image is cut into ``patch x patch`` squares, ranked by the sum
of their scores; comprehensiveness(k) is the fall in the predicted class's probability when the
top ``k`` fraction of patches is set to the baseline (deletion), sufficiency(k) the fall when only
they are kept on a baseline image (insertion). Both against ``n_random`` random patch orders, with
the same AOPC and gains as for text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from glasswork.explain.faithfulness import SUMMARY, _aggregate, gains_by_text

METHODS = ("integrated_gradients", "grad_cam", "occlusion")


def explain_pixels(
    net: torch.nn.Module,
    pixels: torch.Tensor,
    targets: Sequence[int],
    methods: Sequence[str],
    *,
    n_steps: int = 32,
    patch: int = 4,
) -> dict[str, np.ndarray]:
    """``{method: scores}``, each ``(N, H, W)``, for normalised ``pixels`` ``(N, C, H, W)`` and the
    class index to explain per image."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    net = net.eval()
    target = torch.as_tensor(list(targets), device=pixels.device)
    baseline = torch.zeros_like(pixels)  # the training mean image, normalised
    out: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "integrated_gradients":
            scores = IntegratedGradients(net).attribute(pixels, baselines=baseline, target=target, n_steps=n_steps)
        elif method == "grad_cam":
            cam = LayerGradCam(net, net.last_conv).attribute(pixels, target=target, relu_attributions=True)
            scores = LayerAttribution.interpolate(cam, tuple(pixels.shape[-2:]), interpolate_mode="bilinear")
        elif method == "occlusion":
            channels = pixels.shape[1]
            stride = max(1, patch // 2)
            scores = Occlusion(net).attribute(
                pixels, sliding_window_shapes=(channels, patch, patch), strides=(channels, stride, stride),
                baselines=0.0, target=target,
            )  # fmt: skip
        else:
            raise ValueError(f"unknown image explanation method {method!r}; valid: {list(METHODS)}")
        out[method] = scores.detach().sum(1).cpu().numpy()
    return out


def patch_scores(scores: np.ndarray, patch: int) -> np.ndarray:
    """``(N, H, W)`` pixel scores summed over ``patch x patch`` squares: ``(N, P)`` in row order
    (edge squares are smaller where ``patch`` does not divide the image)."""
    n, height, width = scores.shape
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    padded = np.zeros((n, rows * patch, cols * patch), dtype=np.float64)
    padded[:, :height, :width] = scores
    return padded.reshape(n, rows, patch, cols, patch).sum(axis=(2, 4)).reshape(n, rows * cols)


def _patch_masks(shape: tuple[int, int], patch: int) -> np.ndarray:
    """``(P, H, W)`` booleans: which pixels each patch covers."""
    height, width = shape
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    masks = np.zeros((rows * cols, height, width), dtype=bool)
    for r in range(rows):
        for c in range(cols):
            masks[r * cols + c, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = True
    return masks


@torch.inference_mode()
def _probabilities(net, pixels: torch.Tensor, targets: torch.Tensor, batch: int = 512) -> np.ndarray:
    out = []
    for start in range(0, len(pixels), batch):
        logits = net(pixels[start : start + batch]).float()
        out.append(torch.softmax(logits, -1).gather(1, targets[start : start + batch, None])[:, 0])
    return torch.cat(out).cpu().numpy()


def _by_image(
    net: torch.nn.Module,
    pixels: torch.Tensor,
    targets: Sequence[int],
    explained: dict[str, np.ndarray],
    fractions: Sequence[float],
    patch: int,
    n_random: int,
    seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per method and per image, the fall of the target's probability with the top-ranked
    patches deleted (comprehensiveness) or alone kept (sufficiency), at each fraction; and the
    same for ``n_random`` random orders (the chance level, shared by the methods)."""
    net = net.eval()
    masks = torch.as_tensor(_patch_masks(tuple(pixels.shape[-2:]), patch), device=pixels.device)
    n_patches = len(masks)
    target = torch.as_tensor(list(targets), device=pixels.device)
    full = _probabilities(net, pixels, target)
    rng = np.random.default_rng(seed)
    random_orders = [np.stack([rng.permutation(n_patches) for _ in range(len(pixels))]) for _ in range(n_random)]

    def drops(orders: list[np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for name, keep_top in (("comprehensiveness", False), ("sufficiency", True)):
            for fraction in fractions:
                k = max(1, math.ceil(fraction * n_patches))
                per_order = []
                for order in orders:
                    top = torch.as_tensor(order[:, :k], device=pixels.device)
                    covered = masks[top].any(1)[:, None]  # (N, 1, H, W): the top-k patches' pixels
                    keep = covered if keep_top else ~covered
                    per_order.append(full - _probabilities(net, pixels * keep, target))
                found[f"{prefix}{name}_top{fraction:g}"] = np.mean(per_order, axis=0)
        return found

    chance = drops(random_orders, "random_")
    methods = {
        method: drops([np.argsort(-patch_scores(scores, patch), axis=1, kind="stable")], "")
        for method, scores in explained.items()
    }
    return methods, chance


def faithfulness_pixels(
    net: torch.nn.Module,
    pixels: torch.Tensor,
    targets: Sequence[int],
    explained: dict[str, np.ndarray],
    fractions: Sequence[float],
    *,
    patch: int = 4,
    n_random: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Per method ``<method>/comprehensiveness_aopc``, ``…/sufficiency_aopc``, their random-order
    twins and gains, and one value per fraction, as :func:`glasswork.explain.faithfulness.faithfulness`
    reports for tokens."""
    methods, chance = _by_image(net, pixels, targets, explained, fractions, patch, n_random, seed)
    metrics: dict[str, float] = {}
    for method, curves in methods.items():
        metrics |= {f"{method}/{k}": v for k, v in _aggregate(curves | chance, list(fractions)).items()}
    return metrics


def gains_by_image(
    net: torch.nn.Module,
    pixels: torch.Tensor,
    targets: Sequence[int],
    scores: np.ndarray,
    fractions: Sequence[float],
    *,
    patch: int = 4,
    n_random: int = 5,
    seed: int = 0,
) -> dict:
    """One method's AOPCs and gains over random orders (as :func:`faithfulness_summary` gives them
    for texts), with each image's gains (``by_text``, for a paired interval between two models)."""
    methods, chance = _by_image(net, pixels, targets, {"m": scores}, fractions, patch, n_random, seed)
    curves = methods["m"] | chance
    quality, gains = _aggregate(curves, list(fractions)), gains_by_text(curves, list(fractions))
    return {k: quality[k] for k in SUMMARY} | {
        "n_texts": len(pixels),
        "by_text": {k: [round(float(x), 6) for x in v] for k, v in gains.items()},
    }


def agreement(a: np.ndarray, b: np.ndarray, *, absolute: bool = False) -> float:
    """Mean over images of the Spearman correlation of two ``(N, H, W)`` score maps."""
    rhos = []
    for x, y in zip(a, b, strict=True):
        x, y = (np.abs(x), np.abs(y)) if absolute else (x, y)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            rhos.append(0.0)
            continue
        rhos.append(float(spearmanr(x.ravel(), y.ravel()).statistic))
    return float(np.mean(rhos)) if rhos else 0.0
