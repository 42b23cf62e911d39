"""All-or-nothing outputs: the swap never leaves the target missing, a killed process's leftovers
are swept at the next start, and a download cut short never passes for the file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glasswork import outputs
from glasswork.outputs import atomic_dir, fetch_file, sweep


def test_the_target_is_never_missing_while_it_is_replaced(tmp_path, monkeypatch):
    target = tmp_path / "evaluate"
    with atomic_dir(target) as out:
        (out / "metrics.json").write_text("1")
    seen = []
    real_replace, real_exchange = os.replace, outputs.exchange

    def watched(fn):
        def call(*args):
            result = fn(*args)
            seen.append(target.is_dir())  # after each rename of the swap
            return result

        return call

    monkeypatch.setattr(outputs.os, "replace", watched(real_replace))
    monkeypatch.setattr(outputs, "exchange", watched(real_exchange))
    with atomic_dir(target) as out:
        (out / "metrics.json").write_text("2")
    assert seen and all(seen)
    assert (target / "metrics.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluate"]


def test_a_failed_block_leaves_the_previous_output(tmp_path):
    target = tmp_path / "explain"
    with atomic_dir(target) as out:
        (out / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as out:
        (out / "a").write_text("half")
        raise RuntimeError("step failed")
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["explain"]


def test_leftovers_of_a_killed_process_are_swept_at_the_next_start(tmp_path):
    # A process that is gone for sure: it ran and was reaped.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = dead.stdout.strip()
    target = tmp_path / "train"
    stale = [tmp_path / f".train.staging-{gone}-0123abcd", tmp_path / f".train.old-{gone}-89abcdef"]
    legacy = tmp_path / ".train.staging-fedcba98"  # named before names carried the process id
    alive = tmp_path / f".train.staging-{os.getppid()}-00000000"  # a step still running elsewhere
    other = tmp_path / f".evaluate.staging-{gone}-0123abcd"  # another step's: not this one's to sweep
    for folder in [*stale, legacy, alive, other]:
        (folder / "model").mkdir(parents=True)
    with atomic_dir(target) as out:
        (out / "x").write_text("1")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([alive.name, other.name, "train"])
    assert sweep(tmp_path / "evaluate") == [other]


def test_a_download_cut_short_leaves_no_file(tmp_path):
    target = tmp_path / "cache" / "run" / "config" / "resolved.yaml"

    def broken(folder):
        (tmp_path / "cache" / "run" / "config").joinpath("partial").write_text("half")  # elsewhere: kept
        half = os.path.join(folder, "resolved.yaml")
        with open(half, "w") as f:
            f.write("paths: {root: /x")
        raise ConnectionError("connection reset")

    with pytest.raises(ConnectionError):
        fetch_file(target, broken)
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["partial"]

    def good(folder):
        path = os.path.join(folder, "resolved.yaml")
        with open(path, "w") as f:
            f.write("paths: {root: /x}\n")
        return path

    assert fetch_file(target, good).read_text() == "paths: {root: /x}\n"
