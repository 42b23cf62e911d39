"""A Hugging Face image classifier from a local folder (``model=pretrained_image model.dir=FOLDER``)
goes through the image task's steps exactly as the small CNN does: trained with a new head,
evaluated, explained (integrated gradients, Grad-CAM on its last stage, occlusion, the cascading
randomisation check over its stages), registered and served by the pyfunc from its own files
alone; and a folder or a setting it cannot work with is refused before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from tests.code.test_image_task import ART, SHAPES, write_image_folder
from transformers import BertConfig, ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.outputs import read_json
from glasswork.steps import get


def tiny_resnet(folder: Path, num_channels: int = 3) -> Path:
    """A random-init ResNet of two bottleneck stages (8 and 16 wide), as save_pretrained writes it:
    the shape of a pretrained folder, with a 2-class head of its own to be replaced."""
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_channels=num_channels)
    ResNetForImageClassification(config).save_pretrained(folder)
    return folder


def backbone_overrides(tmp_path: Path, data: Path, model: Path, *extra: str) -> list[str]:
    """As test_image_task's runs on a folder of 16 x 16 grey images, with the backbone as the model."""
    return [
        "task=image_classification",
        "debug=fast",
        f"paths.root={tmp_path}",
        "data=images",
        f"data.path={data}",
        "data.image_size=[16,16]",
        "data.image_mode=L",
        "data.max_rows=null",
        "trainer.limit_train_batches=1.0",
        "model=pretrained_image",
        f"model.dir={model}",
        *extra,
    ]


@pytest.mark.slow  # the image pipeline's steps, then served
def test_a_pretrained_backbone_goes_through_the_same_steps_and_is_served(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "imgs", per_class=30)
    model_dir = tiny_resnet(tmp_path / "resnet")
    cfg = load_config(backbone_overrides(tmp_path, folder, model_dir, "model.lr=3e-3", "trainer.max_epochs=5"))
    for name in ("ingest", "prepare", "train", "evaluate", "explain", "register"):
        get(name).function()(cfg)

    saved = tmp_path / f"{ART}/train/model"
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "PretrainedImageNet" and config["model_type"] == "resnet"
    assert len(config["id2label"]) == 3 and config["glasswork"]["in_channels"] == 1  # grey, repeated to 3
    assert {p.name for p in saved.iterdir()} >= {"model.safetensors", "preprocess.json", "labels.json"}
    metrics = read_json(tmp_path / f"{ART}/evaluate/metrics.json")["test"]
    assert metrics["n"] == 9 and metrics["accuracy"] >= 0.6, metrics  # 3 classes: chance is 1/3

    explained = tmp_path / f"{ART}/explain"
    quality = read_json(explained / "metrics.json")["explain"]
    for method in ("integrated_gradients", "grad_cam", "occlusion"):
        assert f"{method}/comprehensiveness_aopc" in quality and f"{method}/randomisation_passed" in quality
    # The cascade: the head, each of the two stages from the last, then the stem.
    assert "integrated_gradients/randomisation_spearman_4" in quality
    assert "integrated_gradients/randomisation_spearman_5" not in quality
    assert {p.name for p in explained.iterdir()} >= {"heatmaps.png", "randomisation.png", "embeddings.html"}
    assert read_json(tmp_path / f"{ART}/register/registration.json")["version"] == "1"

    # Served by the pyfunc from the files it carries alone (code_paths: cnn.py, image_backbone.py),
    # as where Glasswork is not installed; transformers among its requirements.
    uri = f"models:/{cfg.registry.model_name}@champion"
    mlflow.set_tracking_uri(cfg.tracking.uri)
    logged = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "logged")))
    assert {"cnn.py", "image_backbone.py"} <= {p.name for p in (logged / "code").iterdir()}
    assert "transformers==" in (logged / "requirements.txt").read_text()
    for module in ("glasswork.models.image_backbone", "glasswork.models.cnn"):
        monkeypatch.setitem(sys.modules, module, None)  # an import of it fails
    try:
        served = mlflow.pyfunc.load_model(uri)
        assert {Path(sys.modules[m].__file__).parent.name for m in ("image_backbone", "cnn")} == {"code"}
    finally:  # the pyfunc's own modules, not to be found by a later test
        sys.modules.pop("image_backbone", None)
        sys.modules.pop("cnn", None)
    predictions = pd.read_parquet(tmp_path / f"{ART}/evaluate/predictions.parquet")
    scored = served.predict(pd.DataFrame({"image": predictions["path"]}))
    columns = [f"prob_{name}" for name in sorted(SHAPES)]
    np.testing.assert_allclose(scored[columns].to_numpy(), predictions[columns].to_numpy(), atol=1e-5)
    assert (scored["label"] == predictions["predicted"]).all()


def test_model_dir_is_required():
    with pytest.raises(ConfigError, match=r"setting model.dir is required but not set"):
        load_config(["task=image_classification", "model=pretrained_image"])


def _bert(folder: Path) -> Path:
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(folder)
    return folder


def _vit(folder: Path) -> Path:
    """A ViT of 32 x 32 images: no feature map for Grad-CAM, and no other image size."""
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


def _no_weights(folder: Path) -> Path:
    tiny_resnet(folder)
    (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p / "nowhere", [], "model.dir={dir}: no such folder; expected a Hugging Face image classification"),
        (lambda p: p, [], "model.dir={dir}: no config.json in it; expected a Hugging Face image classification"),
        (
            _bert,
            [],
            "model.dir={dir}: config.json describes a 'bert' model (no architectures), not an image classifier",
        ),
        (_no_weights, [], "model.dir={dir}: no weights (model.safetensors or"),
        (
            _vit,
            ["explain.methods=[integrated_gradients]", "explain.sanity_methods=[]"],
            "data.image_size=[16, 16]: {dir} (vit) cannot take images of this size (ValueError: Input image size "
            "(16*16) doesn't match model (32*32).); its config.json says image_size=32",
        ),
        (
            _vit,
            ["data.image_size=[32,32]"],
            "grad_cam needs a convolutional feature map and {dir} (vit) has none: leave grad_cam out of "
            "explain.methods and explain.sanity_methods",
        ),
        (
            lambda p: tiny_resnet(p, num_channels=1),
            ["data.image_mode=RGB"],
            "data.image_mode gives 3-channel images but {dir} (resnet) takes 1-channel ones: set data.image_mode=L",
        ),
    ],
    ids=["missing", "no-config", "text-model", "no-weights", "image-size", "no-feature-map", "channels"],
)
def test_a_folder_or_setting_the_backbone_cannot_take_is_refused_before_anything_is_written(
    tmp_path, capsys, make, extra, message
):
    folder = write_image_folder(tmp_path / "imgs", per_class=6)
    (tmp_path / "model").mkdir()
    model_dir = make(tmp_path / "model")
    assert main(["run", *backbone_overrides(tmp_path, folder, model_dir, *extra)]) == 2
    assert message.format(dir=model_dir) in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()
