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


@pytest.mark.parametrize(
    "task", ["text_classification", "image_classification", "tabular_classification", "text_generation"]
)
def test_committed_params_and_dvc_yaml_are_what_conf_and_steps_generate(monkeypatch, task):
    monkeypatch.delenv("GLASSWORK_ROOT", raising=False)
    files = render_files(load_config([f"task={task}"]), REPO)
    folder = "" if task == "text_classification" else f"dvc/{task}/"
    assert set(files) == {f"{folder}params.yaml", f"{folder}dvc.yaml"}
    for name, text in files.items():
        assert (REPO / name).read_text() == text, f"{name} is stale: run `make dvc-sync` and commit it"


def test_a_step_reads_only_outputs_its_writer_declares(tmp_path):
    from glasswork.steps import output

    cfg = load_config([f"paths.root={tmp_path}"])
    assert output(cfg, "evaluate", "metrics.json") == tmp_path / "artifacts" / "evaluate" / "metrics.json"
    assert output(cfg, "explain") == tmp_path / "artifacts" / "explain"
    # Declared by another task only (the image task's explain writes heatmaps): still a path.
    assert output(cfg, "explain", "heatmaps.png").name == "heatmaps.png"
    with pytest.raises(KeyError, match="evaluate/scores.json is not an output the evaluate step declares"):
        output(cfg, "evaluate", "scores.json")


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


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("text_classification", "tiny_bert"),
        ("image_classification", "small_cnn"),
        ("tabular_classification", "mlp"),
        ("text_generation", "tiny_llama"),
    ],
)
def test_debug_fast_is_one_setting_for_every_task(task, model):
    cfg = load_config([f"task={task}", "debug=fast"])
    assert cfg.trainer.limit_train_batches == 4 and cfg.registry.thresholds.accuracy == 0.0
    assert cfg.model.name == model and cfg.data.max_rows in (300, 400)
    if task == "text_classification":
        # conf/debug_task/ repeats tiny_bert's settings (Hydra allows no group override there).
        assert cfg.model == load_config(["model=tiny_bert"]).model
    if task == "text_generation":
        assert cfg.model == load_config(["task=text_generation", "model=tiny_llama"]).model
    if task == "image_classification":
        assert list(cfg.model.channels) == [4, 8]  # a narrow CNN, not the default [32, 64]


def test_defaults_live_in_conf_only_and_fill_an_older_recorded_config():
    from omegaconf import OmegaConf

    from glasswork.config import check_config
    from glasswork.config_schema import TASK_SCHEMAS, GlassworkConfig

    # The schema holds names and types: no value that could disagree with conf/ (it did:
    # drift.text_method, data.format, an image model's dir).
    for schema in (GlassworkConfig, *[c for pair in TASK_SCHEMAS.values() for c in pair]):
        leaves = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)

        def values(tree):
            for value in tree.values():
                yield from values(value) if isinstance(value, dict) else [value]

        assert set(values(leaves)) <= {"???"}, schema.__name__
    # A config recorded before a setting existed takes the setting's conf/ default for its task.
    recorded = OmegaConf.to_container(load_config(["task=image_classification"]))
    del recorded["drift"]["explanation_alpha"], recorded["model"]["dir"]
    filled = check_config(OmegaConf.create(recorded))
    assert filled.drift.explanation_alpha == 0.01 and filled.model.dir is None
    assert filled.drift.text_method == load_config([]).drift.text_method == "abs_text_content_drift"


@pytest.mark.parametrize("task", ["image_classification", "tabular_classification", "text_generation"])
def test_a_task_with_its_own_batch_does_not_take_the_text_gpu_learning_rate_scale(task):
    # trainer=gpu scales the rate 8x for text at batch 1,024; the image and table tasks keep their
    # own batches (128, 64; a generative model's 8 pairs) on a GPU too, so 8x would be a rate nobody measured.
    gpu = load_config([f"task={task}", "trainer=gpu"])
    assert gpu.trainer.lr_scale == 1.0 and gpu.trainer.batch_size in (128, 64, 8)
    assert load_config(["trainer=gpu"]).trainer.lr_scale == 8.0


def test_known_harmless_warnings_are_hidden_unless_verbose_and_others_still_show():
    import warnings

    from glasswork.cli import _parser, quiet_known_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_warnings()
        for text, kind in [
            ("Hint: Inferred schema contains integer column(s). Integer columns ...", UserWarning),
            ("The specified dataset source can be interpreted in multiple ways: A, A.", UserWarning),
            ("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning),
            ("a warning nobody has judged harmless", UserWarning),
        ]:
            warnings.warn(text, kind, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a warning nobody has judged harmless"]
    assert _parser().parse_args(["run", "-v", "debug=fast"]).verbose
    assert not _parser().parse_args(["monitor", "batch.csv"]).verbose


def test_mlflow_routine_lines_are_quiet_unless_verbose(monkeypatch):
    import logging
    import warnings

    from glasswork.cli import setup_logging

    db, pyfunc = logging.getLogger("mlflow.store.db.utils"), logging.getLogger("mlflow.pyfunc")
    ours = logging.getLogger("glasswork")
    monkeypatch.setattr(db, "level", logging.NOTSET)  # all restored after the test
    monkeypatch.setattr(pyfunc, "level", logging.NOTSET)
    monkeypatch.setattr(ours, "level", ours.level)
    with warnings.catch_warnings():  # setup_logging's filters stay in this block
        setup_logging(verbose=True)
        assert db.level == pyfunc.level == logging.NOTSET, "-v leaves MLflow's lines as MLflow sets them"
        setup_logging(verbose=False)
        assert db.level == pyfunc.level == logging.WARNING


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp"])
@pytest.mark.parametrize(
    "task", ["text_classification", "image_classification", "tabular_classification", "text_generation"]
)
def test_every_task_composes_with_every_trainer(task, trainer):
    """A task's own trainer settings (its batch, its checkpoint cadence) must not clash with any
    trainer group's: `task=text_generation trainer=gpu` once asked for checkpoints both every 20
    steps and every 10 minutes, refused before training."""
    from glasswork.models.trainer import check_trainer

    check_trainer(load_config([f"task={task}", f"trainer={trainer}"]).trainer)
