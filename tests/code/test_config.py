"""Config composition, checking, and the two derived files (params.yaml, dvc.yaml)."""

from __future__ import annotations

import ast

import pytest
from tests.conftest import REPO, tiny_overrides

from glasswork import tasks
from glasswork.cli import main
from glasswork.config import load_config
from glasswork.dvc_files import render_files
from glasswork.errors import ConfigError
from glasswork.steps import STEP_NAMES


def test_default_config_composes_the_documented_defaults():
    cfg = load_config([])
    assert (cfg.data.name, cfg.model.name, cfg.trainer.accelerator) == ("rotten_tomatoes", "minilm", "cpu")
    assert cfg.registry.model_name == "glasswork-sentiment"
    assert cfg.tracking.uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("override", "named", "hint"),
    [
        ("data.foo=1", "data.foo", "Valid keys of data"),
        ("+data.foo=1", "data.foo", "Valid keys of data"),
        ("trainer.max_epoch=2", "trainer.max_epoch", "Did you mean trainer.max_epochs?"),
        ("model.lrr=0.1", "model.lrr", "Did you mean model.lr?"),
        ("trainer.max_epochs=abc", "trainer.max_epochs", "could not be converted"),
        ("model=minilmm", "model/minilmm", "Available options in 'model'"),
    ],
)
def test_bad_setting_is_named_with_what_is_valid(override, named, hint):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert named in str(err.value) and hint in str(err.value)


def test_table_data_requires_its_path():
    with pytest.raises(ConfigError, match=r"data.path is required"):
        load_config(["data=table"])


def test_cli_prints_config_errors_without_traceback(capsys):
    assert main(["prepare", "trainer.max_epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting trainer.max_epoch" in err and "Traceback" not in err


def test_help_lists_every_step(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("run", *STEP_NAMES):
        assert f"    {name}" in out
    # every option of every config group, as conf/ has them (trainer=cpu|ddp|gpu, ...)
    listed = " ".join(out.split())
    for group in (p for p in (REPO / "conf").iterdir() if p.is_dir()):
        options = "|".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"{group.name}={options}" in listed, group.name


@pytest.mark.parametrize("task", ["text_classification", "image_classification"])
def test_committed_params_and_dvc_yaml_are_what_conf_and_steps_generate(monkeypatch, task):
    monkeypatch.delenv("GLASSWORK_ROOT", raising=False)
    files = render_files(load_config([f"task={task}"]), REPO)
    assert set(files) == ({"params.yaml", "dvc.yaml"} if task == "text_classification" else {
        "dvc/image_classification/params.yaml", "dvc/image_classification/dvc.yaml",
    })  # fmt: skip
    for name, text in files.items():
        assert (REPO / name).read_text() == text, f"{name} is stale: run `make dvc-sync` and commit it"


def test_flow_calls_one_task_per_step_in_the_declared_order():
    tree = ast.parse((REPO / "pipelines" / "training.py").read_text())
    flow = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "training")
    calls = sorted(
        (c for c in ast.walk(flow) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)),
        key=lambda c: (c.lineno, c.col_offset),
    )
    called = [c.func.id for c in calls]
    assert [c for c in called if c in STEP_NAMES] == list(STEP_NAMES)


def test_every_dvc_stage_calls_its_cli_step_on_the_frozen_config():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STEP_NAMES)
    for name, stage in stages.items():
        assert stage["cmd"] == f"glasswork {name} --config params.yaml"


def test_the_peak_learning_rate_goes_with_the_trainers_batch(tmp_path):
    # trainer=gpu: batches of 1024 by length at 8x model.lr, as measured (benchmarks/README.md);
    # the experiment that measured them on any trainer must not scale the rate twice.
    for overrides in (["trainer=gpu"], ["trainer=gpu", "experiment=large_batch"], ["experiment=large_batch"]):
        cfg = load_config(overrides)
        peak = cfg.model.lr * cfg.trainer.lr_scale
        assert (cfg.trainer.batch_size, cfg.trainer.bucket_by_length, peak) == (1024, True, pytest.approx(4e-4))
    assert load_config([]).trainer.lr_scale == 1.0
    cfg = load_config(tiny_overrides(tmp_path, "trainer.lr_scale=8"))
    module = tasks.build(cfg).module(cfg, num_labels=2)
    assert module.hparams.lr == pytest.approx(8 * cfg.model.lr)
