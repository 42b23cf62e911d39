"""Batches of prompt/response pairs for fine-tuning: each pair encoded once
(:func:`glasswork.data.prompts.encode`), padded on the right to the batch's longest, the pads
masked and left out of the loss. A decoder-only model reads prompt and response as one sequence;
an encoder–decoder model reads the prompt in its encoder and learns the response as its labels
(the model shifts them behind its decoder's start token itself)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from glasswork.data.prompts import encode


class PadPairs:
    """Collate encoded pairs: right padding with ``pad_id``, labels -100 on the pads; with
    ``seq2seq``, the prompt (``input_ids``) and the response (``labels``) apart."""

    def __init__(self, pad_id: int, seq2seq: bool = False):
        self.pad_id = pad_id
        self.seq2seq = seq2seq

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        if self.seq2seq:
            return self._apart(items)
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

    def _apart(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        prompts, responses = [], []
        for item in items:
            n = next(k for k, label in enumerate(item["labels"]) if label != -100)  # the prompt's length
            prompts.append(item["input_ids"][:n])
            responses.append(item["labels"][n:])
        ids = torch.full((len(items), max(map(len, prompts))), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full((len(items), max(map(len, responses))), -100, dtype=torch.long)
        for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            ids[row, : len(prompt)], mask[row, : len(prompt)] = torch.tensor(prompt), 1
            labels[row, : len(response)] = torch.tensor(response)
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
        seq2seq: bool = False,
    ):
        super().__init__()
        self.train = [
            encode(tokenizer, p, r, max_length, truncation)
            for p, r in zip(train["prompt"], train["response"], strict=True)
        ]
        self.val = [
            encode(tokenizer, p, r, max_length, truncation) for p, r in zip(val["prompt"], val["response"], strict=True)
        ]
        self.collate = PadPairs(tokenizer.pad_token_id, seq2seq)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train, batch_size=self.batch_size, shuffle=True, generator=generator, collate_fn=self.collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.eval_batch_size, collate_fn=self.collate)
