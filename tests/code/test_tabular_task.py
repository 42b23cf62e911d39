"""The task seam with tables: `task=tabular_classification` composes its own data and model groups,
runs every step (`glasswork run`) on a user's table (numeric and
categorical columns, missing values, odd characters, imbalanced classes) through the same steps
as text and images, fits its preprocessing on the training split only, and serves the registered
model from a DataFrame with the training columns in any order."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.data.tabular import OTHER, Columns, Preprocessor
from glasswork.errors import ConfigError
from glasswork.outputs import read_json
from glasswork.steps import get

ART, DATA = "artifacts/tabular_classification", "data/tabular_classification/processed"
PLANS = ["básico", "pro", "équipe / 团队", "entreprise"]  # odd characters in a category


def write_table(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A churn-like table: the label depends on a number and a category (a tiny MLP learns it in
    a few epochs), one class a fifth of the rows, with missing values in both kinds of column."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, n)
    plan = rng.choice(PLANS, n)
    spend = rng.normal(50, 15, n)
    score = -0.12 * tenure + np.where(plan == "básico", 2.5, -1.0) + rng.normal(0, 0.4, n)
    churned = np.where(score > np.quantile(score, 0.8), "churned", "stayed")
    frame = pd.DataFrame({"tenure months": tenure.round(1), "plan": plan, "spend": spend.round(2), "churn": churned})
    frame.loc[::23, "spend"] = np.nan
    frame.loc[5::31, "plan"] = None
    frame.to_csv(path, index=False)
    return path


def table_overrides(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        "task=tabular_classification",
        "debug=fast",
        f"paths.root={tmp_path}",
        "data=tabular",
        f"data.path={data}",
        "data.label_column=churn",
        "data.max_rows=null",
        *extra,
    ]


def test_the_tabular_task_picks_its_own_data_and_model_groups():
    cfg = load_config(["task=tabular_classification"])
    assert cfg.task._target_ == "glasswork.tasks.tabular.TabularClassification"
    assert (cfg.data.source, cfg.data.label_column, cfg.model.name, list(cfg.model.hidden)) == (
        "fair",
        "affair",
        "mlp",
        [64, 64],
    )
    assert cfg.paths.artifacts_dir.endswith(ART)
    with pytest.raises(ConfigError, match=r"unknown setting data.text_column"):
        load_config(["task=tabular_classification", "+data.text_column=x"])


def test_the_preprocessing_is_fitted_on_the_training_split_only():
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 3.0], "c": ["a", "b", "a", None]})
    later = pd.DataFrame({"c": ["z", "a", None], "x": [100.0, np.nan, 2.0], "extra": [1, 2, 3]})
    pre = Preprocessor.fit(train, Columns(["x"], ["c"]))
    assert pre.numeric["x"]["median"] == 2.0 and pre.categorical["c"] == [OTHER, "a", "b"]
    features, unseen = pre.transform(later)  # columns in another order, one extra
    assert features.shape == (3, 1 + 3) and unseen == {"c": 1}  # "z": never seen, read as (other)
    assert features[1, 0] == pytest.approx((2.0 - pre.numeric["x"]["mean"]) / pre.numeric["x"]["std"])  # median
    assert features[:, 1:].tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert Preprocessor.from_json(pre.to_json()) == pre
    # Written with sorted keys (as every JSON file here), the columns keep the model's order.
    shuffled = Preprocessor.fit(train.assign(a=train["x"] * 2), Columns(["x", "a"], ["c"]))
    restored = Preprocessor.from_json(json.loads(json.dumps(shuffled.to_json(), sort_keys=True)))
    assert list(restored.numeric) == ["x", "a"] and restored.blocks == shuffled.blocks
    assert pre.fill_row().tolist() == [0, 0, 1, 0]  # the mean, and "a", the most frequent
    with pytest.raises(Exception, match=r"has no column\(s\) 'x', which the model reads"):
        pre.transform(later.drop(columns=["x"]), "batch.csv")


@pytest.mark.slow  # every step of the table pipeline, then served
def test_glasswork_run_takes_a_users_table_through_every_step_and_serves_it(tmp_path):
    # The seam's second proof: every step, in the same Prefect flow as text and images.
    data = write_table(tmp_path / "customers.csv")
    # Logged every 10 steps, not every step (debug=fast's 1): 500 SQLite writes cost more than the MLP.
    epochs = ("trainer.max_epochs=25", "trainer.limit_train_batches=1.0", "trainer.log_every_n_steps=10")
    overrides = table_overrides(tmp_path, data, *epochs, "drift.sample_size=100")
    assert main(["run", *overrides]) == 0
    cfg, art = load_config(overrides), tmp_path / ART
    report = read_json(tmp_path / DATA / "report.json")
    assert report["features"] == {"numeric": ["tenure months", "spend"], "categorical": ["plan"]}
    assert report["missing_values"] == {"spend": 18, "plan": 13}
    metrics = read_json(art / "evaluate" / "metrics.json")["test"]
    # Learnable from two columns. The majority class alone scores accuracy 0.8 but macro-F1 0.44
    # and ROC-AUC 0.5; the classes are 4:1 apart, so the loss is balanced (trainer.class_weights).
    assert metrics["roc_auc"] >= 0.9 and metrics["macro_f1"] >= 0.7, metrics
    assert "baseline_accuracy" in metrics
    saved = art / "train" / "model"
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.safetensors", "preprocess.json", "labels.json"}
    assert read_json(saved / "preprocess.json")["categorical"]["plan"][0] == OTHER
    # The training and validation curves, per epoch, as a picture beside the run's metrics.
    assert (art / "train" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    run_id = read_json(art / "train" / "run.json")["run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=cfg.tracking.uri)
    assert "train/curves.png" in [a.path for a in client.list_artifacts(run_id, "train")]
    assert len(client.get_metric_history(run_id, "val/loss")) == 25  # one per epoch
    for out in ("explain/attributions.html", "explain/global_importance.png", "drift/report.html"):
        assert (art / out).is_file(), out
    found = read_json(art / "drift" / "drift.json")
    assert found["current"] == "shifted" and found["unseen_categories"] == {} and found["all_missing_columns"] == []
    registration = read_json(art / "register" / "registration.json")
    assert registration["version"] == "1" and registration["promote"], registration["reasons"]

    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    rows = pd.DataFrame(
        {"note": ["x", "y"], "spend": [40.0, 60.0], "plan": ["básico", "unheard-of"], "tenure months": [1.0, 59.0]}
    )
    predicted = model.predict(rows)  # columns in any order, an extra one, an unseen category
    assert list(predicted["label"]) == ["churned", "stayed"]
    assert ((predicted[["prob_churned", "prob_stayed"]].sum(axis=1) - 1).abs() < 1e-5).all()
    with pytest.raises(Exception, match="spend"):
        model.predict(rows.drop(columns=["spend"]))


@pytest.mark.slow  # trains on the whole default table
def test_the_default_table_is_fairs_survey_and_an_mlp_beats_its_baseline(tmp_path):
    # The real default: 6,366 rows, 6 numeric and 2 categorical columns, from statsmodels.
    # 4 epochs: the default run stops early after 7, its best checkpoint from the second.
    cfg = load_config(["task=tabular_classification", f"paths.root={tmp_path}", "trainer.max_epochs=4"])
    results = {name: get(name).function()(cfg) for name in ("ingest", "prepare", "train", "evaluate")}
    report = read_json(tmp_path / DATA / "report.json")
    assert report["rows_read"] == 6366 and report["features"]["categorical"] == ["occupation", "occupation_husb"]
    metrics = results["evaluate"]
    assert metrics["accuracy"] > 0.68 and metrics["roc_auc"] > 0.7, metrics  # the majority class: 0.68


def test_drift_metrics_of_any_column_name_are_names_mlflow_takes():
    # Found by a run on a user's table: "drift/tenure (months)_score" was refused by MLflow.
    from types import SimpleNamespace

    from mlflow.utils.validation import _validate_metric_name

    from glasswork.drift import drift_metrics

    columns = {name: {"score": 0.1, "drifted": True} for name in ("tenure (months)", "charges €", "meta:source")}
    result = SimpleNamespace(dataset_drift=True, share_drifted=1.0, n_drifted=3, columns=columns)
    metrics = drift_metrics(result, {}, {"status": "not computed"})
    assert {"tenure_months_score", "charges_score", "meta_source_drifted"} <= set(metrics)
    for key in metrics:
        _validate_metric_name(f"drift/{key}")
