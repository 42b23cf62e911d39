"""Batches for training and inference, each padded to its own longest text.

The reviews average 27 tokens (p95 47): padding every batch to a fixed 128 would spend most of
the compute on padding, so the collate function pads per batch. With ``bucket_by_length`` the
training batches are also drawn from texts of similar length (shuffled pools sorted by length,
then the batches shuffled), which removes most of the padding that remains.

Each split is tokenized once, when its loader is built, not in every batch of every epoch: the
loader only pads token ids. Tokenizing a batch of 1,024 reviews took one core of our dev VM 86 ms,
longer than an H200's whole training step at that batch (37-55 ms with this loader), so only
several busy workers could keep a GPU fed; padding the ids takes about a millisecond
(``benchmarks/loader_throughput.py``). Length buckets sort by the exact token counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EncodedTexts(Dataset):
    """A split's token ids (special tokens included, truncated) in one flat int32 array with
    offsets, and its labels: item ``i`` is ``(ids, label)``.

    One array rather than a list of lists: 1.5 MB against 11 MB for the reviews' training split,
    and the loader's forked workers share it as it is (reading Python objects would touch their
    reference counts and copy every page into every worker).
    """

    def __init__(self, chunks: Iterable[list[list[int]]], labels: Sequence[int]):
        ids, counts = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        for chunk in chunks:  # each chunk's Python lists are dropped once it is packed
            ids.append(np.fromiter(chain.from_iterable(chunk), np.int32))
            counts.append(np.fromiter(map(len, chunk), np.int64, len(chunk)))
        self.lengths = np.concatenate(counts)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.flat = np.concatenate(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.lengths):
            raise ValueError(f"{len(self.labels)} labels for {len(self.lengths)} texts")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if not 0 <= i < len(self.lengths):
            raise IndexError(i)
        return self.flat[self.offsets[i] : self.offsets[i + 1]], int(self.labels[i])


class TextCollator:
    """Tokenize a split once (:meth:`encode`), then pad lists of its items into batches.

    The batches equal what the tokenizer itself returns for the same texts with
    ``padding="longest"`` (or ``"max_length"``), ``truncation=True`` and ``pad_to_multiple_of``;
    where ``max_length`` is not a multiple of it (which the tokenizer refuses), the widths stop at
    ``max_length``.
    """

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: int | None = None, fixed_length: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        # A multiple of 8 keeps tensor-core shapes and bounds the shapes torch.compile sees.
        self.pad_to_multiple_of = pad_to_multiple_of
        self.fixed_length = fixed_length  # pad to max_length: the static-padding baseline
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def encode(self, frame: pd.DataFrame, chunk: int = 8192) -> EncodedTexts:
        """A split's token ids and labels (unlabelled frames get label -1), tokenized a chunk of
        texts at a time: the tokenizer's lists of Python ints live only for one chunk."""
        texts = frame["text"].astype(str).tolist()
        labels = frame["label"].tolist() if "label" in frame else [-1] * len(frame)
        return EncodedTexts((self._token_ids(texts[i : i + chunk]) for i in range(0, len(texts), chunk)), labels)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, verbose=False)["input_ids"]

    def __call__(self, items: Sequence[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
        ids, labels = zip(*items, strict=True)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        width = self.max_length if self.fixed_length else int(lengths.max(initial=0))
        if self.pad_to_multiple_of:
            # Never past max_length, which the model's positions allow (the tokenizer itself
            # refuses a max_length that is not a multiple).
            width = min(-(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of, max(self.max_length, width))
        positions = np.arange(width)
        # Row-major order: the True cells of each row take that row's ids, left to right.
        mask = positions >= (width - lengths)[:, None] if self.left else positions < lengths[:, None]
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        input_ids[mask] = np.concatenate(ids)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def truncation(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, float]:
    """How many texts are longer than ``max_length`` tokens (special tokens included), so that
    the model never sees their tails: their count, their share, and the longest text's tokens."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]
    over = sum(n > max_length for n in lengths)
    share = over / max(len(lengths), 1)
    return {"truncated": over, "truncated_share": share, "longest_tokens": max(lengths, default=0)}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of texts of similar length, in a new random order every epoch.

    Each epoch shuffles all indices, cuts them into pools of ``pool_batches`` batches, sorts
    each pool by length and cuts it into batches, then shuffles the batches: every batch mixes
    texts from across the data set, yet holds little padding.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0, pool_batches: int = 50):
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
    """A DataLoader over a frame with ``text`` (and ``label``) columns, tokenized here once."""
    items = collate.encode(frame)
    common = {
        "collate_fn": collate,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": pin_memory,
    }
    if shuffle and bucket_by_length:
        sampler = LengthBucketSampler(items.lengths, batch_size, seed)
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
