"""The image task's networks: the small CNN (:mod:`glasswork.models.cnn`), or a Hugging Face image
classifier fine-tuned from a local folder (``model=pretrained_image model.dir=FOLDER``), behind
one interface the steps use alike.

:class:`PretrainedImageNet` wraps any ``AutoModelForImageClassification`` model (ResNet, ConvNeXt,
MobileNet, RegNet, EfficientNet, ViT, Swin, ...) with what :class:`~glasswork.models.cnn.SmallCNN`
offers: ``forward(pixel_values)`` -> logits, :meth:`~PretrainedImageNet.embed` (the classification
head's input), ``classifier`` (embedding -> logits), ``last_conv`` (Grad-CAM's layer: the last
block of the backbone whose output is a feature map), :meth:`~PretrainedImageNet.cascade` (the
randomisation check's stages), ``config`` (a dict: ``num_labels``, ``hidden``, ``image_size``...),
``save_pretrained`` and ``from_pretrained``. Its head is new, of the task's number of classes;
grey images are repeated to the three channels an RGB backbone takes; images come in the size
``data.image_size`` says and normalised as the small CNN's are, with the training split's
per-channel mean and standard deviation (``preprocess.json``), so that zero is the training mean
image: the baseline of integrated gradients, occlusion and the faithfulness measure.

:func:`load_image_net` reads a saved model folder's ``config.json`` (``architecture``) and loads
whichever kind it holds: the registered pyfunc carries this file and ``cnn.py`` (``code_paths``),
so nothing here imports the rest of Glasswork outside a ``try``; transformers is imported only
for a Hugging Face model.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # inside Glasswork
    from glasswork.errors import ConfigError
    from glasswork.models.cnn import CONFIG, SmallCNN
except ImportError:  # a loaded pyfunc: this file and cnn.py are on the path (code_paths)
    from cnn import CONFIG, SmallCNN  # type: ignore[no-redef]

    ConfigError = ValueError  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

ARCHITECTURE = "PretrainedImageNet"  # config.json's "architecture" of a saved PretrainedImageNet
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class PretrainedImageNet(nn.Module):
    """A Hugging Face image classifier (``model``) with the interface of
    :class:`~glasswork.models.cnn.SmallCNN`, taking ``in_channels`` x ``image_size`` images.

    One forward pass of a blank image at construction finds what the interface needs and refuses
    an image size the backbone cannot take: the head's input (the embedding), and the backbone's
    last block whose output is a feature map (Grad-CAM's layer).
    """

    def __init__(self, model: nn.Module, in_channels: int, image_size: tuple[int, int], source: str | None = None):
        super().__init__()
        self.model = model
        hf = model.config
        name = f"{source or 'the model'} ({hf.model_type})"
        wants = int(getattr(hf, "num_channels", 3))
        if in_channels != wants and not (in_channels == 1 and wants == 3):
            fix = {1: "set data.image_mode=L", 3: "set data.image_mode=RGB"}.get(wants, "no data.image_mode gives them")
            raise ConfigError(
                f"data.image_mode gives {in_channels}-channel images but {name} takes {wants}-channel ones: {fix}"
            )
        self.repeat = wants // in_channels  # grey images into an RGB backbone: the grey in each channel
        head = getattr(model, "classifier", None)
        if not isinstance(head, nn.Module):
            raise ConfigError(f"{name}: {type(model).__name__} has no `classifier` head to replace")
        blocks = _block_list(model)
        self._blocks: str | None = None if blocks is None else blocks[0]  # its name in `model`
        probe = _probe(model, head, blocks, (wants, *image_size), name)
        self._head_shape: tuple[int, ...] = probe["head_shape"]
        self._cam: str | None = probe["cam"]
        self._no_split_modules = getattr(model, "_no_split_modules", None)  # FSDP's blocks (ClassifierModule)
        self.config: dict[str, Any] = {
            "num_labels": int(hf.num_labels),
            "in_channels": in_channels,
            "image_size": list(image_size),
            "hidden": probe["hidden"],
            "model_type": hf.model_type,
            "grad_cam_layer": probe["cam"],
            "feature_map": probe["feature_map"],
            "source": source,
        }

    def _channels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.expand(-1, self.repeat, -1, -1) if self.repeat > 1 else pixel_values

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=self._channels(pixel_values)).logits

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the classification head reads (pooled features, or a ViT's class token), flat."""
        seen: list[torch.Tensor] = []

        def head_input(_, args) -> None:
            seen.append(args[0])

        hook = self.model.classifier.register_forward_pre_hook(head_input)
        try:
            self.model(pixel_values=self._channels(pixel_values))
        finally:
            hook.remove()
        return seen[0].flatten(1)

    @property
    def classifier(self) -> nn.Module:
        """Embedding (as :meth:`embed` gives it) -> logits."""
        head = self.model.classifier
        return nn.Sequential(nn.Unflatten(1, self._head_shape), head) if len(self._head_shape) > 1 else head

    @property
    def last_conv(self) -> nn.Module:
        """Grad-CAM's layer: the backbone's last block whose output is a feature map."""
        if self._cam is None:
            raise ConfigError(
                f"grad_cam needs a convolutional feature map and {self.config['source'] or 'this model'} "
                f"({self.config['model_type']}) has none: leave grad_cam out of explain.methods and "
                "explain.sanity_methods"
            )
        return self.model.get_submodule(self._cam)

    def cascade(self) -> list[tuple[str, list[nn.Module]]]:
        """The layers from the output down, for the cascading randomisation check: the head, each
        block of the backbone from the last, then the stem (and whatever else is outside the blocks)."""
        stages: list[tuple[str, list[nn.Module]]] = [("classifier", [self.model.classifier])]
        base = self.model.base_model
        if self._blocks is None:
            return [*stages, ("backbone", [base])]
        blocks = self.model.get_submodule(self._blocks)
        stages += [(f"block {i + 1}", [blocks[i]]) for i in reversed(range(len(blocks)))]
        rest = [m for m in base.children() if not any(b is blocks for b in m.modules()) and _has_weights(m)]
        return [*stages, ("stem", rest)] if rest else stages

    def save_pretrained(self, folder: Path | str) -> None:
        """The Hugging Face folder (``config.json``, ``model.safetensors``); ``config.json`` also
        says it is ours (``architecture``) and how it reads images (``glasswork``)."""
        hf = self.model.config
        hf.architecture = ARCHITECTURE
        hf.glasswork = {k: self.config[k] for k in ("in_channels", "image_size", "source")}
        self.model.save_pretrained(str(folder))

    @classmethod
    def from_pretrained(cls, folder: Path | str) -> PretrainedImageNet:
        """The network :meth:`save_pretrained` wrote, in eval mode."""
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(str(folder), dtype=torch.float32)
        saved = model.config.glasswork
        size = saved["image_size"]
        return cls(model, saved["in_channels"], (int(size[0]), int(size[1])), saved.get("source")).eval()


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The backbone's list of blocks (ResNet's and ConvNeXt's stages, ViT's layers): its largest
    ``ModuleList`` outside the head, with its name in ``model``."""
    head = set(model.classifier.modules())
    lists = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) and m not in head and _has_weights(m)
    ]
    if not lists:
        return None
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def _probe(model: nn.Module, head: nn.Module, blocks, shape: tuple[int, ...], name: str) -> dict:
    """One blank image through the network: the head's input shape, and the last block whose
    output is a feature map ``(N, C, H, W)``; a clear error for an image size it cannot take."""
    seen: dict[str, Any] = {}
    maps: dict[int, tuple[int, ...]] = {}

    def head_input(_, args) -> None:  # a hook that returned something would replace the input
        seen["head"] = args[0].shape

    def block_output(i: int):
        def hook(_, __, out) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                maps[i] = tuple(out.shape)

        return hook

    hooks = [head.register_forward_pre_hook(head_input)]
    if blocks is not None:
        hooks += [block.register_forward_hook(block_output(i)) for i, block in enumerate(blocks[1])]
    try:
        _blank_pass(model, shape, name)
    finally:
        for hook in hooks:
            hook.remove()
    if "head" not in seen:
        raise ConfigError(f"{name}: its forward pass never calls its `classifier` head")
    cam = feature_map = None
    if maps:
        last = max(maps)
        cam, feature_map = f"{blocks[0]}.{last}", list(maps[last][-2:])
    head_shape = tuple(int(d) for d in seen["head"][1:])
    return {"head_shape": head_shape, "hidden": math.prod(head_shape), "cam": cam, "feature_map": feature_map}


def _blank_pass(model: nn.Module, shape: tuple[int, ...], name: str) -> None:
    """Two blank images of ``shape`` through ``model`` in eval mode (batch norm's statistics kept)."""
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(pixel_values=torch.zeros((2, *shape), device=next(model.parameters()).device))
    except Exception as err:  # a shape the backbone cannot take: each architecture says it its own way
        size = getattr(model.config, "image_size", None)
        takes = f"; its config.json says image_size={size}" if size else ""
        why = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"data.image_size={list(shape[1:])}: {name} cannot take images of this size "
            f"({type(err).__name__}: {why}){takes}"
        ) from None
    finally:
        model.train(training)


def load_image_net(folder: Path | str) -> nn.Module:
    """The network a train step saved in ``folder``, in eval mode: a
    :class:`~glasswork.models.cnn.SmallCNN` or a :class:`PretrainedImageNet`, as its ``config.json``'s
    ``architecture`` says."""
    folder = Path(folder)
    kind = json.loads((folder / CONFIG).read_text()).get("architecture")
    if kind == "SmallCNN":
        return SmallCNN.from_pretrained(folder)
    if kind == ARCHITECTURE:
        return PretrainedImageNet.from_pretrained(folder)
    raise ValueError(f"{folder / CONFIG}: architecture {kind!r}: expected SmallCNN or {ARCHITECTURE}")


# What follows builds a network from a run's config (``cfg.model``, ``cfg.data``): Glasswork only.


def image_net(cfg, num_labels: int, *, weights: bool = True) -> nn.Module:
    """The image task's network for ``cfg``: with ``model.dir``, that folder's Hugging Face image
    classifier with a new head of ``num_labels`` classes (its pretrained weights unless
    ``weights=False``, the preflight's check); without, a :class:`~glasswork.models.cnn.SmallCNN`
    of ``model.channels``, ``model.hidden`` and ``model.dropout``."""
    size = cfg.data.image_size
    if not size or len(size) != 2:
        raise ConfigError(f"data.image_size={size!r}: the image task's model needs [height, width]")
    image_size = (int(size[0]), int(size[1]))
    in_channels = 3 if cfg.data.image_mode == "RGB" else 1
    folder = cfg.model.get("dir")
    if not folder:
        try:
            return SmallCNN(
                num_labels,
                in_channels=in_channels,
                image_size=image_size,
                channels=tuple(cfg.model.channels),
                hidden=cfg.model.hidden,
                dropout=cfg.model.dropout,
            )
        except ValueError as err:
            raise ConfigError(f"data.image_size={list(image_size)}: {err} (model.channels)") from None
    return _pretrained(Path(folder), num_labels, in_channels, image_size, weights)


def check_image_net(cfg) -> None:
    """The preflight's check of the image model: the network is built on the ``meta`` device (no
    memory, no weights read) and fed a blank image of ``data.image_size``, so a folder that is no
    image classifier, an image size or mode the backbone cannot take, and Grad-CAM asked of a
    backbone without a feature map fail before anything is written."""
    with torch.device("meta"):
        net = image_net(cfg, 2, weights=False)
    if "grad_cam" in {*cfg.explain.methods, *(cfg.explain.sanity_methods or ())}:
        net.last_conv  # noqa: B018  # raises the error that names the settings


def serving_packages(cfg) -> tuple[str, ...]:
    """What the registered pyfunc needs installed beyond torch, safetensors and pillow."""
    return ("transformers",) if cfg.model.get("dir") else ()


def check_folder(folder: Path) -> Any:
    """``model.dir``'s Hugging Face config, or a clear error: no such folder, no ``config.json``,
    no weights, or a model that is no image classifier."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as KINDS

    where = f"model.dir={folder}"
    expected = "expected a Hugging Face image classification model folder (config.json and model.safetensors)"
    if not folder.is_dir():
        raise ConfigError(f"{where}: no such folder; {expected}")
    if not (folder / CONFIG).is_file():
        raise ConfigError(f"{where}: no config.json in it; {expected}")
    try:
        raw = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: config.json is not readable JSON ({err}); {expected}") from None
    if raw.get("architecture") == "SmallCNN":
        raise ConfigError(f"{where}: a Glasswork SmallCNN, not a Hugging Face model: use model=small_cnn; {expected}")
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind not in KINDS:
        said = f"a {kind!r} model ({', '.join(raw.get('architectures') or []) or 'no architectures'})"
        raise ConfigError(
            f"{where}: config.json describes {said if kind else 'no model_type'}, not an image classifier; "
            f"expected one of AutoModelForImageClassification's model types ({', '.join(sorted(KINDS))})"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"{where}: no weights ({' or '.join(WEIGHT_FILES)}); {expected}")
    try:
        return AutoConfig.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001  # transformers' many ways of refusing a config
        raise ConfigError(f"{where}: config.json does not load ({type(err).__name__}: {err}); {expected}") from None


def _pretrained(
    folder: Path, num_labels: int, in_channels: int, image_size: tuple[int, int], weights: bool
) -> PretrainedImageNet:
    from transformers import AutoModelForImageClassification

    config = check_folder(folder)
    if weights:
        try:
            # fp32 master weights whatever the folder stores; a head of another size is replaced.
            model = AutoModelForImageClassification.from_pretrained(
                str(folder), num_labels=num_labels, ignore_mismatched_sizes=True, dtype=torch.float32
            )
        except Exception as err:  # noqa: BLE001
            raise ConfigError(
                f"model.dir={folder}: the weights do not load ({type(err).__name__}: {str(err).strip()[:300]})"
            ) from None
        # A new head of the task's classes, even where the folder's had as many: its classes were others.
        for part in model.classifier.modules():
            if hasattr(part, "reset_parameters"):
                part.reset_parameters()
    else:
        config.num_labels = num_labels
        model = AutoModelForImageClassification.from_config(config, dtype=torch.float32)
    net = PretrainedImageNet(model, in_channels, image_size, source=str(folder))
    if weights:
        _say_how_it_reads(folder, net, image_size)
    # from_pretrained returns eval mode; Lightning keeps module modes as they are.
    return net.train()


def _say_how_it_reads(folder: Path, net: PretrainedImageNet, image_size: tuple[int, int]) -> None:
    c = net.config
    log.info(
        "model: %s (%s) from model.dir=%s, %.1fM weights, a new head of %d classes on its %d-wide features",
        type(net.model).__name__, c["model_type"], folder,
        sum(p.numel() for p in net.parameters()) / 1e6, c["num_labels"], c["hidden"],
    )  # fmt: skip
    if net.repeat > 1:
        log.info("model: it takes %d-channel images: each grey image is repeated to all %d", net.repeat, net.repeat)
    pre = folder / "preprocessor_config.json"
    said = json.loads(pre.read_text()) if pre.is_file() else {}
    unused = (
        f"; the folder's preprocessor_config.json (size {said.get('size')}, mean {said.get('image_mean')}, "
        f"std {said.get('image_std')}) is not used"
        if said
        else ""
    )
    log.info(
        "model: images are resized to data.image_size=%s and normalised with the training split's per-channel "
        "mean and std, as for the small CNN, so that zero is the training mean image (the explanations' "
        "baseline)%s",
        list(image_size), unused,
    )  # fmt: skip
    if c["feature_map"] and c["feature_map"][0] * c["feature_map"][1] == 1:
        log.warning(
            "model: Grad-CAM's layer (%s) gives a 1 x 1 map at data.image_size=%s: its heatmap is one value per "
            "image; a larger data.image_size gives it a grid",
            c["grad_cam_layer"], list(image_size),
        )  # fmt: skip
