"""The task seam with images: `task=image_classification` composes its own data and model groups,
runs every step (ingest -> prepare -> train -> evaluate -> explain -> drift -> register) on a
folder or a table of images through the same steps as text, serves the registered model from
image bytes or paths, and a task that lacks a step is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.monitor import monitor
from glasswork.outputs import read_json
from glasswork.steps import get

SHAPES = ("horizontal", "vertical", "blank")
THUMBNAIL = '"data:image\\u002fpng;base64,'  # an image's data URI as plotly writes it ('/' escaped)
# The image task's own folders under paths.root (conf/task/image_classification.yaml).
ART, DATA = "artifacts/image_classification", "data/image_classification/processed"


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
        "debug=fast",
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


@pytest.mark.parametrize("command", ["run", "register"])
def test_steps_a_task_lacks_are_refused_before_anything_is_written(tmp_path, command, capsys, monkeypatch):
    from glasswork.tasks.image import ImageClassification

    # The seam's promise for the next tasks: a task that has not built a step yet says so.
    monkeypatch.setattr(ImageClassification, "steps", ("ingest", "prepare", "train", "evaluate", "explain", "drift"))
    assert main([command, *image_overrides(tmp_path, write_image_folder(tmp_path / "imgs", per_class=6))]) == 2
    err = capsys.readouterr().err
    assert "task=image_classification has no register step yet" in err and "built: ingest, prepare" in err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow  # the image pipeline's steps
def test_a_folder_of_images_trains_and_evaluates_through_the_same_steps(tmp_path):
    folder = write_image_folder(tmp_path / "imgs")
    cfg = load_config(image_overrides(tmp_path, folder))
    for name in ("ingest", "prepare", "train", "evaluate", "explain"):
        get(name).function()(cfg)
    report = read_json(tmp_path / f"{DATA}/report.json")
    # Every fifth image of 60 per class was RGB and 20 x 20: converted and resized, and said so.
    assert report["images_changed"] == {"converted from RGB to L": 36, "resized from 20x20": 36}
    assert (report["rows_read"], report["image_size"]) == (180, [16, 16])
    card = (tmp_path / f"{ART}/prepare/data_card.md").read_text()
    assert "images: 16 x 16 L (changed: 36 converted from RGB to L, 36 resized from 20x20)" in card
    model = tmp_path / f"{ART}/train/model"
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "preprocess.json", "labels.json"}
    metrics = read_json(tmp_path / f"{ART}/evaluate/metrics.json")["test"]
    assert metrics["n"] == 18 and metrics["accuracy"] >= 0.8, metrics  # 3 classes: chance is 1/3
    slices = read_json(tmp_path / f"{ART}/evaluate/slices.json")
    names = [row["slice"] for row in slices["slices"]]
    assert any(n.startswith("brightness") for n in names) and "true class blank" in names
    predictions = pd.read_parquet(tmp_path / f"{ART}/evaluate/predictions.parquet")
    assert predictions["path"].str.endswith(".png").all() and len(predictions) == 18
    explained = tmp_path / f"{ART}/explain"
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
    assert read_json(explained / "contrast.json")["status"] == "no champion to compare with"
    # The embedding map: every test image a point, and hovering one shows the image itself.
    mapped = (explained / "embeddings.html").read_text(encoding="utf-8")
    assert "Where the model puts 18 test images: penultimate-layer embeddings" in mapped
    assert mapped.count(THUMBNAIL) == 2 * 18 and "plotly_hover" in mapped  # each image in both panels

    get("drift").function()(cfg)
    drift = read_json(tmp_path / f"{ART}/drift/drift.json")
    # drift.current=shifted: the test images at 0.6 contrast, 1.3 brightness and blurred. The
    # shapes are dark stripes on grey: lower contrast and more light move brightness and contrast
    # (a check that would fail if the batch were the test images unchanged, as the next run shows).
    assert drift["current"] == "shifted" and drift["n_current"] == 18
    assert {"brightness", "contrast", "sharpness", "empty_share", "embeddings:image"} <= set(drift["columns"])
    assert drift["columns"]["contrast"]["drifted"] and drift["columns"]["brightness"]["drifted"], drift["columns"]
    assert "text" not in drift["columns"]
    performance = drift["performance"]
    assert (
        performance["status"] == "computed" and performance["calibrated_on"] == "validation split (18 rows, per class)"
    )
    # Explanation drift: integrated gradients on the shifted images against the explain step's
    # reference (the 18 test images, unshifted): where the evidence lies, tested per descriptor.
    explained = drift["explanation_drift"]
    assert explained["status"] == "computed" and (explained["n_current"], explained["n_reference"]) == (18, 18)
    assert set(explained["tests"]) == {"on_background", "in_centre", "top_decile"}
    assert 0 <= explained["js_distance"] <= 1 and "change" in explained["faithfulness"]
    drift_metrics = read_json(tmp_path / f"{ART}/drift/metrics.json")["drift"]
    assert "explanation_js_distance" in drift_metrics and "explanation_unseen_mass" not in drift_metrics
    assert "on_background" in (tmp_path / f"{ART}/drift/explanation_report.html").read_text(encoding="utf-8")
    landing = (tmp_path / f"{ART}/drift/embeddings.html").read_text(encoding="utf-8")
    assert "18 images of shifted land among 144 training images: penultimate-layer embeddings" in landing
    assert landing.count(THUMBNAIL) == 2 * (18 + 144), "a thumbnail per point of both panels"

    get("register").function()(cfg)
    record = read_json(tmp_path / f"{ART}/register/registration.json")
    assert record["promote"] and record["version"] == "1", record

    # The registered pyfunc reads image paths or bytes, converts and resizes them as training did,
    # and gives the probabilities the evaluate step logged for the same test images.
    mlflow.set_tracking_uri(cfg.tracking.uri)
    served = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    from_paths = served.predict(pd.DataFrame({"image": predictions["path"]}))
    from_bytes = served.predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in predictions["path"]]}))
    columns = [f"prob_{name}" for name in sorted(SHAPES)]
    np.testing.assert_allclose(from_paths[columns].to_numpy(), predictions[columns].to_numpy(), atol=1e-5)
    pd.testing.assert_frame_equal(from_paths, from_bytes)
    assert (from_paths["label"] == predictions["predicted"]).all()
    with pytest.raises(Exception, match=r"image row 1 \(bytes\): not a readable image"):
        served.predict(pd.DataFrame({"image": [Path(predictions["path"][0]).read_bytes(), b"not an image"]}))
    with pytest.raises(Exception, match=r"missing inputs \['image'\]"):  # MLflow's schema says it first
        served.predict(pd.DataFrame({"text": ["a"]}))

    # glasswork monitor DIR: class sub-folders give labels, loose images have none; a file that
    # is no image is skipped and listed, not fatal; every good image is scored.
    batch = write_image_folder(tmp_path / "batch", per_class=8, seed=5)
    for i, path in enumerate(sorted(batch.rglob("*.png"))[:4]):
        path.rename(batch / f"loose{i}.png")
    (batch / "notes.txt").write_text("not an image")
    (batch / "blank" / "broken.png").write_text("not an image")
    watched = load_config(image_overrides(tmp_path, folder, f"monitor.output_dir={tmp_path / 'monitor'}"))
    summary = monitor(watched, batch)
    assert summary["task"] == "image_classification" and summary["model"] == f"{cfg.registry.model_name} v1"
    assert summary["batch"]["n_rows"] == 25 and set(summary["batch"]["skipped"]) == {
        str(batch / "notes.txt"), str(batch / "blank" / "broken.png"),
    }  # fmt: skip
    assert summary["n_current"] == 24 and summary["unseen_labels"] == []
    assert summary["label_drift"].startswith("not tested")  # four rows have no label
    assert {"brightness", "embeddings:image"} <= set(summary["columns"]) and "label" not in summary["columns"]
    scored = pd.read_parquet(Path(summary["output_dir"]) / "predictions.parquet")
    assert len(scored) == 24 and (scored["label"] == "").sum() == 4
    assert sum(summary["predicted_counts"].values()) == 24
    assert summary["performance"]["n_labelled"] == 20


@pytest.mark.slow  # the image pipeline's steps
def test_a_second_image_model_is_gated_on_its_faithfulness_against_the_champion(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", per_class=30)
    cfg = load_config(image_overrides(tmp_path, folder, "trainer.max_epochs=4", "drift.current=test"))
    for name in ("ingest", "prepare", "train", "evaluate", "explain", "register"):
        get(name).function()(cfg)
    again = load_config(image_overrides(tmp_path, folder, "trainer.max_epochs=4", "seed=7"))
    for name in ("train", "evaluate", "explain"):
        get(name).function()(again)
    versus = read_json(tmp_path / f"{ART}/explain/contrast.json")
    assert versus["status"] == "compared with champion v1", versus
    paired = versus["global_faithfulness"]
    assert paired["n_texts"] == 9 and set(paired["change"]) == {"comprehensiveness_gain", "sufficiency_gain"}
    get("register").function()(again)
    record = read_json(tmp_path / f"{ART}/register/registration.json")
    assert record["version"] == "2" and record["champion_version"] == "1"
    assert any("faithfulness gains" in r or "gain fell" in r for r in record["reasons"]), record["reasons"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "drift.current=tweets",
            "drift.current='tweets': expected one of ['shifted', 'test'] (task=image_classification)",
        ),
        ("drift.shift.contrast=0", "drift.shift.contrast=0.0: expected a factor > 0"),
        ("drift.shift.blur=-1", "drift.shift.blur=-1.0: expected a radius in pixels >= 0"),
    ],
)
def test_a_bad_drift_setting_of_the_image_task_is_refused_before_training(tmp_path, capsys, override, message):
    folder = write_image_folder(tmp_path / "imgs", per_class=6)
    assert main(["run", *image_overrides(tmp_path, folder, override)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow  # the Prefect flow: a temporary Prefect server
def test_glasswork_run_takes_the_image_task_through_the_flow(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "imgs", per_class=20)
    assert main(["run", *image_overrides(tmp_path, folder, "trainer.max_epochs=3")]) == 0
    out = capsys.readouterr().out
    assert "baseline (logistic regression on the pixels, same split)" in out
    assert "registered glasswork-imgs v1; it took 'champion'" in out and "drift vs shifted:" in out
    assert read_json(tmp_path / f"{ART}/register/registration.json")["promote"]


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
    assert not (tmp_path / f"{DATA}").exists()


def test_skip_leaves_bad_images_out_and_lists_them(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", per_class=8)
    (folder / "blank" / "broken.png").write_text("not an image")
    cfg = load_config(image_overrides(tmp_path, folder, "data.on_bad_image=skip"))
    get("prepare").function()(cfg)
    report = read_json(tmp_path / f"{DATA}/report.json")
    assert report["dropped_bad_images"] == 1 and "broken.png" in report["skipped"][0]
    assert "skipped (data.on_bad_image=skip): 1" in (tmp_path / f"{ART}/prepare/data_card.md").read_text()
    with pytest.raises(Exception, match=r"broken.png: not an image PIL can read"):
        get("prepare").function()(load_config(image_overrides(tmp_path, folder)))


def test_retraining_adds_a_batchs_labelled_images_to_the_champions_and_reads_them_as_images(tmp_path):
    # monitor.on_drift=retrain for images: the champion's splits (PNG bytes) and the batch's class
    # sub-folders become one table of image bytes, which data=images reads like any image file.
    from glasswork.data.images import png_bytes
    from glasswork.outputs import write_json
    from glasswork.retraining import image_retraining

    rng = np.random.default_rng(0)
    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("train", "val", "test"):
        frame = pd.DataFrame(
            {"image": [png_bytes(_image(k, rng)) for k in SHAPES * 4], "label": [0, 1, 2] * 4}
        )  # 12 a split, 16 x 16 grey
        frame.to_parquet(splits / f"{name}.parquet")
    write_json(splits / "labels.json", {"classes": list(SHAPES), "names": list(SHAPES)})
    batch = write_image_folder(tmp_path / "batch", per_class=5, seed=3)  # every fifth is RGB, 20 x 20
    (batch / "diagonal").mkdir()  # a class the model does not know: left out
    Image.fromarray(_image("blank", rng)).save(batch / "diagonal" / "0.png")
    Image.fromarray(_image("blank", rng)).save(batch / "loose.png")  # no label: left out
    (batch / "blank" / "broken.png").write_text("not an image")  # skipped, not fatal
    out = tmp_path / "out"
    out.mkdir()
    summary = {"reference": str(splits / "train.parquet"), "output_dir": str(out), "batch": {"source": str(batch)}}
    overrides = image_retraining(load_config(["task=image_classification"]), summary)
    assert overrides is not None and overrides[0] == "data=images"
    assert "data.image_size=[16,16]" in overrides and "data.image_mode=L" in overrides
    table = pd.read_parquet(out / "retraining_data.parquet")
    assert len(table) == 36 + 15 and table["label"].value_counts().to_dict() == dict.fromkeys(SHAPES, 12 + 5)
    # Read in the champion's size and mode (every fifth batch image was 20 x 20 RGB), then through
    # prepare as images, decoded and checked again.
    from glasswork.data.images import decode

    assert {decode(b).shape for b in table["image"]} == {(16, 16)}
    cfg = load_config(["task=image_classification", "debug=fast", f"paths.root={tmp_path / 'run'}", *overrides])
    for name in ("ingest", "prepare"):
        get(name).function()(cfg)
    report = read_json(tmp_path / "run" / DATA / "report.json")
    assert report["rows_read"] == 51 and report["image_size"] == [16, 16]
    assert report["images_changed"] == {}
    assert report["rows_kept"] + report["dropped_duplicates"] + report["dropped_conflicting_labels"] == 51


def test_an_image_table_row_that_is_not_an_image_is_named(tmp_path, capsys):
    bad = tmp_path / "images.parquet"
    pd.DataFrame({"image": [b"\x89PNG not really", b"also not"], "label": ["a", "b"]}).to_parquet(bad)
    overrides = ["task=image_classification", "data=images", f"data.path={bad}", "data.path_column=image"]
    assert main(["prepare", *overrides, f"paths.root={tmp_path}"]) == 2
    assert f"{bad}, row 0" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "artifacts").exists()
