"""Batches of images: each split's PNG bytes decoded once into one uint8 tensor, normalised per
batch with the training split's per-channel mean and standard deviation."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from glasswork.data.images import decode


def decode_all(images: Sequence[bytes]) -> torch.Tensor:
    """PNG bytes of same-sized images as one ``(N, C, H, W)`` uint8 tensor."""
    arrays = [decode(b) for b in images]
    if not arrays:
        return torch.zeros((0, 1, 1, 1), dtype=torch.uint8)
    stacked = np.stack(arrays)
    if stacked.ndim == 3:  # grey: (N, H, W)
        stacked = stacked[:, None]
    else:  # (N, H, W, C)
        stacked = stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, on the 0-1 scale."""
    x = pixels.float().div_(255).transpose(0, 1).reshape(pixels.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()


class Normalize:
    """uint8 ``(N, C, H, W)`` -> the model's float input: ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / 255 - self.mean) / self.std


class ImageTensors(Dataset):
    """A split's images (uint8 tensor) and labels (``-1`` for an unlabelled frame)."""

    def __init__(self, frame: pd.DataFrame):
        self.pixels = decode_all(frame["image"].tolist())
        labels = frame["label"].to_numpy() if "label" in frame else np.full(len(frame), -1)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i

    def batch(self, indices: Sequence[int], normalize: Normalize) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        return {"pixel_values": normalize(self.pixels[index]), "labels": self.labels[index]}


class ImageDataModule(L.LightningDataModule):
    """Train/val loaders over two processed image splits."""

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        normalize: Normalize,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train, self.val = ImageTensors(train), ImageTensors(val)
        self.normalize, self.batch_size, self.eval_batch_size = normalize, batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers

    def _loader(self, items: ImageTensors, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            items,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            # A partial, not a lambda: loader workers that are spawned (not forked) pickle it.
            collate_fn=partial(items.batch, normalize=self.normalize),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, self.eval_batch_size, shuffle=False)
