"""Batches of prompt/response pairs for causal LM fine-tuning: each pair encoded once
(:func:`glasswork.data.prompts.encode`), padded on the right to the batch's longest, the pads
masked and left out of the loss."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from glasswork.data.prompts import encode


class PadPairs:
    """Collate encoded pairs: right padding with ``pad_id``, labels -100 on the pads."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(i["input_ids"]) for i in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class PromptDataModule(L.LightningDataModule):
    """Train/val loaders over ``prompt``/``response`` frames; the training order is seeded."""

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        tokenizer,
        *,
        batch_size: int,
        eval_batch_size: int,
        max_length: int,
        truncation: str,
        seed: int,
    ):
        super().__init__()
        self.train = [
            encode(tokenizer, p, r, max_length, truncation)
            for p, r in zip(train["prompt"], train["response"], strict=True)
        ]
        self.val = [
            encode(tokenizer, p, r, max_length, truncation) for p, r in zip(val["prompt"], val["response"], strict=True)
        ]
        self.collate = PadPairs(tokenizer.pad_token_id)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train, batch_size=self.batch_size, shuffle=True, generator=generator, collate_fn=self.collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.eval_batch_size, collate_fn=self.collate)
