"""The LightningModules' shared part (AdamW with linear warm-up, FSDP2 sharding) and the
classifier's (class metrics)."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup


class NetModule(L.LightningModule):
    """What every Glasswork LightningModule shares: an injected network ``self.net``, its sharding
    under FSDP2, AdamW with linear warm-up over the parameters that train (``hparams`` ``lr``,
    ``weight_decay``, ``warmup_fraction``), gradient clipping with the fused optimizer."""

    net: torch.nn.Module

    def configure_model(self) -> None:
        """Under ``trainer=fsdp`` (FSDP2), shard each of the network's blocks and then the rest
        over the data-parallel ranks. Hugging Face names a model's blocks in
        ``_no_split_modules`` (BertEmbeddings, BertLayer), as accelerate's FSDP wrapping uses them.
        No-op under every other strategy (no device mesh)."""
        if self.device_mesh is None or getattr(self.net, "_glasswork_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        net = getattr(self.net, "_orig_mod", self.net)  # under torch.compile, the network it wraps
        blocks = set(getattr(net, "_no_split_modules", None) or ())
        for sub in net.modules():
            if type(sub).__name__ in blocks:
                fully_shard(sub, mesh=mesh)
        fully_shard(net, mesh=mesh)
        self.net._glasswork_sharded = True

    def _logs_this_step(self) -> bool:
        """Whether the logger writes this step's metrics: Lightning's own test (it has no public one)."""
        trainer = self._trainer
        if trainer is None:  # called outside a Trainer (a unit test)
            return True
        return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)

    def _fused(self) -> bool:
        """The fused CUDA AdamW updates every parameter in one launch. Not with fp16 loss scaling,
        where Lightning must unscale the gradients before clipping them."""
        return self.device.type == "cuda" and "16-mixed" != str(self.trainer.precision)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning refuses to clip for a fused optimizer even in bf16, where no scaler is
        # involved and clipping the gradients as they are is exactly right.
        if gradient_clip_val and self._fused():
            if gradient_clip_algorithm in (None, "norm"):
                torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for param in self.net.parameters():
            if not param.requires_grad:  # frozen (LoRA's base weights): no optimizer state for them
                continue
            # Biases and norm weights are not decayed (as in BERT's original recipe).
            (no_decay if param.ndim < 2 else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, fused=self._fused())
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_fraction * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ClassifierModule(NetModule):
    """Train a classifier network: a Hugging Face sequence classifier, a CNN, any network whose
    ``forward`` takes a batch's inputs by name (all but ``labels``) and returns logits (or an
    output with ``.logits``).

    The network is injected (built by the task, :mod:`glasswork.tasks`), so this module knows
    nothing of configs, files, inputs or where the weights came from.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        num_labels: int,
        lr: float,
        weight_decay: float,
        warmup_fraction: float,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        # Per-class loss weights (trainer.class_weights=balanced); a buffer, so it moves with the module.
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else torch.empty(0)
        self.register_buffer("class_weights", weights, persistent=False)
        # Each validation's confusion matrix (rows: truth), kept on the host as lists so that the
        # train step can tell whether the best checkpoint's predictions collapsed onto one class.
        self.register_buffer("_val_confusion", torch.zeros(num_labels, num_labels, dtype=torch.long), persistent=False)
        self.val_history: list[dict] = []
        # validate_args=False: the checks call torch.unique, which makes the host wait for the
        # GPU at every training step; the labels were checked when the data was prepared.
        # Training accuracy as two counters on the device, read back once an epoch (see training_step).
        self.register_buffer("_train_counts", torch.zeros(2, dtype=torch.long), persistent=False)
        self.val_acc = MulticlassAccuracy(num_classes=num_labels, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=num_labels, average="macro")

    def forward(self, **inputs) -> torch.Tensor:
        out = self.net(**inputs)
        return getattr(out, "logits", out)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(**{k: v for k, v in batch.items() if k != "labels"})
        weight = self.class_weights if self.class_weights.numel() else None
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], weight=weight)
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits = self._step(batch)
        labels = batch["labels"]
        correct = (logits.argmax(-1) == labels).sum()
        self._train_counts[0] += correct  # in place on the device: no read-back, no host-to-device copy
        self._train_counts[1] += labels.numel()
        # Logged only on the steps the logger writes (trainer.log_every_n_steps), which is what a
        # step's value reaches anyway: each self.log costs Lightning ~1 ms of host work, a fixed
        # cost a step that showed against a small CNN's steps (benchmarks/README.md). Not
        # prog_bar=True: Lightning would read the loss back from the device after every step
        # (models/trainer.py's bar shows the last logged loss at its own refreshes).
        if self._logs_this_step():
            size = labels.numel()
            self.log("train/loss", loss, batch_size=size)
            self.log("train/acc_step", correct.float() / size, batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        correct, seen = self._train_counts.tolist()  # one read-back an epoch
        self._train_counts.zero_()
        if seen:
            self.log("train/acc_epoch", correct / seen)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self._step(batch)
        preds = logits.argmax(-1)
        self.val_acc(preds, batch["labels"])
        self.val_f1(preds, batch["labels"])
        k = self.hparams.num_labels
        self._val_confusion += torch.bincount(batch["labels"] * k + preds, minlength=k * k).view(k, k)
        size = batch["labels"].numel()
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)  # averaged over DDP ranks
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=size)
        self.log("val/macro_f1", self.val_f1, prog_bar=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        counts = self._val_confusion.tolist()  # one read-back per validation
        self._val_confusion.zero_()
        if not self.trainer.sanity_checking:
            self.val_history.append({"step": int(self.global_step), "confusion": counts})
