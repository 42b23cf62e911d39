"""Batches for training and inference, each padded to its own longest text.

The reviews average 27 tokens (p95 47): padding every batch to a fixed 128 would spend most of
the compute on padding, so the collate function pads per batch. With ``bucket_by_length`` the
training batches are also drawn from texts of similar length (shuffled pools sorted by length,
then the batches shuffled), which removes most of the padding that remains.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler


class TextCollator:
    """Tokenize a list of ``(text, label)`` pairs into one padded batch."""

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: int | None = None, fixed_length: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        # A multiple of 8 keeps tensor-core shapes and bounds the shapes torch.compile sees.
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding = "max_length" if fixed_length else "longest"  # fixed: the static-padding baseline

    def __call__(self, items: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
        texts, labels = zip(*items, strict=True)
        batch = self.tokenizer(
            list(texts),
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def truncation(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, float]:
    """How many texts are longer than ``max_length`` tokens (special tokens included), so that
    the model never sees their tails: their count, their share, and the longest text's tokens."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]
    over = sum(n > max_length for n in lengths)
    share = over / max(len(lengths), 1)
    return {"truncated": over, "truncated_share": share, "longest_tokens": max(lengths, default=0)}


def rows(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """``(text, label)`` pairs of a processed split; unlabelled frames get label -1."""
    labels = frame["label"].tolist() if "label" in frame else [-1] * len(frame)
    return list(zip(frame["text"].astype(str).tolist(), labels, strict=True))


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of texts of similar length, in a new random order every epoch.

    Each epoch shuffles all indices, cuts them into pools of ``pool_batches`` batches, sorts
    each pool by length and cuts it into batches, then shuffles the batches: every batch mixes
    texts from across the data set, yet holds little padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.pool = batch_size, seed, pool_batches * batch_size
        self.epoch = 0

    @staticmethod
    def _shard() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        _, world = self._shard()
        return -(-len(self.lengths) // self.batch_size) // world

    def __iter__(self) -> Iterator[list[int]]:
        # Every rank draws the same permutation (same seed and epoch) and takes every
        # world-th batch, the same number each, so no rank waits for a batch that never comes.
        rng = np.random.default_rng(self.seed + self.epoch)
        rank, world = self._shard()
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        order = rng.permutation(len(batches))
        order = order[: len(order) // world * world]
        for k in order[rank::world]:
            yield batches[k]


def loader(
    frame: pd.DataFrame,
    collate: TextCollator,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    bucket_by_length: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over a frame with ``text`` (and ``label``) columns."""
    items = rows(frame)
    common = {
        "collate_fn": collate,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": pin_memory,
    }
    if shuffle and bucket_by_length:
        # Characters are a close enough proxy for tokens to group texts, and cost no tokenizer pass.
        sampler = LengthBucketSampler([len(text) for text, _ in items], batch_size, seed)
        return DataLoader(items, batch_sampler=sampler, **common)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(items, batch_size=batch_size, shuffle=shuffle, generator=generator, **common)


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
        bucket_by_length: bool = False,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.train, self.val, self.collate = train, val, collate
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.bucket_by_length, self.pin_memory = bucket_by_length, pin_memory

    def train_dataloader(self) -> DataLoader:
        return loader(
            self.train,
            self.collate,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
            bucket_by_length=self.bucket_by_length,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        return loader(
            self.val, self.collate, self.eval_batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory
        )
