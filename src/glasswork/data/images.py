"""Labelled images in: Fashion-MNIST's IDX files, a folder of class sub-folders, or a table of
paths; each image checked, brought to one size and mode as the config says, and kept as PNG bytes.

Every bad image is an error naming its file (and the table's row), or, with
``data.on_bad_image=skip``, left out and listed. Nothing here writes anything: ``prepare``
writes the splits once everything has been read.
"""

from __future__ import annotations

import gzip
import io
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from glasswork.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Debian's dataset-fashion-mnist package (installed by `make`): Zalando's four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODES = {"L": 1, "RGB": 3}  # the modes a model reads, and their channels
_IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped or not) as an array of its stated shape.

    Raises:
        DataError: naming the file, when its magic number, dimensions or length are not IDX's.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: install Debian's dataset-fashion-mnist package (`make venv` does)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable {'gzip' if opener is gzip.open else ''} file ({err})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(
            f"{path}: not an IDX file (its first 4 bytes are {raw[:4].hex()}, expected 0000 0x08.. 0x01-04)"
        )
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    body = raw[4 + 4 * dims :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise DataError(f"{path}: its header promises shape {shape} ({expected} bytes), the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def fashion_mnist(folder: Path | str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (``uint8``, 28 x 28) and their labels (0-9), training
    part first; the split is ours (``prepare``), stratified like every other data set."""
    images, labels = [], []
    for image_file, label_file in FASHION_MNIST_FILES.values():
        x, y = read_idx(Path(folder) / image_file), read_idx(Path(folder) / label_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {image_file} holds {x.shape}, {label_file} {y.shape}: not images and labels")
        images.append(x)
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def png_bytes(pixels: np.ndarray) -> bytes:
    """One image (``H x W`` grey or ``H x W x 3``, uint8) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def thumbnail_uris(images: Sequence[bytes], largest: int = 64) -> list[str]:
    """Each image as a ``data:`` URI of a PNG at most ``largest`` pixels a side, for a page to
    show on hover: images that small already are inlined as they are (28 x 28 Fashion-MNIST is
    ~0.4 kB each), larger ones are shrunk first so that a map of a thousand stays a few MB."""
    import base64

    out = []
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > largest or image.format != "PNG":
                image.thumbnail((largest, largest))
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
        out.append("data:image/png;base64," + base64.b64encode(data).decode())
    return out


def decode(data: bytes) -> np.ndarray:
    """PNG bytes (as :func:`png_bytes` or :class:`ImageReader` wrote them) as a uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


@dataclass
class ImageReader:
    """Reads image files for one configured size and mode.

    ``size`` is ``(height, width)``, or ``None`` to keep the first image's size and refuse others;
    ``mode`` is ``L`` (grey) or ``RGB``, or ``None`` to keep the first image's mode and refuse
    others; ``max_pixels`` refuses decompression bombs (a small file that unpacks to gigapixels);
    ``on_bad_image`` is ``error`` or ``skip``.
    """

    size: tuple[int, int] | None = None
    mode: str | None = None
    max_pixels: int = 25_000_000
    on_bad_image: str = "error"
    skipped: list[str] = field(default_factory=list)
    changed: Counter = field(default_factory=Counter)  # "resized from 32x30", "converted from RGBA"

    def __post_init__(self) -> None:
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image={self.on_bad_image!r}: expected error or skip")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"data.image_mode={self.mode!r}: expected one of {list(MODES)} or null")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"data.image_size={list(self.size)}: expected [height, width] in pixels, or null")

    def read(self, path: Path, where: str = "") -> bytes | None:
        """The image at ``path`` as PNG bytes in the configured size and mode; ``None`` when it is
        bad and ``on_bad_image=skip`` (it is then listed in :attr:`skipped`)."""
        if not path.is_file():
            return self._bad(DataError(f"{path}{where}: no such image file"))
        return self._checked(path, f"{path}{where}")

    def read_bytes(self, data: bytes, name: str) -> bytes | None:
        """As :meth:`read`, for an image file's bytes (a table's cell); ``name`` says which. A PNG
        that needed no change is kept as it is (checked, not encoded again)."""
        data = bytes(data)
        return self._checked(io.BytesIO(data), name, keep=data if data.startswith(PNG_SIGNATURE) else None)

    def _checked(self, source, name: str, keep: bytes | None = None) -> bytes | None:
        before = sum(self.changed.values())
        try:
            pixels = self._pixels(source, name)
        except DataError as err:
            return self._bad(err)
        return keep if keep is not None and sum(self.changed.values()) == before else png_bytes(pixels)

    def _bad(self, err: DataError) -> bytes | None:
        """Raise ``err``, or under ``on_bad_image=skip`` list it and give no image."""
        if self.on_bad_image == "error":
            raise err
        self.skipped.append(str(err))
        return None

    def _pixels(self, source, name: str) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                # PIL only warns between MAX_IMAGE_PIXELS and twice it; ours is the one limit.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(source) as image:
                    width, height = image.size
                    if width * height > self.max_pixels:
                        raise DataError(
                            f"{name}: {width} x {height} pixels, over data.max_pixels={self.max_pixels:,} "
                            "(a decompression bomb, or a photo far larger than the model reads): shrink it first"
                        )
                    image.load()  # a truncated file fails here, not at open
                    return self._conform(image, name)
        except DataError:
            raise
        except UnidentifiedImageError:
            raise DataError(f"{name}: not an image PIL can read (png, jpg, webp, ...)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DataError(f"{name}: refused as a decompression bomb ({err})") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{name}: the image is damaged or truncated ({err})") from None

    def _conform(self, image: Image.Image, name: str) -> np.ndarray:
        if self.mode is None:
            self.mode = image.mode if image.mode in MODES else "RGB"
        if image.mode != self.mode:
            self.changed[f"converted from {image.mode} to {self.mode}"] += 1
            image = image.convert(self.mode)
        if self.size is None:
            self.size = (image.height, image.width)
            log.info("images: data.image_size=null: every image must be %d x %d like the first one", *self.size[::-1])
        if (image.height, image.width) != tuple(self.size):
            self.changed[f"resized from {image.width}x{image.height}"] += 1
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image)


def folder_table(root: Path | str) -> pd.DataFrame:
    """``path`` and ``label`` of every image in a folder of class sub-folders (``root/cat/1.png``).

    Raises:
        DataError: the folder is missing or empty, a class folder holds no image, or there is
            only one class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.path={root}: not a folder (expected one sub-folder of images per class)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>.png, ...)")
    rows = []
    for folder in classes:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"{folder}: a class folder with no images ({', '.join(IMAGE_SUFFIXES)}): add some or remove it"
            )
        rows += [(str(p), folder.name) for p in files]
    if len(classes) < 2:
        raise DataError(f"{root}: one class ({classes[0].name}) only: a classifier needs at least two class folders")
    return pd.DataFrame(rows, columns=["path", "label"])


def path_table(table: pd.DataFrame, source: str, path_column: str, label_column: str) -> pd.DataFrame:
    """``path`` (absolute, relative ones taken from ``source``'s folder) and ``label`` of a table
    that names image files; a missing file is an error naming its row (line, as a spreadsheet
    counts: the header is line 1)."""
    for column in (path_column, label_column):
        if column not in table.columns:
            raise DataError(f"{source}: no column {column!r} (columns: {list(table.columns)})")
    base = Path(source).parent
    paths = [base / str(p) if not Path(str(p)).is_absolute() else Path(str(p)) for p in table[path_column]]
    for line, path in enumerate(paths, start=2):
        if not path.is_file():
            raise DataError(f"{source}, line {line}, column {path_column!r}: {path} is not a file")
    return pd.DataFrame({"path": [str(p) for p in paths], "label": table[label_column].to_numpy()})


def holds_bytes(table: pd.DataFrame, column: str) -> bool:
    """Whether a table's image column holds the images' bytes (a Parquet table, as monitor's
    retraining writes one) rather than their paths."""
    values = table[column].dropna() if column in table else pd.Series(dtype=object)
    return bool(len(values)) and isinstance(values.iloc[0], bytes | bytearray)


def read_images(paths: Sequence[str], reader: ImageReader, rows: Sequence[str] | None = None) -> list[bytes | None]:
    """Each file through ``reader``, with a progress bar on long folders; ``rows`` names where
    each came from (a table's line) for the errors."""
    from tqdm.auto import tqdm

    where = rows or [""] * len(paths)
    return [
        reader.read(Path(p), w)
        for p, w in tqdm(
            list(zip(paths, where, strict=True)), desc="images", unit="img", leave=False, disable=len(paths) < 500
        )
    ]
