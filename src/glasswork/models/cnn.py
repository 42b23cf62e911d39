"""A small convolutional image classifier, in the spirit of the classic MNIST conv net, and how
it is saved: its shape in ``config.json``, its weights in safetensors (no pickle on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class SmallCNN(nn.Module):
    """Conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool), then a dense head.

    ``channels=(32, 64)`` on 28 x 28 grey images: 3.8M multiply-adds and 0.42M weights per
    image. The last conv block is :attr:`last_conv` (Grad-CAM's layer); the penultimate
    activations (:meth:`embed`) are the embedding the drift step and the embedding map use.
    """

    def __init__(
        self,
        num_labels: int,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
    ):
        super().__init__()
        self.config = {
            "num_labels": num_labels,
            "in_channels": in_channels,
            "image_size": list(image_size),
            "channels": list(channels),
            "hidden": hidden,
            "dropout": dropout,
        }
        blocks: list[nn.Module] = []
        previous, (height, width) = in_channels, image_size
        for width_out in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, width_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width_out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            previous, height, width = width_out, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"image_size={list(image_size)} is too small for {len(channels)} pooling blocks")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(previous * height * width, hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))

    @property
    def last_conv(self) -> nn.Module:
        return self.features[-1]

    def cascade(self) -> list[tuple[str, list[nn.Module]]]:
        """The layers from the output down, for the cascading randomisation check
        (:func:`glasswork.explain.sanity.cascade`): the classifier, the dense layer, then each
        conv block from the last."""
        blocks = [(f"conv {i + 1}", [self.features[i]]) for i in reversed(range(len(self.features)))]
        return [("classifier", [self.classifier]), ("dense", [self.head]), *blocks]

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(pixel_values))

    def save_pretrained(self, folder: Path | str) -> None:
        """``config.json`` and ``model.safetensors`` in ``folder`` (as Hugging Face models save)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps({"architecture": "SmallCNN", **self.config}, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: Path | str) -> SmallCNN:
        """The network :meth:`save_pretrained` wrote, in eval mode."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG).read_text())
        config.pop("architecture", None)
        net = cls(**{**config, "image_size": tuple(config["image_size"]), "channels": tuple(config["channels"])})
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
        return net.eval()
