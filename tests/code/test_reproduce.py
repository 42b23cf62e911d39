"""`glasswork reproduce`: a registered tiny model rebuilt from its lineage tags, and the lineage
problems it must name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tests.conftest import REPO, tiny_overrides

from glasswork import tracking
from glasswork.cli import main
from glasswork.config import recorded_config
from glasswork.errors import LineageError

NAME = "glasswork-sentiment"
URI = f"models:/{NAME}@champion"


def _client(cfg) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)


def _clone_one_commit_ahead(tmp_path: Path) -> tuple[Path, str]:
    """A clone of this repository with one more commit on top: the version's recorded commit is
    then an older one, rebuilt from a git worktree of it. Returns the clone and its old HEAD."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    old = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "later work"],
        cwd=clone, check=True,
    )  # fmt: skip
    return clone, old


@pytest.mark.slow
def test_the_tiny_champion_is_rebuilt_from_its_commit_into_a_new_run_within_tolerance(
    tiny_run, capsys, tmp_path, monkeypatch
):
    """Run as a user runs it: from the checkout, with the default relative store
    (sqlite:///./mlflow.db). The rebuild works in its own folder, yet logs into that store."""
    root, cfg = tiny_run
    clone, recorded = _clone_one_commit_ahead(tmp_path)
    shutil.copy(root / "mlflow.db", clone / "mlflow.db")  # the user's store, in their checkout
    store = "sqlite:///./mlflow.db"
    monkeypatch.chdir(clone)  # `reproduce` rebuilds with the repository it is run from
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("glasswork-sentiment", "champion")
    client.set_model_version_tag("glasswork-sentiment", version.version, "glasswork.git_commit", recorded)
    monkeypatch.delenv("GLASSWORK_ROOT", raising=False)
    assert main(["reproduce", URI, "debug=fast", f"tracking.uri={store}"]) == 0
    out = capsys.readouterr().out
    assert "reproduced within 0.01" in out and "accuracy" in out
    workdir = clone / "artifacts" / "reproduce" / "glasswork-sentiment-champion"
    result = json.loads((workdir / "reproduction.json").read_text())
    assert result["reproduced"] and result["source_run_id"] == version.run_id
    assert result["rebuilt_run_id"] != version.run_id
    assert {"accuracy", "macro_f1"} <= set(result["metrics"])
    run = client.get_run(result["rebuilt_run_id"])  # in the user's store
    assert run.data.tags["glasswork.reproduces"] == f"glasswork-sentiment v{version.version}"
    assert "reproduce/accuracy_abs_diff" in run.data.metrics
    assert not list(workdir.rglob("mlflow.db"))  # no second store in the rebuild's folder
    # Built with the recorded commit's code, checked out as a worktree of the clone.
    worktree = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir / "code", capture_output=True, text=True)
    assert result["git_commit"] == recorded == worktree.stdout.strip()
    # The original run's outputs were not touched: the rebuild worked in its own folder.
    assert (root / "artifacts" / "train" / "run.json").read_text().find(version.run_id) >= 0


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        ("glasswork.git_commit", "0" * 40, ["glasswork.git_commit=" + "0" * 40, "does not have", "git fetch"]),
        ("glasswork.data_md5", "f" * 32, ["could not be rebuilt", "dvc checkout"]),
        ("glasswork.config", "- a\n- list\n", ["glasswork-sentiment v1: its recorded config is a ListConfig"]),
        ("glasswork.config", "paths: [unclosed", ["glasswork-sentiment v1: its recorded config is not YAML"]),
        (
            "glasswork.config",
            "paths:\n  root: ${oc.env:HOME}\n",
            ["v1: its recorded config sets paths.root", "interpolation"],
        ),
    ],
)
def test_a_lineage_tag_pointing_at_something_missing_is_named(tiny_run, capsys, tag, value, words):
    root, cfg = tiny_run
    client = _client(cfg)
    version = client.get_model_version_by_alias("glasswork-sentiment", "champion")
    client.set_model_version_tag("glasswork-sentiment", version.version, tag, value)
    experiment = client.get_run(version.run_id).info.experiment_id
    runs_before = len(client.search_runs([experiment]))
    assert main(["reproduce", URI, *tiny_overrides(root)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    # Nothing was trained: no new run in the experiment.
    assert len(client.search_runs([experiment])) == runs_before


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_a_malformed_model_uri_is_refused(tiny_run, capsys):
    root, _ = tiny_run
    assert main(["reproduce", "glasswork-sentiment@champion", *tiny_overrides(root)]) == 2
    assert "expected models:/NAME@ALIAS or models:/NAME/VERSION" in capsys.readouterr().err


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_a_config_too_long_for_a_tag_is_read_from_the_versions_run(tiny_run, tmp_path):
    _, cfg = tiny_run
    client = _client(cfg)
    version = client.get_model_version_by_alias(NAME, "champion")
    tagged = OmegaConf.create(version.tags["glasswork.config"])
    assert tracking.config_tag("x" * (tracking.CONFIG_TAG_MAX + 1)) == tracking.CONFIG_POINTER
    client.set_model_version_tag(NAME, version.version, "glasswork.config", tracking.CONFIG_POINTER)
    pointed = client.get_model_version(NAME, version.version)
    read = recorded_config(tracking.recorded_config_text(client, pointed, tmp_path / "cache"), "v")
    assert read.paths.root == tagged.paths.root
    assert read.model == tagged.model and read.data == tagged.data


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_a_version_whose_config_is_nowhere_is_named(tiny_run, tmp_path):
    _, cfg = tiny_run
    client = _client(cfg)
    version = client.get_model_version_by_alias(NAME, "champion")
    # A version that points at its run for the config, and a run that never logged one.
    bare_run = client.create_run(client.get_run(version.run_id).info.experiment_id).info.run_id
    orphan = ModelVersion(
        NAME, version.version, 0, run_id=bare_run, tags=[ModelVersionTag("glasswork.config", tracking.CONFIG_POINTER)]
    )
    with pytest.raises(
        LineageError, match=rf"{NAME} v{version.version}: no recorded config.*{tracking.CONFIG_ARTIFACT}"
    ):
        tracking.recorded_config_text(client, orphan, tmp_path / "cache")
    assert not (tmp_path / "cache" / tracking.CONFIG_ARTIFACT).exists()


@pytest.mark.parametrize(
    ("task", "data", "moves"),
    [
        ("image_classification", "data=fashion_mnist", True),  # written by ingest: rebuilt afresh
        ("image_classification", "data=images", False),  # the user's folder: read where it lies
        ("text_classification", "data=table", False),
        ("tabular_classification", "data=fair", True),
    ],
)
def test_the_rebuild_reads_a_users_own_data_where_it_lies(tmp_path, task, data, moves):
    # Found by reproducing an image model trained on a folder inside the checkout: the folder
    # "moved" with the work folder, and the rebuild looked for images that were never there.
    from glasswork.config import load_config, to_yaml
    from glasswork.reproduce import rebuild_config

    extra = {"data=images": ["data.path=PLACE/imgs"], "data=table": ["data.path=PLACE/my.csv",
             "data.text_column=t", "data.label_column=y"]}.get(data, [])  # fmt: skip
    recorded = load_config(
        [f"task={task}", data, f"paths.root={tmp_path}", *[e.replace("PLACE", str(tmp_path)) for e in extra]]
    )
    new_root = tmp_path / "rebuild"
    cfg = rebuild_config(to_yaml(recorded), "v1", new_root, "sqlite:///x.db", "", "r")
    assert cfg.paths.raw_dir == str(new_root / "data" / "raw")
    expected = recorded.data.path.replace(str(tmp_path), str(new_root)) if moves else recorded.data.path
    assert cfg.data.path == expected and (cfg.data.path != recorded.data.path) == moves
