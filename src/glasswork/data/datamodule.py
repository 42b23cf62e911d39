"""Batches for training and inference, each padded to its own longest text.

The reviews average 27 tokens (p95 47): padding every batch to a fixed 128 would spend most of
the compute on padding, so the collate function pads per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader


class TextCollator:
    """Tokenize a list of ``(text, label)`` pairs into one padded batch."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
        texts, labels = zip(*items, strict=True)
        batch = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def rows(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """``(text, label)`` pairs of a processed split; unlabelled frames get label -1."""
    labels = frame["label"].tolist() if "label" in frame else [-1] * len(frame)
    return list(zip(frame["text"].astype(str).tolist(), labels, strict=True))


def loader(
    frame: pd.DataFrame,
    collate: TextCollator,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over a frame with ``text`` (and ``label``) columns."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        rows(frame),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class TextDataModule(L.LightningDataModule):
    """Train/val loaders over the processed splits."""

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        collate: TextCollator,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train, self.val, self.collate = train, val, collate
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers

    def train_dataloader(self) -> DataLoader:
        return loader(
            self.train, self.collate, self.batch_size, shuffle=True, seed=self.seed, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return loader(self.val, self.collate, self.eval_batch_size, num_workers=self.num_workers)
