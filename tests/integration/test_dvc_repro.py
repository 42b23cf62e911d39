"""`dvc repro` in a real git repo: runs every stage, then nothing, then only what a param touches;
then a teammate's clone gets every output from a DVC remote and has nothing left to run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    env.pop("GLASSWORK_ROOT", None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _repo(tmp_path: Path) -> Path:
    """A git and DVC repository holding a copy of the sources (the stages' code deps)."""
    repo = tmp_path / "clone"
    repo.mkdir()
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _sh(["git", "init", "-q"], repo)
    _sh(["dvc", "init", "-q"], repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_twice_then_only_the_register_stage_then_a_teammate_pulls(tmp_path):
    repo = _repo(tmp_path)
    _sh(["glasswork", "dvc-sync", "debug=fast"], repo)  # the tiny config, frozen into params.yaml
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "pipeline"], repo)

    first = _sh(["dvc", "repro"], repo)
    for stage in ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register"):
        assert f"Running stage '{stage}'" in first, stage
    assert (repo / "dvc.lock").is_file()
    metrics = _sh(["dvc", "metrics", "show"], repo)
    assert "test.accuracy" in metrics

    second = _sh(["dvc", "repro"], repo)
    assert "Running stage" not in second and "up to date" in second

    # A registry setting touches the register stage alone (the last: nothing reads its output);
    # it costs a third of re-running drift.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["registry"]["thresholds"]["accuracy"] = 0.01
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _sh(["dvc", "repro"], repo)
    ran = [line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage")]
    assert ran == ["register"], third

    # The team's way to share results: commit the lock file and the metrics, push the outputs to a
    # DVC remote (a folder here; s3:// or ssh:// for a team), and a teammate clones and pulls them.
    _sh(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "results"], repo)
    _sh(["dvc", "push"], repo)
    mate = tmp_path / "teammate"
    _sh(["git", "clone", "-q", str(repo), str(mate)], tmp_path)
    assert not (mate / "artifacts" / "train" / "model").exists()  # outputs are not in git
    _sh(["dvc", "pull"], mate)
    for out in ("artifacts/train/model/config.json", "artifacts/evaluate/predictions.csv", "data/processed"):
        assert (mate / out).exists(), out
    assert (mate / "artifacts/evaluate/predictions.csv").read_bytes() == (
        repo / "artifacts/evaluate/predictions.csv"
    ).read_bytes()
    status = _sh(["dvc", "status"], mate)
    assert "up to date" in status, status  # nothing to re-run: the teammate has what the lock file names


@pytest.mark.slow  # dvc repro: the pipeline's stages as processes
def test_the_image_pipeline_is_a_dvc_pipeline_of_its_own(tmp_path):
    # `glasswork dvc-sync task=image_classification` writes dvc/image_classification/; DVC reads it
    # (every stage run from the repository root, its params in its own file, each declared key
    # present: DVC refuses a missing one) and its outputs lie in the image task's own folders.
    # `dvc repro` of it was run by hand (the closing note of issue 23): a real run costs minutes.
    repo = _repo(tmp_path)
    _sh(["glasswork", "dvc-sync", "task=image_classification"], repo)
    assert not (repo / "dvc.yaml").exists()  # the text task's pipeline is left alone
    pipeline = "dvc/image_classification/dvc.yaml"
    dag = _sh(["dvc", "dag", pipeline, "--dot"], repo)
    for stage in ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register"):
        assert f'"{pipeline}:{stage}"' in dag, stage
    assert f'"{pipeline}:prepare" -> "{pipeline}:train"' in dag
    status = _sh(["dvc", "status", pipeline], repo)
    assert "deleted:            data/image_classification/raw/fashion_mnist.parquet" in status
    assert "artifacts/image_classification/explain/heatmaps.png" in status
    assert "tweets" not in status and "global_importance.png" not in status  # the text task's files
    # The image explain step's own reference for explanation drift, which its drift stage reads.
    assert "artifacts/image_classification/explain/global_importance.json" in status
    stages = yaml.safe_load((repo / pipeline).read_text())["stages"]
    assert stages["prepare"]["params"] == [
        {"dvc/image_classification/params.yaml": ["task", "data", "seed", "model.dir"]}
    ]  # no model.max_length: the CNN has none, and explain.n_probe no longer retrains; model.dir
    # (the text task's tokenizer folder) is an image backbone's folder here: prepare re-runs, cheaply
    assert all(stage["wdir"] == "../.." for stage in stages.values())


@pytest.mark.slow  # dvc repro: the pipeline's stages as processes
def test_the_tabular_pipeline_is_a_dvc_pipeline_of_its_own(tmp_path):
    # As the image task's: `glasswork dvc-sync task=tabular_classification` writes its own folder,
    # which DVC reads; its outputs are the tabular task's (not the text task's embedding map).
    repo = _repo(tmp_path)
    _sh(["glasswork", "dvc-sync", "task=tabular_classification"], repo)
    pipeline = "dvc/tabular_classification/dvc.yaml"
    dag = _sh(["dvc", "dag", pipeline, "--dot"], repo)
    for stage in ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register"):
        assert f'"{pipeline}:{stage}"' in dag, stage
    status = _sh(["dvc", "status", pipeline], repo)
    assert "deleted:            data/tabular_classification/raw/fair.parquet" in status
    assert "artifacts/tabular_classification/explain/dependence.png" in status
    assert "explain/embeddings.html" not in status and "tweets" not in status
