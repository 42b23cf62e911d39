"""The LightningModule of a generative LM fine-tuned on prompt/response pairs: the loss is the mean
cross-entropy of the response's tokens (the prompt's are labelled -100, or read by an
encoder–decoder's encoder), as Hugging Face's models compute it from ``labels``."""

from __future__ import annotations

import torch

from glasswork.models.classifier_module import NetModule


class CausalLMModule(NetModule):
    """Supervised fine-tuning of an injected causal LM (LoRA-adapted or whole); validation logs
    the responses' loss (``val/loss``, the kept checkpoint's metric)."""

    def __init__(self, net: torch.nn.Module, lr: float, weight_decay: float, warmup_fraction: float):
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def forward(self, **inputs):
        return self.net(**inputs)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        loss = self.net(**batch).loss
        # The tokens the loss averages over: a decoder's labels shift by one (the first never is a
        # target); an encoder–decoder's are all targets.
        labels = batch["labels"] if getattr(self.net.config, "is_encoder_decoder", False) else batch["labels"][:, 1:]
        return loss, int((labels != -100).sum())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.net(**batch).loss  # no token count: it would read back from the device each step
        if self._logs_this_step():  # as the classifier: only the steps the logger writes
            self.log("train/loss", loss, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, tokens = self._loss(batch)
        # Weighted by response tokens: the epoch's value is the mean loss of a response token.
        self.log("val/loss", loss, prog_bar=True, batch_size=tokens, sync_dist=True)
