"""``task=image_classification``: a small CNN, or a Hugging Face image classifier fine-tuned from a
local folder (``model=pretrained_image model.dir=FOLDER``), trained on labelled images. Which one
is decided once, in :mod:`glasswork.models.image_backbone`; every step below uses either alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.data.images import FASHION_MNIST_CLASSES
from glasswork.errors import ConfigError, DataError
from glasswork.outputs import read_json, write_json
from glasswork.slices import IMAGE_SLICES

PREPROCESS = "preprocess.json"  # size, mode, per-channel mean and std: saved with the model
LABEL_NAMES = dict(enumerate(FASHION_MNIST_CLASSES))


class ImagePredictor:
    """A trained image network (:func:`~glasswork.models.image_backbone.load_image_net`: the small CNN
    or a fine-tuned Hugging Face classifier) and the normalisation it was trained with."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from glasswork.data.image_batches import Normalize
        from glasswork.models.image_backbone import load_image_net

        self.net = load_image_net(folder).to(device)
        self.device = device
        pre = read_json(Path(folder) / PREPROCESS)
        self.normalize = Normalize(pre["mean"], pre["std"])

    def embed(self, pixels, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate-layer embeddings and class probabilities of uint8 ``(N, C, H, W)`` images."""
        import torch

        vectors = np.zeros((len(pixels), self.net.config["hidden"]), dtype=np.float32)
        probs = np.zeros((len(pixels), self.net.config["num_labels"]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                hidden = self.net.embed(self.normalize(pixels[start : start + batch_size]).to(self.device))
                vectors[start : start + len(hidden)] = hidden.float().cpu().numpy()
                logits = self.net.classifier(hidden)
                probs[start : start + len(hidden)] = torch.softmax(logits.float(), -1).cpu().numpy()
        return vectors, probs

    def predict_proba(self, frame: pd.DataFrame, batch_size: int, progress: bool = False) -> np.ndarray:
        import torch

        from glasswork.data.image_batches import decode_all

        images = frame["image"].tolist()
        starts = range(0, len(images), batch_size)
        if progress and len(starts) > 4:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
        out = np.zeros((len(images), self.net.config["num_labels"]), dtype=np.float32)
        with torch.inference_mode():
            for start in starts:
                pixels = self.normalize(decode_all(images[start : start + batch_size])).to(self.device)
                out[start : start + len(pixels)] = torch.softmax(self.net(pixels).float(), -1).cpu().numpy()
        return out


def monitor_reader(folder: Path):
    """A reader of new images in the size and mode a trained model reads (``preprocess.json``);
    a bad image is skipped and listed, never the end of a check."""
    from glasswork.data.images import ImageReader

    pre = read_json(Path(folder) / PREPROCESS)
    return ImageReader(size=tuple(pre["image_size"]), mode=pre["image_mode"], on_bad_image="skip")


class ImageClassification:
    """Images (PNG bytes) in an ``image`` column; a :class:`~glasswork.models.cnn.SmallCNN` or, with
    ``model.dir``, a :class:`~glasswork.models.image_backbone.PretrainedImageNet`."""

    name = "image_classification"
    input_column = "image"
    baseline_name = "logistic regression on the pixels"
    # Not built yet for images: monitor and reproduce.
    steps = ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register")

    slice_by = IMAGE_SLICES  # descriptors the test metrics are sliced by (tertiles)

    def __init__(self, cfg: DictConfig | None = None):
        self.cfg = cfg
        self._stats: tuple[list[float], list[float]] | None = None

    def inputs(self) -> list[str]:
        return [self.input_column]

    def resolve(self, cfg: DictConfig) -> DictConfig:
        return cfg

    def preflight(self, cfg: DictConfig) -> list:
        """The image task's part of a run's preflight: its settings, then its data (every image
        of a user's folder or table is read and checked, as ``prepare`` will); the classes."""
        from glasswork.data import images
        from glasswork.explain.image_step import check_image_methods
        from glasswork.image_drift import check_current, check_shift
        from glasswork.models.image_backbone import check_image_net

        e, d = cfg.explain, cfg.data
        check_image_methods(e.methods)
        check_image_methods(e.sanity_methods, "explain.sanity_methods", allow_none=True)
        check_current(cfg.drift.current)
        check_shift(cfg.drift.shift)
        images.ImageReader(  # checks the size, mode and on_bad_image settings
            size=tuple(d.image_size) if d.image_size else None, mode=d.image_mode, on_bad_image=d.on_bad_image
        )
        check_image_net(cfg)  # model.dir, the image size and mode it takes, Grad-CAM's layer: no weights read
        if d.source == "fashion_mnist":
            missing = [
                f for pair in images.FASHION_MNIST_FILES.values() for f in pair if not (Path(d.idx_dir) / f).is_file()
            ]
            if missing:
                raise DataError(
                    f"data.idx_dir={d.idx_dir}: no {', '.join(missing)}: install Debian's dataset-fashion-mnist "
                    "(`make images`) or point data.idx_dir at the four IDX files"
                )
            return list(range(len(FASHION_MNIST_CLASSES)))
        if d.source == "images":
            return self.read(cfg).classes
        raise ConfigError(f"data.source={d.source!r}: expected fashion_mnist or images (task=image_classification)")

    def ingest(self, cfg: DictConfig) -> dict:
        """Fashion-MNIST's IDX files (Debian's package) into ``data.path`` as a Parquet table of PNG
        bytes and labels, which DVC versions; a user's own folder or table is checked where it lies."""
        if cfg.data.source == "fashion_mnist":
            from glasswork.data.images import fashion_mnist, png_bytes
            from glasswork.data.prepare import write_raw

            pixels, labels = fashion_mnist(cfg.data.idx_dir)
            frame = pd.DataFrame({"image": [png_bytes(a) for a in pixels], "label": labels})
            return {"data": str(write_raw(frame, Path(cfg.data.path)))}
        if cfg.data.source == "images":
            self.read(cfg)
            return {}
        raise ConfigError(
            f"data.source={cfg.data.source!r}: expected fashion_mnist or images (task=image_classification)"
        )

    def read(self, cfg: DictConfig):
        """The checked table of images (``image`` PNG bytes in ``data.image_size``/``image_mode``,
        ``label``) that ``prepare`` splits: exact duplicate images dropped, and images seen with
        two labels; at least two classes of a few images each."""
        from glasswork.data import images, schema

        d = cfg.data
        path = Path(d.path)
        reader = images.ImageReader(
            size=tuple(d.image_size) if d.image_size else None,
            mode=d.image_mode,
            max_pixels=d.max_pixels,
            on_bad_image=d.on_bad_image,
        )
        if d.source == "fashion_mnist":
            if not path.is_file():
                raise DataError(f"{path} is missing: run `glasswork ingest` first (it reads Debian's Fashion-MNIST)")
            table = pd.read_parquet(path)
            # Checked like any image: the raw file could be anyone's.
            table = table.assign(image=[reader.read_bytes(b, f"{path}, row {i}") for i, b in enumerate(table["image"])])
            source = str(path)
        else:
            if path.is_dir():
                listed, rows = images.folder_table(path), None
            else:
                from glasswork.data.sources import read_table

                raw = read_table(path, d.format, encoding=d.encoding, columns=[d.path_column, d.label_column])
                if images.holds_bytes(raw, d.path_column):  # the images themselves (a Parquet table)
                    listed, rows = raw.rename(columns={d.path_column: "image", d.label_column: "label"}), None
                else:
                    listed = images.path_table(raw, str(path), d.path_column, d.label_column)
                    rows = [f" ({path}, line {i + 2})" for i in range(len(listed))]
            listed = listed.assign(label=schema.as_classes(listed["label"], str(path), d.label_column))
            if "path" in listed:
                table = listed.assign(image=images.read_images(listed["path"].tolist(), reader, rows))
            else:  # checked, converted and resized like any image file
                checked = [reader.read_bytes(b, f"{path}, row {i}") for i, b in enumerate(listed["image"])]
                table = listed.assign(image=checked)
            source = str(path)
        read = len(table)
        bad = table["image"].isna()
        table = table[~bad]
        digest = table["image"].map(lambda b: hash(bytes(b)))
        duplicated = digest.duplicated()
        conflicting = digest.map(table.groupby(digest)["label"].nunique()) > 1
        kept = table[~duplicated & ~conflicting].reset_index(drop=True)
        classes = schema.require_classes(kept["label"], source, d.label_column)
        report = {
            "rows_read": read,
            "rows_kept": len(kept),
            "dropped_bad_images": int(bad.sum()),
            "dropped_duplicates": int((duplicated & ~conflicting).sum()),
            "dropped_conflicting_labels": int(conflicting.sum()),
            "image_size": list(reader.size or ()),
            "image_mode": reader.mode,
            "images_changed": dict(reader.changed),
            "skipped": reader.skipped[:50],
        }
        columns = ["image", "label"] + (["path"] if "path" in kept else [])
        return schema.CleanTable(kept[columns], classes, report)

    def card(self, cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
        from glasswork.data import card

        return card.card(report, splits, names)

    def module(self, cfg: DictConfig, num_labels: int, class_weights: list[float] | None = None):
        import torch

        from glasswork.models.classifier_module import ClassifierModule
        from glasswork.models.image_backbone import image_net

        torch.manual_seed(cfg.seed)
        net = image_net(cfg, num_labels)
        return ClassifierModule(
            net,
            num_labels,
            lr=cfg.model.lr * cfg.trainer.lr_scale,
            weight_decay=cfg.model.weight_decay,
            warmup_fraction=cfg.model.warmup_fraction,
            class_weights=class_weights,
        )

    def datamodule(self, cfg: DictConfig, train: pd.DataFrame, val: pd.DataFrame):
        from glasswork.data.image_batches import ImageDataModule, Normalize, channel_stats

        module = ImageDataModule(
            train,
            val,
            Normalize([0.0], [1.0]),
            cfg.trainer.batch_size,
            cfg.trainer.eval_batch_size,
            cfg.seed,
            cfg.trainer.num_workers,
        )
        # Normalised with the training split's own statistics (never the validation's or test's).
        self._stats = channel_stats(module.train.pixels)
        module.normalize = Normalize(*self._stats)
        return module

    def log_training_data(self, cfg: DictConfig, train: pd.DataFrame) -> None:
        import mlflow

        if self._stats is not None:
            mean, std = self._stats
            mlflow.log_params(
                {"data.pixel_mean": [round(m, 4) for m in mean], "data.pixel_std": [round(s, 4) for s in std]}
            )

    def save(self, net, folder: Path, labels: dict, cfg: DictConfig) -> None:
        if self._stats is None:
            raise RuntimeError("save() before datamodule(): the normalisation statistics are unknown")
        net.save_pretrained(folder)
        mean, std = self._stats
        write_json(
            folder / PREPROCESS,
            {"image_size": list(cfg.data.image_size), "image_mode": cfg.data.image_mode, "mean": mean, "std": std},
        )
        write_json(folder / "labels.json", labels)

    def predictor(self, folder: Path, device: str = "cpu") -> ImagePredictor:
        return ImagePredictor(folder, device)

    def descriptors(self, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        from glasswork.data.image_batches import decode_all
        from glasswork.image_descriptors import image_descriptors

        return image_descriptors(decode_all(frame["image"].tolist()))

    def drift_batch(self, cfg: DictConfig) -> pd.DataFrame:
        from glasswork.image_drift import current_batch

        return current_batch(cfg)

    def describer(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.image_drift import ImageDescriber

        return ImageDescriber(cfg, folder)

    def monitor_batch(self, source: Path, cfg: DictConfig, ref):
        from glasswork.image_drift import read_image_batch

        return read_image_batch(source, monitor_reader(ref.model_dir), cfg.monitor.sample_size, cfg.seed)

    def score_batch(self, path: Path, batch, describer, ref, cfg: DictConfig) -> dict[str, int]:
        from glasswork.image_drift import score_images

        return score_images(path, batch, monitor_reader(ref.model_dir), describer, ref.labels["names"], cfg)

    def retraining(self, cfg: DictConfig, summary: dict) -> list[str] | None:
        from glasswork.retraining import image_retraining

        return image_retraining(cfg, summary)

    def pyfunc(self):
        from glasswork import serving_images
        from glasswork.models import cnn, image_backbone
        from glasswork.tasks.base import PyfuncSpec, requirements

        extra = image_backbone.serving_packages(self.cfg) if self.cfg is not None else ("transformers",)
        return PyfuncSpec(
            code=str(Path(serving_images.__file__)),
            # the networks' classes and their loader, imported by the code
            code_paths=[str(Path(cnn.__file__)), str(Path(image_backbone.__file__))],
            requirements=requirements("torch", "safetensors", "PIL", *extra),
            description="Glasswork image classifier (pyfunc: a DataFrame with an 'image' column of image bytes "
            "or file paths in; the label and class probabilities out).",
        )

    def explain(self, cfg: DictConfig) -> dict:
        from glasswork.explain.image_step import explain_images

        return explain_images(cfg)

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
        from glasswork.baseline import pixel_baseline

        return pixel_baseline(train, test, seed)
