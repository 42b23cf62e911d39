"""The textbook deep model of a table: a multilayer perceptron (dense 64 -> 64 -> classes by
default), and how it is saved: its shape in ``config.json``, its weights in safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class MLP(nn.Module):
    """Dense layers (linear, ReLU, dropout) of ``hidden`` widths, then the classes.

    It reads the preprocessed row (:class:`glasswork.data.tabular.Preprocessor`: standardised
    numbers, one-hot categories); the last hidden layer's activations (:meth:`embed`) are the
    embedding the drift step and the embedding map use.
    """

    def __init__(self, in_features: int, num_labels: int, hidden: tuple[int, ...] = (64, 64), dropout: float = 0.1):
        super().__init__()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden={list(hidden)}: expected one or more layer widths of at least 1")
        self.config = {"in_features": in_features, "num_labels": num_labels, "hidden": list(hidden), "dropout": dropout}
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden:
            layers.append(nn.Sequential(nn.Linear(previous, width), nn.ReLU(), nn.Dropout(dropout)))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(previous, num_labels)

    def cascade(self) -> list[tuple[str, list[nn.Module]]]:
        """The layers from the output down, for the cascading randomisation check
        (:func:`glasswork.explain.sanity.cascade`)."""
        dense = [(f"dense {i + 1}", [self.layers[i]]) for i in reversed(range(len(self.layers)))]
        return [("classifier", [self.classifier]), *dense]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(features))

    def save_pretrained(self, folder: Path | str) -> None:
        """``config.json`` and ``model.safetensors`` in ``folder`` (as Hugging Face models save)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps({"architecture": "MLP", **self.config}, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: Path | str) -> MLP:
        """The network :meth:`save_pretrained` wrote, in eval mode."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG).read_text())
        config.pop("architecture", None)
        net = cls(**{**config, "hidden": tuple(config["hidden"])})
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
        return net.eval()
