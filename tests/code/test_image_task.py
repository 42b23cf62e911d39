"""The task seam with images: `task=image_classification` composes its own data and model groups,
runs ingest -> prepare -> train -> evaluate on a folder or a table of images through the same
steps as text, and refuses the steps it does not have yet before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.outputs import read_json
from glasswork.steps import get

SHAPES = ("horizontal", "vertical", "blank")


def _image(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A noisy grey image whose class is its pattern: a CNN learns them in a few dozen steps."""
    pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
    if kind == "horizontal":
        pixels[::4] = 230
    elif kind == "vertical":
        pixels[:, ::4] = 230
    return pixels


def write_image_folder(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``; every fifth image is RGB and 20 x 20, to be converted and resized."""
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(_image(kind, rng, 20 if i % 5 == 0 else 16))
            (image.convert("RGB") if i % 5 == 0 else image).save(root / kind / f"{i}.png")
    return root


def image_overrides(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        "task=image_classification",
        "debug=fast_image",
        f"paths.root={tmp_path}",
        "data=images",
        f"data.path={data}",
        "data.image_size=[16,16]",
        "data.image_mode=L",
        "data.max_rows=null",
        "trainer.max_epochs=12",
        "trainer.limit_train_batches=1.0",
        *extra,
    ]


def test_the_image_task_picks_its_own_data_and_model_groups():
    cfg = load_config(["task=image_classification"])
    assert cfg.task._target_ == "glasswork.tasks.image.ImageClassification"
    assert (cfg.data.source, cfg.model.name, list(cfg.data.image_size)) == ("fashion_mnist", "small_cnn", [28, 28])
    assert load_config([]).task._target_ == "glasswork.tasks.text.TextClassification"
    with pytest.raises(ConfigError, match=r"unknown setting model.package.*Valid keys of model: name, channels"):
        load_config(["task=image_classification", "+model.package=x"])
    with pytest.raises(ConfigError, match="unknown setting data.text_column"):
        load_config(["task=image_classification", "+data.text_column=x"])


@pytest.mark.parametrize("command", ["run", "drift", "register"])
def test_steps_the_image_task_lacks_are_refused_before_anything_is_written(tmp_path, command, capsys):
    assert main([command, *image_overrides(tmp_path, write_image_folder(tmp_path / "imgs", per_class=6))]) == 2
    err = capsys.readouterr().err
    assert "task=image_classification has no" in err and "built: ingest, prepare, train, evaluate, explain" in err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()


def test_a_folder_of_images_trains_and_evaluates_through_the_same_steps(tmp_path):
    folder = write_image_folder(tmp_path / "imgs")
    cfg = load_config(image_overrides(tmp_path, folder))
    for name in ("ingest", "prepare", "train", "evaluate", "explain"):
        get(name).function()(cfg)
    report = read_json(tmp_path / "data/processed/report.json")
    # Every fifth image of 60 per class was RGB and 20 x 20: converted and resized, and said so.
    assert report["images_changed"] == {"converted from RGB to L": 36, "resized from 20x20": 36}
    assert (report["rows_read"], report["image_size"]) == (180, [16, 16])
    card = (tmp_path / "artifacts/prepare/data_card.md").read_text()
    assert "images: 16 x 16 L (changed: 36 converted from RGB to L, 36 resized from 20x20)" in card
    model = tmp_path / "artifacts/train/model"
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "preprocess.json", "labels.json"}
    metrics = read_json(tmp_path / "artifacts/evaluate/metrics.json")["test"]
    assert metrics["n"] == 18 and metrics["accuracy"] >= 0.8, metrics  # 3 classes: chance is 1/3
    slices = read_json(tmp_path / "artifacts/evaluate/slices.json")
    names = [row["slice"] for row in slices["slices"]]
    assert any(n.startswith("brightness") for n in names) and "true class blank" in names
    predictions = pd.read_parquet(tmp_path / "artifacts/evaluate/predictions.parquet")
    assert predictions["path"].str.endswith(".png").all() and len(predictions) == 18
    explained = tmp_path / "artifacts/explain"
    assert {p.name for p in explained.iterdir()} >= {
        "attributions.html", "heatmaps.png", "class_saliency.png", "faithfulness.png", "randomisation.png",
    }  # fmt: skip
    quality = read_json(explained / "metrics.json")["explain"]
    for method in ("integrated_gradients", "grad_cam", "occlusion"):
        assert f"{method}/comprehensiveness_aopc" in quality and f"{method}/randomisation_passed" in quality
    # The stripes are where the evidence is: deleting the top-ranked patches first hurts more
    # than deleting them in a random order (a map pointing at the noise would not).
    assert quality["integrated_gradients/comprehensiveness_gain"] > 0, quality
    scores = read_json(explained / "attributions.json")
    assert scores["baseline"].startswith("the training split's mean image") and len(scores["images"]) == 3


def test_a_table_of_paths_names_the_line_of_a_missing_file(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "imgs", per_class=6)
    files = sorted(folder.rglob("*.png"))
    table = pd.DataFrame(
        {"file": [str(p.relative_to(tmp_path)) for p in files], "kind": [p.parent.name for p in files]}
    )
    table.loc[len(table)] = ["imgs/blank/gone.png", "blank"]
    table.to_csv(tmp_path / "labels.csv", index=False)
    overrides = image_overrides(tmp_path, tmp_path / "labels.csv", "data.path_column=file", "data.label_column=kind")
    assert main(["prepare", *overrides]) == 2
    err = capsys.readouterr().err
    assert f"labels.csv, line {len(table) + 1}, column 'file'" in err and "gone.png is not a file" in err
    assert not (tmp_path / "data/processed").exists()


def test_skip_leaves_bad_images_out_and_lists_them(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", per_class=8)
    (folder / "blank" / "broken.png").write_text("not an image")
    cfg = load_config(image_overrides(tmp_path, folder, "data.on_bad_image=skip"))
    get("prepare").function()(cfg)
    report = read_json(tmp_path / "data/processed/report.json")
    assert report["dropped_bad_images"] == 1 and "broken.png" in report["skipped"][0]
    assert "skipped (data.on_bad_image=skip): 1" in (tmp_path / "artifacts/prepare/data_card.md").read_text()
    with pytest.raises(Exception, match=r"broken.png: not an image PIL can read"):
        get("prepare").function()(load_config(image_overrides(tmp_path, folder)))
