"""``glasswork reproduce models:/NAME@ALIAS``: rebuild a registered model from its lineage tags
(git commit, data version, resolved config) into a new MLflow run, and say how far its test
metrics land from the original's.

The rebuild runs ingest → prepare → train → evaluate in a fresh folder, with the code of the
recorded commit (a ``git worktree`` when it is not the checked-out one), and stops before
training when the data it prepares is not the recorded data version.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from glasswork import tracking
from glasswork.config import check_config, recorded_config, to_yaml
from glasswork.errors import ConfigError, DataError, GlassworkError, LineageError
from glasswork.outputs import read_json, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
NEEDED = ("glasswork.git_commit", "glasswork.data_md5", "glasswork.config")
REBUILD_STEPS = ("ingest", "prepare", "train", "evaluate")


def find_version(client: MlflowClient, uri: str):
    """The model version named by ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = URI.match(uri)
    if not match:
        raise ConfigError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name = match["name"]
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(name, match["alias"])
        return client.get_model_version(name, match["version"])
    except MlflowException as err:
        raise LineageError(f"{uri}: not in the registry at {client._registry_uri} ({err.message})") from None


def commit_exists(sha: str, repo: Path) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=repo, capture_output=True)
    return done.returncode == 0


def head_commit(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def rebuild_config(text: str, label: str, new_root: Path, tracking_uri: str, artifact_root: str, run_name: str):
    """The recorded config ``text`` rebased on ``new_root``, tracking pointed at the registry the
    model was found in.

    Every folder a step writes is computed afresh under ``new_root``, whatever the recorded config
    says, so a tag naming a folder outside it cannot make the rebuild write or delete there; other
    paths under the recorded root (the data file ingest writes) move with it, except the user's
    own data (a table or a folder of images), which is read where it lies.
    """
    from glasswork.data.sources import READ_IN_PLACE

    recorded = recorded_config(text, label)
    old_root = str(OmegaConf.select(recorded, "paths.root", default="") or "").rstrip("/")
    plain = _rebased(OmegaConf.to_container(recorded), old_root, str(new_root)) if old_root else recorded
    cfg = OmegaConf.create(plain)
    if OmegaConf.select(recorded, "data.source") in READ_IN_PLACE:
        cfg.data.path = recorded.data.path
    cfg.paths = {name: str(new_root / where) if where else str(new_root) for name, where in WRITTEN.items()}
    if OmegaConf.select(cfg, "monitor") is not None:
        cfg.monitor.output_dir = str(new_root / "artifacts" / "monitor")
    cfg.tracking.uri, cfg.tracking.artifact_root, cfg.tracking.run_name = tracking_uri, artifact_root, run_name
    return check_config(cfg)


# The folders steps write into (conf/paths/default.yaml), as the rebuild sets them.
WRITTEN = {"root": "", "raw_dir": "data/raw", "processed_dir": "data/processed", "artifacts_dir": "artifacts"}


def _rebased(tree, old_root: str, new_root: str):
    """``tree`` with every string that is a path under ``old_root`` moved under ``new_root``."""
    if isinstance(tree, dict):
        return {key: _rebased(value, old_root, new_root) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_rebased(value, old_root, new_root) for value in tree]
    if isinstance(tree, str) and tree.startswith(old_root + "/"):
        return new_root + tree[len(old_root) :]
    return tree


def compare(original: dict[str, float], rebuilt: dict[str, float], tolerance: float) -> dict:
    """Per recorded test metric: original, rebuilt, absolute difference, and whether within tolerance."""
    rows = {}
    for key, value in original.items():
        if key in rebuilt:
            diff = abs(rebuilt[key] - value)
            rows[key] = {"original": value, "rebuilt": rebuilt[key], "abs_diff": diff, "within": diff <= tolerance}
    return {
        "tolerance": tolerance,
        "metrics": rows,
        "reproduced": bool(rows) and all(r["within"] for r in rows.values()),
    }


def reproduce(uri: str, tracking_uri: str, artifact_root: str, workdir: Path, tolerance: float, repo: Path) -> dict:
    """Rebuild the model version ``uri`` in ``workdir``; return the comparison (also written to
    ``workdir/reproduction.json`` and logged to the new run)."""
    # The rebuild's steps run in their own folder: a relative store there would be another one.
    tracking_uri, artifact_root = tracking.absolute(tracking_uri), tracking.absolute(artifact_root or "")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = find_version(client, uri)
    label = f"{version.name} v{version.version}"
    tags = version.tags
    missing = [t for t in NEEDED if t not in tags]
    if missing:
        raise LineageError(f"{label} has no lineage tag(s) {missing}: it was not registered by `glasswork register`")
    commit, dirty = tags["glasswork.git_commit"].removesuffix("-dirty"), tags["glasswork.git_commit"].endswith("-dirty")
    if commit == "unknown" or not commit_exists(commit, repo):
        raise LineageError(
            f"{label}: lineage tag glasswork.git_commit={tags['glasswork.git_commit']} names a commit this "
            f"repository ({repo}) does not have: `git fetch` it first"
        )
    # Read before anything is written: a bad config tag leaves no half-made work folder.
    with tempfile.TemporaryDirectory() as tmp:
        config_text = tracking.recorded_config_text(client, version, Path(tmp))
    cfg = rebuild_config(config_text, label, workdir / "run", tracking_uri, artifact_root, f"reproduce {label}")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    code = repo / "src"
    if commit != head_commit(repo):
        code = workdir / "code"
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(code), commit], cwd=repo, check=True, capture_output=True
        )
        code = code / "src"
    if dirty:
        log.warning(
            "%s was built from uncommitted changes to %s: rebuilding with that commit's code", label, commit[:12]
        )
    frozen = workdir / "config.yaml"
    frozen.write_text(to_yaml(cfg), encoding="utf-8")
    _run_steps(code, frozen, ("ingest", "prepare"))
    rebuilt_md5 = _data_md5(code, frozen)
    if rebuilt_md5 != tags["glasswork.data_md5"]:
        raise LineageError(
            f"{label}: its data version (glasswork.data_md5={tags['glasswork.data_md5']}) could not be rebuilt: "
            f"prepare gave {rebuilt_md5} from {cfg.data.path}. Restore that data (e.g. `git checkout {commit[:12]} "
            "-- dvc.lock && dvc checkout`) and run again"
        )
    _run_steps(code, frozen, ("train", "evaluate"))
    original = {k.removeprefix("glasswork.test."): float(v) for k, v in tags.items() if k.startswith("glasswork.test.")}
    rebuilt = read_json(output(cfg, "evaluate", "metrics.json"))["test"]
    result = compare(original, {k: float(v) for k, v in rebuilt.items() if isinstance(v, int | float)}, tolerance)
    run_id = read_json(output(cfg, "train", "run.json"))["run_id"]
    result |= {"model": label, "source_run_id": version.run_id, "rebuilt_run_id": run_id, "git_commit": commit}
    client.set_tag(run_id, "glasswork.reproduces", label)
    client.set_tag(run_id, "glasswork.reproduced", str(result["reproduced"]).lower())
    for key, row in result["metrics"].items():
        client.log_metric(run_id, f"reproduce/{key}_abs_diff", row["abs_diff"])
    write_json(workdir / "reproduction.json", result)
    return result


def _env(code: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("GLASSWORK_ROOT", None)
    return env


def _run_steps(code: Path, frozen: Path, steps: tuple[str, ...]) -> None:
    """Run steps with the recorded commit's code, in one fresh interpreter."""
    script = (
        "import sys; from glasswork.config import load_frozen; from glasswork.steps import get; "
        f"cfg = load_frozen({str(frozen)!r}); "
        f"[get(name).function()(cfg) for name in {list(steps)!r}]"
    )
    done = subprocess.run([sys.executable, "-c", script], env=_env(code), cwd=frozen.parent)
    if done.returncode:
        raise GlassworkError(f"rebuilding {', '.join(steps)} failed (exit {done.returncode}); see the log above")


def _data_md5(code: Path, frozen: Path) -> str:
    script = (
        "from glasswork.config import load_frozen; from glasswork.data.prepare import data_md5; "
        f"print(data_md5(load_frozen({str(frozen)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", script], env=_env(code), capture_output=True, text=True)
    if done.returncode:
        raise DataError(f"could not fingerprint the rebuilt data: {done.stderr.strip()[-300:]}")
    return done.stdout.strip().splitlines()[-1]
