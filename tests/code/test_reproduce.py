"""`glasswork reproduce`: a registered tiny model rebuilt from its lineage tags, and the lineage
problems it must name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import REPO, tiny_overrides

from glasswork.cli import main

URI = "models:/glasswork-sentiment@champion"


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
    root, cfg = tiny_run
    client = _client(cfg)
    version = client.get_model_version_by_alias("glasswork-sentiment", "champion")
    clone, recorded = _clone_one_commit_ahead(tmp_path)
    client.set_model_version_tag("glasswork-sentiment", version.version, "glasswork.git_commit", recorded)
    monkeypatch.chdir(clone)  # `reproduce` rebuilds with the repository it is run from
    assert main(["reproduce", URI, *tiny_overrides(root)]) == 0
    out = capsys.readouterr().out
    assert "reproduced within 0.01" in out and "accuracy" in out
    result = json.loads(
        (root / "artifacts" / "reproduce" / "glasswork-sentiment-champion" / "reproduction.json").read_text()
    )
    assert result["reproduced"] and result["source_run_id"] == version.run_id
    assert result["rebuilt_run_id"] != version.run_id
    assert {"accuracy", "macro_f1"} <= set(result["metrics"])
    run = client.get_run(result["rebuilt_run_id"])
    assert run.data.tags["glasswork.reproduces"] == f"glasswork-sentiment v{version.version}"
    assert "reproduce/accuracy_abs_diff" in run.data.metrics
    # Built with the recorded commit's code, checked out as a worktree of the clone.
    workdir = root / "artifacts" / "reproduce" / "glasswork-sentiment-champion"
    worktree = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir / "code", capture_output=True, text=True)
    assert result["git_commit"] == recorded == worktree.stdout.strip()
    # The original run's outputs were not touched: the rebuild worked in its own folder.
    assert (root / "artifacts" / "train" / "run.json").read_text().find(version.run_id) >= 0


@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        ("glasswork.git_commit", "0" * 40, ["glasswork.git_commit=" + "0" * 40, "does not have", "git fetch"]),
        ("glasswork.data_md5", "f" * 32, ["could not be rebuilt", "dvc checkout"]),
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


def test_a_malformed_model_uri_is_refused(tiny_run, capsys):
    root, _ = tiny_run
    assert main(["reproduce", "glasswork-sentiment@champion", *tiny_overrides(root)]) == 2
    assert "expected models:/NAME@ALIAS or models:/NAME/VERSION" in capsys.readouterr().err
