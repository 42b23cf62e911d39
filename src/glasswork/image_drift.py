"""The image task's side of a comparison: the batch the drift step compares (``drift.current``),
what describes each image to Evidently (brightness, contrast, sharpness, empty share, the CNN's
penultimate-layer embeddings and its top probability), and the folder of new images that
``glasswork monitor DIR`` reads and scores.

The default batch, ``drift.current=shifted``, is a real shift made reproducibly from the test
images: each sampled test image as a worse camera would take it (PIL's ``ImageEnhance`` at
``drift.shift.contrast`` and ``drift.shift.brightness``, then a Gaussian blur of radius
``drift.shift.blur`` pixels), labels kept, so the label-free estimate can be checked against
the true accuracy. ``drift.current=test`` compares unshifted held-out images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image, ImageEnhance, ImageFilter

from glasswork.drift import View
from glasswork.errors import ConfigError
from glasswork.image_descriptors import DESCRIPTORS

CURRENT_CHOICES = ("shifted", "test")
NUMERIC = [*DESCRIPTORS, "predicted_probability"]


def check_current(current: str) -> None:
    if current not in CURRENT_CHOICES:
        raise ConfigError(
            f"drift.current={current!r}: expected one of {list(CURRENT_CHOICES)} (task=image_classification)"
        )


def check_shift(shift) -> None:
    """Refuse a shift that is no image operation: factors must be positive, the radius not negative."""
    for name in ("contrast", "brightness"):
        value = shift[name]
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"drift.shift.{name}={value!r}: expected a factor > 0 (1 leaves the images as they are)")
    if not isinstance(shift.blur, int | float) or shift.blur < 0:
        raise ConfigError(f"drift.shift.blur={shift.blur!r}: expected a radius in pixels >= 0 (0: no blur)")


def shift_image(data: bytes, contrast: float, brightness: float, blur: float) -> bytes:
    """One PNG image as a worse camera would take it: contrast, then brightness, then blur."""
    with Image.open(io.BytesIO(data)) as image:
        shifted = ImageEnhance.Contrast(image).enhance(contrast)
        shifted = ImageEnhance.Brightness(shifted).enhance(brightness)
        if blur > 0:
            shifted = shifted.filter(ImageFilter.GaussianBlur(blur))
        buffer = io.BytesIO()
        shifted.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def current_batch(cfg: DictConfig) -> pd.DataFrame:
    """The test split, shifted (``drift.current=shifted``) or as it is (``test``); labels are the
    raw class values, as in the training data."""
    from glasswork.data.prepare import load_labels, load_split

    check_current(cfg.drift.current)
    test = load_split(cfg, "test")
    classes = load_labels(cfg)["classes"]
    test = test.assign(label=[classes[i] for i in test["label"]])
    if cfg.drift.current == "test":
        return test
    shift = cfg.drift.shift
    check_shift(shift)
    images = [shift_image(bytes(b), shift.contrast, shift.brightness, shift.blur) for b in test["image"]]
    return test.assign(image=images)


class ImageDescriber:
    """The trained CNN scores and embeds images; the descriptors describe them."""

    rows = ("images", "penultimate-layer embeddings")  # what the batch map calls its points

    def __init__(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.models.backbone import inference_device, model_dir
        from glasswork.tasks.image import ImagePredictor

        self.predictor = ImagePredictor(folder or model_dir(cfg), device=inference_device(cfg.trainer))
        self.batch_size = cfg.trainer.eval_batch_size
        self.cfg = cfg

    def describe(self, frame: pd.DataFrame, labels: list[str] | None) -> View:
        from glasswork.data.image_batches import decode_all
        from glasswork.data.images import thumbnail_uris
        from glasswork.image_descriptors import image_descriptors

        pixels = decode_all(frame["image"].tolist())
        vectors, probs = self.predictor.embed(pixels, self.batch_size)
        described = image_descriptors(pixels)
        described["predicted_probability"] = probs.max(axis=1).astype(float)
        if labels is not None:
            described["label"] = [str(v) for v in labels]
        where = frame["path"].astype(str).tolist() if "path" in frame else [f"image {i}" for i in range(len(frame))]
        # Hover texts are data (escaped by the map): the file or row, and the label where known.
        hover = where if labels is None else [f"{w}, label {lab}" for w, lab in zip(where, labels, strict=True)]
        return View(described, vectors, probs, text_columns=[], numeric=list(NUMERIC), embedding_name="image",
                    hover=hover, thumbnails=thumbnail_uris(frame["image"].tolist()))  # fmt: skip

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None):
        from glasswork.explain.pixel_drift import explanation_drift

        return explanation_drift(baseline, self.predictor, current, self.cfg)


def read_image_batch(source: Path, reader, sample_size: int, seed: int):
    """A folder of images to monitor as a :class:`~glasswork.batch.Batch`: images in class
    sub-folders carry that label, images at the top are unlabelled; every image is listed, a
    uniform seeded sample of ``sample_size`` is read for the comparison (``image`` PNG bytes in
    the model's size and mode, ``label`` as read, empty where none), and a file that is not a
    readable image is skipped and reported, not fatal."""
    from glasswork.batch import Batch
    from glasswork.data.images import IMAGE_SUFFIXES
    from glasswork.errors import DataError

    source = Path(source)
    if not source.is_dir():
        raise DataError(f"batch {source}: expected a folder of images (class sub-folders give labels)")
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and len(p.relative_to(source).parts) <= 2]
    listed = set(images)
    skipped = {
        str(p): "not an image file (png, jpg, webp, ...)"
        if p.suffix.lower() not in IMAGE_SUFFIXES
        else "deeper than a class sub-folder: not read (images at the top, or one folder per class)"
        for p in files
        if p not in listed
    }
    if not images:
        raise DataError(f"batch {source}: no images (png, jpg, webp) at its top or in class sub-folders")
    labels = [p.parent.name if p.parent != source else "" for p in images]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(sample_size, len(images)), replace=False))
    rows = []
    for i in chosen:
        data = reader.read(images[i])
        if data is None:  # on_bad_image=skip: listed in reader.skipped
            skipped[str(images[i])] = reader.skipped[-1]
            continue
        rows.append({"image": data, "label": labels[i], "file": str(images[i]), "row": 0})
    sample = pd.DataFrame(rows, columns=["image", "label", "file", "row"])
    return Batch(
        source=source,
        files=[source],
        skipped=skipped,
        n_rows=len(images),
        has_labels=any(labels),
        sample=sample,
        items=images,
    )


def score_images(path: Path, batch, reader, describer, names: list[str], cfg: DictConfig) -> dict[str, int]:
    """Score every image of ``batch`` (chunk by chunk) into one parquet file (``file``, ``label``
    where the folder gives one, ``predicted``, ``prob_<class>``); a bad image found now is added
    to the batch's skipped files. Returns the counts per predicted class."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from glasswork.data.image_batches import decode_all

    counts = dict.fromkeys([str(n) for n in names], 0)
    writer = None
    chunk = max(cfg.trainer.eval_batch_size, 1)
    with tqdm(total=len(batch.items), desc="scoring the batch", unit="image", leave=False) as bar:
        for start in range(0, len(batch.items), chunk):
            files = batch.items[start : start + chunk]
            read = [(f, reader.read(f)) for f in files]
            for f, data in read:
                if data is None:
                    batch.skipped.setdefault(str(f), reader.skipped[-1] if reader.skipped else "not readable")
            kept = [(f, data) for f, data in read if data is not None]
            if kept:
                _, probs = describer.predictor.embed(decode_all([d for _, d in kept]), chunk)
                predicted = probs.argmax(axis=1)
                columns = {
                    "file": [str(f) for f, _ in kept],
                    "label": [f.parent.name if f.parent != batch.source else "" for f, _ in kept],
                    "predicted": [str(names[i]) for i in predicted],
                    **{f"prob_{n}": probs[:, i].astype(np.float64) for i, n in enumerate(names)},
                }
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                for i, n in enumerate(names):
                    counts[str(n)] += int((predicted == i).sum())
            bar.update(len(files))
    if writer is not None:
        writer.close()
    return counts
