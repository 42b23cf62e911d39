"""Numbers that describe an image, for slices and drift: what a shifted camera, lighting or
crop changes first, before any class does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

DESCRIPTORS = ("brightness", "contrast", "sharpness", "empty_share")
# A pixel within this share of the image's darkest value counts as empty background.
EMPTY_LEVEL = 0.05


def image_descriptors(pixels: torch.Tensor) -> pd.DataFrame:
    """One row per image of a uint8 ``(N, C, H, W)`` tensor: mean brightness and its standard
    deviation (contrast), both on the 0-1 scale; sharpness, the variance of the Laplacian (the
    usual focus measure: blur lowers it); the share of background pixels (within
    ``EMPTY_LEVEL`` of the image's darkest value)."""
    grey = pixels.float().mean(1) / 255  # (N, H, W)
    flat = grey.flatten(1)
    laplacian = (
        -4 * grey[:, 1:-1, 1:-1] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
    )
    darkest = flat.min(1, keepdim=True).values
    empty = (flat <= darkest + EMPTY_LEVEL).float().mean(1)
    rows = torch.stack([flat.mean(1), flat.std(1), laplacian.flatten(1).var(1), empty], dim=1)
    return pd.DataFrame(rows.numpy().astype(np.float64), columns=list(DESCRIPTORS))
