"""A training run killed mid-epoch resumes from its newest checkpoint, in the same MLflow run,
and the pipeline then registers one version, not two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import REPO, TWO_CPU_PROCESSES, tiny_overrides

from glasswork.config import load_config
from glasswork.errors import Interrupted
from glasswork.interrupt import interruptible
from glasswork.outputs import read_json
from glasswork.steps import get
from glasswork.train import checkpoint_step

# ~15 batches per epoch on the tiny data: 6 epochs is long enough to be killed part-way (the
# first checkpoint comes at step 5 of 90).
EPOCHS = 6
FSDP_EPOCHS = 3
LONG = (f"trainer.max_epochs={EPOCHS}", "trainer.limit_train_batches=1.0", "trainer.checkpoint_every_n_steps=5")


def _kill_once_checkpointed(root, overrides, timeout=300) -> int:
    """Start `glasswork train` in its own process, SIGKILL it once it has a mid-run checkpoint,
    and return the step of that checkpoint."""
    last = root / "artifacts" / ".train.partial" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "GLASSWORK_ROOT": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glasswork", "train", *overrides], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not last.is_file():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint file be complete
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return checkpoint_step(last)


@pytest.mark.slow  # training in a child process, killed and resumed
def test_a_killed_training_run_resumes_and_registers_once(tmp_path):
    overrides = tiny_overrides(tmp_path, *LONG)
    cfg = load_config(overrides)
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    killed_at = _kill_once_checkpointed(tmp_path, overrides)
    assert killed_at > 0
    partial = tmp_path / "artifacts" / ".train.partial"
    run_id = read_json(partial / "resume.json")["run_id"]
    assert not (tmp_path / "artifacts" / "train").exists()  # nothing half-written where outputs go

    result = get("train").function()(cfg)
    assert result["run_id"] == run_id
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    run = client.get_run(run_id)
    assert int(run.data.tags["glasswork.train.resumed_from_step"]) >= killed_at
    assert result["train/steps"] == EPOCHS * 15  # the whole schedule, not restarted on top
    assert not partial.exists() and (tmp_path / "artifacts" / "train" / "checkpoints").is_dir()
    for step in ("evaluate", "explain", "register"):  # what register reads
        get(step).function()(cfg)
    versions = client.search_model_versions(f"name='{cfg.registry.model_name}'")
    assert [v.run_id for v in versions] == [run_id]
    experiment = run.info.experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]


@pytest.mark.slow  # training in a child process, killed and resumed
def test_ctrl_c_stops_training_with_130_a_killed_run_and_its_checkpoints_kept(tmp_path):
    overrides = tiny_overrides(tmp_path, *LONG)
    cfg = load_config(overrides)
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    last = tmp_path / "artifacts" / ".train.partial" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glasswork", "train", *overrides], cwd=REPO,
        env={**os.environ, "GLASSWORK_ROOT": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not last.is_file():
        assert proc.poll() is None, "training ended before Ctrl-C"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("glasswork train: interrupted (Ctrl-C): checkpoints kept in")
    run_id = read_json(tmp_path / "artifacts" / ".train.partial" / "resume.json")["run_id"]
    run = MlflowClient(cfg.tracking.uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["glasswork.train.status"] == "interrupted"
    assert last.is_file() and checkpoint_step(last) > 0  # kept for resume
    assert not (tmp_path / "artifacts" / "train").exists()
    assert [p.name for p in (tmp_path / "artifacts").iterdir() if p.name.startswith(".train.")] == [".train.partial"]


def test_a_second_ctrl_c_is_not_swallowed():
    """The first Ctrl-C in training raises Interrupted (Lightning passes it on); a second one, in
    whatever cleanup follows, is a KeyboardInterrupt again (Lightning would have ignored it)."""
    # Python's own handler, as in a terminal: whatever an earlier test in this pytest worker left
    # (the test failed once in a full run, in a worker that had run other tests first).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                with interruptible("resume later"):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the handler raises before this ends
            except Interrupted as first:
                assert str(first) == "resume later"
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.slow  # training in a child process, killed and resumed
def test_a_different_config_does_not_resume_a_stale_checkpoint(tmp_path):
    overrides = tiny_overrides(tmp_path, *LONG)
    cfg = load_config(overrides)
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    _kill_once_checkpointed(tmp_path, overrides)
    stale = read_json(tmp_path / "artifacts" / ".train.partial" / "resume.json")["run_id"]
    changed = load_config(tiny_overrides(tmp_path, "trainer.max_epochs=1", "trainer.checkpoint_every_n_steps=5"))
    result = get("train").function()(changed)
    assert result["run_id"] != stale
    assert MlflowClient(changed.tracking.uri).get_run(stale).info.status == "KILLED"  # not left RUNNING
    assert (
        "glasswork.train.resumed_from_step"
        not in MlflowClient(changed.tracking.uri).get_run(result["run_id"]).data.tags
    )


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_from_its_whole_model_checkpoint(tmp_path):
    # trainer=fsdp on two CPU processes: the checkpoint holds the whole model (gathered on rank 0)
    # and each rank takes its shards of it, and of AdamW's state, back when the run resumes.
    # Three epochs, not six: two processes of gloo cost a minute more per three epochs on 2 cores,
    # and the first checkpoint (step 5 of 21) still leaves most of the run to resume.
    fsdp = ("trainer=fsdp", *TWO_CPU_PROCESSES, "trainer.checkpoint_every_minutes=null")
    overrides = tiny_overrides(tmp_path, *LONG, *fsdp, f"trainer.max_epochs={FSDP_EPOCHS}")
    cfg = load_config(overrides)
    for step in ("ingest", "prepare"):
        get(step).function()(cfg)
    killed_at = _kill_once_checkpointed(tmp_path, overrides)
    assert killed_at > 0
    run_id = read_json(tmp_path / "artifacts" / ".train.partial" / "resume.json")["run_id"]
    result = get("train").function()(cfg)
    assert result["run_id"] == run_id
    tags = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run_id).data.tags
    assert int(tags["glasswork.train.resumed_from_step"]) >= killed_at
    # 15 batches an epoch shared by 2 ranks. trainer=gpu's length buckets deal whole batches and
    # leave the odd one out (Lightning's DistributedSampler would pad to 8 each): 7 each.
    assert result["train/steps"] == FSDP_EPOCHS * 7


def test_a_ctrl_c_inside_a_database_write_waits_for_the_write():
    # Raising inside an SQLite write leaves the lock held and the run could not be marked KILLED:
    # the handler defers a Ctrl-C that lands in sqlalchemy/sqlite3/MLflow's store code.
    from glasswork.interrupt import _in_database_call

    namespace = {"__name__": "sqlalchemy.engine.fake", "sys": sys}
    exec("def write(inner):\n    return inner()", namespace)  # a frame of a database module
    assert namespace["write"](lambda: _in_database_call(sys._getframe()))
    assert not _in_database_call(sys._getframe())
