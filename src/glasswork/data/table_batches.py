"""Batches of table rows: each split preprocessed once into one float tensor (the training
split's preprocessing, fitted before the data module is built)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class RowTensors(Dataset):
    """A split's preprocessed rows and labels (``-1`` where unlabelled)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray | None):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        labels = np.full(len(features), -1) if labels is None else labels
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        return {"features": self.features[index], "labels": self.labels[index]}


class TableDataModule(L.LightningDataModule):
    """Train/val loaders over two preprocessed splits."""

    def __init__(
        self,
        train: RowTensors,
        val: RowTensors,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers

    def _loader(self, items: RowTensors, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            items,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            collate_fn=items.batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, self.eval_batch_size, shuffle=False)
