"""Image inputs: Fashion-MNIST's IDX files, class folders and path tables, and each bad image
the image task must name (a truncated file, a text file called .png, a decompression bomb, ...)."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glasswork.data import images
from glasswork.data.image_batches import channel_stats, decode_all
from glasswork.errors import ConfigError, DataError
from glasswork.image_descriptors import image_descriptors


def _png(path, size=(8, 8), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)
    return path


def _idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trips_and_names_a_short_file(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "x.gz", array)
    assert np.array_equal(images.read_idx(tmp_path / "x.gz"), array)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + b"\0" * 5)
    with pytest.raises(
        DataError, match=r"short.gz: its header promises shape \(2, 3, 4\) \(24 bytes\), the file holds 5"
    ):
        images.read_idx(tmp_path / "short.gz")
    (tmp_path / "text.idx").write_text("hello world")
    with pytest.raises(DataError, match="text.idx: not an IDX file"):
        images.read_idx(tmp_path / "text.idx")


@pytest.mark.skipif(not images.FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_seventy_thousand_labelled_images():
    x, y = images.fashion_mnist()
    assert x.shape == (70_000, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(y), np.full(10, 7_000))  # 6,000 + 1,000 of each class


def test_folder_table_reads_class_folders(tmp_path):
    for name in ("cat/a.png", "cat/b.JPG", "dog/sub/c.webp", "dog/notes.txt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    table = images.folder_table(tmp_path)
    assert sorted(table["label"]) == ["cat", "cat", "dog"]
    assert not table["path"].str.endswith("notes.txt").any()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ((), "no class sub-folders"),
        (("cat/a.png", "dog/readme.txt"), r"dog: a class folder with no images"),
        (("cat/a.png", "cat/b.png"), r"one class \(cat\) only"),
    ],
)
def test_folder_table_refuses_bad_folders(tmp_path, layout, message):
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataError, match=message):
        images.folder_table(tmp_path)


def test_folder_table_refuses_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        images.folder_table(tmp_path / "nope")


def test_path_table_names_the_row_of_a_missing_file(tmp_path):
    _png(tmp_path / "a.png")
    table = pd.DataFrame({"file": ["a.png", "gone.png"], "y": [0, 1]})
    with pytest.raises(DataError, match=r"labels.csv, line 3, column 'file': .*gone.png is not a file"):
        images.path_table(table, str(tmp_path / "labels.csv"), "file", "y")
    found = images.path_table(table.iloc[:1], str(tmp_path / "labels.csv"), "file", "y")
    assert found["path"].tolist() == [str(tmp_path / "a.png")]


def test_reader_names_a_truncated_image_and_a_text_file(tmp_path):
    whole = _png(tmp_path / "whole.png", size=(64, 64))
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:60])
    (tmp_path / "text.png").write_text("not an image at all")
    reader = images.ImageReader(size=(8, 8), mode="L")
    with pytest.raises(DataError, match=r"cut.png: the image is damaged or truncated"):
        reader.read(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"text.png: not an image PIL can read"):
        reader.read(tmp_path / "text.png")


def test_reader_refuses_a_decompression_bomb(tmp_path):
    # 3000 x 3000 pixels of one colour compress to a few kB: over a 1M-pixel limit.
    _png(tmp_path / "bomb.png", size=(3000, 3000), value=0)
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    reader = images.ImageReader(size=(8, 8), mode="L", max_pixels=1_000_000)
    with pytest.raises(DataError, match=r"bomb.png: 3000 x 3000 pixels, over data.max_pixels=1,000,000"):
        reader.read(tmp_path / "bomb.png")


def test_reader_converts_and_resizes_as_configured_and_counts_it(tmp_path):
    reader = images.ImageReader(size=(8, 8), mode="L")
    same = reader.read(_png(tmp_path / "same.png"))
    rgb = reader.read(_png(tmp_path / "rgb.png", mode="RGB"))
    big = reader.read(_png(tmp_path / "big.png", size=(16, 12)))
    assert {images.decode(b).shape for b in (same, rgb, big)} == {(8, 8)}
    assert reader.changed == {"converted from RGB to L": 1, "resized from 16x12": 1}


def test_reader_with_no_size_keeps_the_first_and_resizes_the_rest(tmp_path):
    reader = images.ImageReader(size=None, mode=None)
    reader.read(_png(tmp_path / "first.png", size=(10, 6)))
    assert reader.size == (6, 10) and reader.mode == "L"
    assert images.decode(reader.read(_png(tmp_path / "other.png", size=(4, 4)))).shape == (6, 10)


def test_skip_lists_what_it_skipped(tmp_path):
    (tmp_path / "bad.png").write_text("nope")
    reader = images.ImageReader(size=(8, 8), mode="L", on_bad_image="skip")
    assert reader.read(tmp_path / "bad.png") is None
    assert reader.read(_png(tmp_path / "good.png")) is not None
    assert len(reader.skipped) == 1 and "bad.png" in reader.skipped[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"on_bad_image": "ignore"}, "data.on_bad_image='ignore': expected error or skip"),
        ({"mode": "CMYK"}, "data.image_mode='CMYK'"),
        ({"size": (0, 8)}, r"data.image_size=\[0, 8\]"),
    ],
)
def test_reader_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        images.ImageReader(**settings)


def test_decode_all_stacks_grey_and_colour():
    grey = [images.png_bytes(np.full((4, 5), i, np.uint8)) for i in (0, 255)]
    colour = [images.png_bytes(np.zeros((4, 5, 3), np.uint8))]
    assert decode_all(grey).shape == (2, 1, 4, 5)
    assert decode_all(colour).shape == (1, 3, 4, 5)
    mean, std = channel_stats(decode_all(grey))
    assert mean == pytest.approx([0.5]) and std[0] == pytest.approx(0.5 * (40 / 39) ** 0.5)  # 40 pixels, sample std


def test_image_descriptors_tell_dark_from_bright_and_sharp_from_flat():
    flat = np.full((16, 16), 200, np.uint8)
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    dark = np.zeros((16, 16), np.uint8)
    dark[4:8, 4:8] = 100
    table = image_descriptors(decode_all([images.png_bytes(a) for a in (flat, checker, dark)]))
    assert table["brightness"].tolist() == pytest.approx([200 / 255, 0.5, 16 * 100 / 255 / 256], rel=1e-4)
    assert table["sharpness"][1] > 1 > table["sharpness"][0] == 0
    assert table["empty_share"].tolist() == pytest.approx([1.0, 0.5, 240 / 256])
    assert table["contrast"][0] == 0 and table["contrast"][1] > 0.4


def test_png_bytes_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (7, 9), dtype=np.uint8)
    assert np.array_equal(images.decode(images.png_bytes(pixels)), pixels)
    assert isinstance(io.BytesIO(images.png_bytes(pixels)).read(8), bytes)


def test_read_bytes_keeps_a_conforming_png_and_converts_the_rest():
    reader = images.ImageReader(size=(4, 5), mode="L")
    grey = images.png_bytes(np.full((4, 5), 7, np.uint8))
    assert reader.read_bytes(grey, "row 0") == grey and not reader.changed
    colour = images.png_bytes(np.zeros((4, 5, 3), np.uint8))
    assert images.decode(reader.read_bytes(colour, "row 1")).shape == (4, 5)
    with pytest.raises(DataError, match="row 2: not an image"):
        reader.read_bytes(b"plain text", "row 2")
