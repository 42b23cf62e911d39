"""Issue 21: a user's own table trains long enough, a model that learned nothing is named and
never promoted, each dataset registers under its own name, and a label conflict stops the run
before any training."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tests.conftest import learnable_overrides, learnable_rows, write_learnable_csv

from glasswork.cli import main
from glasswork.collapse import learned_nothing, macro_f1
from glasswork.config import load_config, name_from_file
from glasswork.errors import ConfigError
from glasswork.models.trainer import budget, check_trainer
from glasswork.outputs import read_json
from glasswork.steps import STEPS
from glasswork.train import class_weights, steps_per_epoch


def _run_steps(cfg, until: str = "register") -> dict:
    results = {}
    for step in STEPS:
        results[step.name] = step.function()(cfg)
        if step.name == until:
            break
    return results


# --- the training budget -----------------------------------------------------------------------


def test_the_budget_raises_the_epochs_that_min_steps_needs_and_validates_every_epoch():
    t = load_config([]).trainer  # the CPU default: at least 150 steps, validation every 50
    small = budget(t, steps_per_epoch=26)  # 816 e-mails at batch 32
    assert small["max_epochs"] == t.max_epochs and 26 * small["max_epochs"] >= t.min_steps
    tiny = budget(t, steps_per_epoch=4)  # 128 rows: 20 epochs make 80 steps, 38 reach 150
    assert tiny["max_epochs"] == 38
    assert small["val_check_interval"] == 26 and small["check_val_every_n_epoch"] is None
    large = budget(t, steps_per_epoch=319)  # the shipped reviews
    assert large["max_epochs"] == t.max_epochs and large["val_check_interval"] == 50
    assert large["max_steps"] == 300 and large["max_time"].total_seconds() == 540
    assert "min_steps" not in large and "min_epochs" not in large, "Lightning's would hold back the time budget"


def test_steps_per_epoch_follow_the_batch_and_the_batch_limit():
    cfg = load_config(["trainer.batch_size=32"])
    assert steps_per_epoch(cfg, 816) == 26
    assert steps_per_epoch(load_config(["trainer.limit_train_batches=10"]), 816) == 10


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["trainer.min_steps=200", "trainer.max_steps=100"], ["trainer.max_steps=100", "below trainer.min_steps=200"]),
        (["trainer.min_steps=-1"], ["trainer.min_steps=-1", "0 (no minimum) or more"]),
        (["trainer.max_steps=0"], ["trainer.max_steps=0", "above 0"]),
        (["trainer.early_stopping_patience=0"], ["trainer.early_stopping_patience=0", "above 0"]),
        (["trainer.class_weights=inverse"], ["trainer.class_weights='inverse'", "balanced"]),
    ],
)
def test_a_budget_that_cannot_work_is_refused(overrides, words):
    with pytest.raises(ConfigError) as err:
        check_trainer(load_config(overrides).trainer)
    for word in words:
        assert word in str(err.value)


@pytest.mark.slow  # trains a model for its time budget
def test_a_budget_too_short_for_the_data_is_extended(tmp_path):
    # 240 learnable rows: 192 to train, 12 steps an epoch at batch 16. One epoch is asked for, but
    # at least 40 steps: training runs past the epoch, early stopping waits for the minimum.
    cfg = load_config(
        learnable_overrides(
            tmp_path,
            "trainer.max_epochs=1",
            "trainer.min_steps=40",
            "trainer.max_steps=60",
            "trainer.val_check_interval=50",
            "trainer.early_stopping_patience=1",
        )
    )
    result = _run_steps(cfg, until="train")["train"]
    assert 40 <= result["train/steps"] <= 60, result
    assert result["val/learned_nothing"] == 0


@pytest.mark.slow  # trains a model for its time budget
def test_the_time_budget_stops_training_inside_the_first_epoch_and_before_min_steps(tmp_path):
    # 2,000 learnable rows at batch 4: 400 steps an epoch; a 3-second budget ends it long before,
    # and before the minimum of 1,000 steps: the time budget always holds.
    cfg = load_config(
        learnable_overrides(
            tmp_path,
            "trainer.batch_size=4",
            "trainer.min_steps=1000",
            "trainer.max_steps=2000",
            "trainer.max_minutes=0.05",
            "trainer.val_check_interval=100",
            "trainer.early_stopping_patience=1",
        )
    )
    write_learnable_csv(tmp_path / "learnable.csv", n=2000)
    result = _run_steps(cfg, until="train")["train"]
    assert 1 <= result["train/steps"] < 400, result
    tags = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(result["run_id"]).data.tags
    assert tags["glasswork.train.stopped"].startswith("stopped at the time budget"), tags


def test_balanced_class_weights_make_each_class_count_alike():
    labels = {"classes": ["ham", "spam"], "names": ["ham", "spam"]}
    weights = class_weights("balanced", [0] * 90 + [1] * 10, labels)
    assert weights == pytest.approx([100 / 180, 100 / 20])
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)  # each class's total weight is the same
    assert class_weights(None, [0, 1], labels) is None
    assert class_weights("auto", [0] * 90 + [1] * 10, labels) == weights  # 9:1: balanced
    assert class_weights("auto", [0] * 70 + [1] * 30, labels) is None  # 2.3:1: as it is


# --- a model that learned nothing --------------------------------------------------------------


def test_collapse_is_named_for_one_class_answers_and_for_the_majority_score():
    names = ["ham", "spam"]
    one_class = np.array([[70, 0], [30, 0]])  # truth in rows: every text called ham
    assert "predicts 'ham' for 100% of 100 texts" in learned_nothing(one_class, names)
    near_majority = np.array([[80, 10], [9, 1]])  # macro-F1 0.49, the majority answer 0.47
    assert "within 0.05 of the majority answer" in learned_nothing(near_majority, names)
    learned = np.array([[60, 10], [8, 22]])
    assert learned_nothing(learned, names) is None
    assert macro_f1(learned) == pytest.approx((120 / 138 + 44 / 62) / 2)


def _noise_table(path, n: int = 400, rare_every: int = 20) -> None:
    """Texts with labels drawn at random, 19:1: nothing to learn but the majority."""
    rng = random.Random(0)
    rows = [(f"{text} note {i}", "rare" if rng.randrange(rare_every) == 0 else "common") for i, (text, _) in
            enumerate(learnable_rows(n))]  # fmt: skip
    pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(path, index=False)


@pytest.mark.slow  # the pipeline's steps, trained and registered
def test_a_model_that_learned_nothing_is_flagged_and_never_promoted(tmp_path, caplog):
    table = tmp_path / "noise.csv"
    _noise_table(table)
    overrides = learnable_overrides(
        tmp_path, f"data.path={table}", "registry.learned_nothing_gate=true", "trainer.class_weights=null"
    )
    results = _run_steps(load_config(overrides))
    assert results["evaluate"]["learned_nothing"] == 1
    assert results["evaluate"]["accuracy"] > 0.85, "answering the majority passes an accuracy threshold"
    assert read_json(tmp_path / "artifacts/evaluate/metrics.json")["learned_nothing"]
    assert "the model learned nothing" in caplog.text
    assert not results["register"]["promote"]
    assert any(r.startswith("the model learned nothing: ") for r in results["register"]["reasons"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert not client.get_registered_model("glasswork-noise").aliases


# --- one registered model per dataset ----------------------------------------------------------


def test_the_registry_name_comes_from_the_file_name():
    assert name_from_file("/data/My Tickets (v2).csv") == "my-tickets-v2"
    assert load_config([]).registry.model_name == "glasswork-sentiment"  # the shipped reviews
    table = ["data=table", "data.path=/x/support_tickets.jsonl", "data.text_column=t", "data.label_column=l"]
    assert load_config(table).registry.model_name == "glasswork-support_tickets"
    assert load_config([*table, "registry.model_name=mine"]).registry.model_name == "mine"


def _tickets(path) -> None:
    rows = [(text, {"pos": "praise", "neg": "complaint"}[label]) for text, label in learnable_rows(240, seed=1)]
    pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(path, index=False)


@pytest.mark.slow  # the pipeline's steps, trained and registered
def test_a_second_dataset_registers_under_its_own_name_and_a_label_conflict_stops_before_training(tmp_path, capsys):
    first = load_config(learnable_overrides(tmp_path))
    assert _run_steps(first)["register"]["promote"]
    client = MlflowClient(tracking_uri=first.tracking.uri, registry_uri=first.tracking.uri)
    runs_before = len(client.search_runs([client.get_experiment_by_name("glasswork").experiment_id]))
    trained = (tmp_path / "artifacts/train/metrics.json").read_bytes()

    tickets = tmp_path / "tickets.csv"
    _tickets(tickets)
    # The same name as the first model, whose labels are neg/pos: refused before anything runs.
    clash = learnable_overrides(tmp_path, f"data.path={tickets}", "registry.model_name=glasswork-learnable")
    assert main(["run", *clash]) == 2
    err = capsys.readouterr().err
    for word in ("registry.model_name='glasswork-learnable'", "['neg', 'pos']", "['complaint', 'praise']",
                 "registry.model_name=glasswork-tickets"):  # fmt: skip
        assert word in err, err
    assert len(client.search_runs([client.get_experiment_by_name("glasswork").experiment_id])) == runs_before
    assert (tmp_path / "artifacts/train/metrics.json").read_bytes() == trained

    # Its default name is its own: both champions stand side by side.
    second = load_config(learnable_overrides(tmp_path, f"data.path={tickets}"))
    assert second.registry.model_name == "glasswork-tickets"
    assert _run_steps(second)["register"]["promote"]
    for name in ("glasswork-learnable", "glasswork-tickets"):
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert OmegaConf.select(second, "data.registry_name") == "glasswork-tickets"
