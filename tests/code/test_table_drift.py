"""Drift and monitor for `task=tabular_classification` (glasswork.table_drift): a shifted table
drifts and its unshifted test split does not, on Evidently's tests of the raw columns; a category
the model never learned and a column with no value are named in drift.json; a monitored batch is
checked before anything is written (a missing feature column, text in a number) and scored whole."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tests.code.test_tabular_task import table_overrides, write_table

from glasswork import drift, table_drift
from glasswork import monitor as monitoring
from glasswork.comparison import local_reference
from glasswork.config import load_config
from glasswork.data.prepare import load_labels, load_split
from glasswork.errors import ConfigError, DataError
from glasswork.models.backbone import model_dir
from glasswork.outputs import read_json
from glasswork.steps import get
from glasswork.tasks.tabular import TabularClassification

# table_run trains and evaluates a table model through the pipeline's steps, once for the module.
pytestmark = pytest.mark.slow

ROWS = 1500  # a 20% test split of 300 rows: enough for Evidently's tests to see a real shift
FEATURES = ["tenure months", "spend", "plan"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A small churn table through ingest, prepare, train and evaluate (once for the module)."""
    root = tmp_path_factory.mktemp("table-drift")
    data = write_table(root / "customers.csv", n=ROWS)
    cfg = load_config(
        table_overrides(
            root,
            data,
            "data.test_fraction=0.2",
            "trainer.max_epochs=6",
            "trainer.limit_train_batches=1.0",
            "trainer.batch_size=64",
            "drift.sample_size=400",
            "drift.embeddings_plot=false",
            "monitor.sample_size=100",
            # Half the test split in the explain step's global view, the explanation drift's
            # reference: drift.current=test compares the other half.
            "explain.global_max_texts=150",
        )
    )
    for name in ("ingest", "prepare", "train", "evaluate", "explain"):
        get(name).function()(cfg)
    return cfg


def with_current(cfg, current: str):
    from omegaconf import OmegaConf

    cfg = cfg.copy()
    OmegaConf.update(cfg, "drift.current", current)
    return cfg


def test_a_shifted_table_drifts_and_its_test_split_does_not(table_run):
    held_out = drift.drift(with_current(table_run, "test"))
    shifted = drift.drift(with_current(table_run, "shifted"))
    # Evidently's own tests on the raw columns: numbers as numbers, the category as a category.
    assert set(FEATURES) <= set(held_out["columns"]) and held_out["columns"]["plan"]["method"].startswith("chi-square")
    assert held_out["columns"]["spend"]["method"].startswith("K-S")
    assert not held_out["dataset_drift"], held_out["drifted_signals"]
    assert not set(FEATURES) & set(held_out["drifted_signals"]), held_out["drifted_signals"]
    assert shifted["dataset_drift"], shifted["drifted_signals"]
    assert set(FEATURES) <= set(shifted["drifted_signals"]), shifted["drifted_signals"]
    for summary in (held_out, shifted):
        assert summary["unseen_categories"] == {} and summary["all_missing_columns"] == []
        performance = summary["performance"]
        assert performance["status"] == "computed" and performance["n_labelled"] == summary["n_current"]
        assert 0 < performance["estimated_accuracy"] <= 1 and 0 < performance["actual_accuracy"] <= 1
        assert summary["explanation_drift"]["status"] == "computed"
    explained = held_out["explanation_drift"]
    # The 150 test rows the explain step did not explain (drift.explain_sample caps them at 100).
    assert explained["n_current"] == 100 and explained["n_reference"] == 150
    assert set(explained["tests"]) == set(FEATURES) and not explained["drifted"], explained["tests"]
    written = read_json(Path(table_run.paths.artifacts_dir) / "drift" / "drift.json")
    assert written["current"] == "shifted" and written["drifted_signals"] == shifted["drifted_signals"]


def test_explanations_drift_when_the_model_stops_reading_a_column(table_run, monkeypatch):
    """The batch's values of `tenure months` all at the training mean, which is the attribution
    baseline: the column can no longer move a prediction, so its share of every row's attribution
    is 0 (the label hangs on it in training: the reference's share is not), and the evidence moves
    to the other columns. A check that could fail: the held-out rows, explained the same way, do
    not drift (test above)."""
    cfg = with_current(table_run, "test")
    held_out = drift.drift(cfg)["explanation_drift"]  # the batch as it is
    pre = table_drift.TableDescriber(cfg).pre
    batch = table_drift.current_batch(cfg)
    batch["tenure months"] = pre.numeric["tenure months"]["mean"]
    monkeypatch.setattr(TabularClassification, "drift_batch", lambda self, cfg: batch.copy())
    explained = drift.drift(cfg)["explanation_drift"]
    assert explained["status"] == "computed" and explained["drifted"]
    tenure = explained["tests"]["tenure months"]
    assert tenure["drifted"] and tenure["current_mean"] == 0 < tenure["reference_mean"]
    assert tenure["p_value"] <= cfg.drift.explanation_alpha / len(FEATURES)
    assert explained["tests"]["plan"]["current_mean"] > explained["tests"]["plan"]["reference_mean"]
    assert explained["js_distance"] > held_out["js_distance"]  # the mean shares moved further
    quality = explained["faithfulness"]
    assert quality["status"] == "computed" and set(quality["change"]) == {"comprehensiveness_gain", "sufficiency_gain"}
    written = read_json(Path(cfg.paths.artifacts_dir) / "drift" / "drift.json")
    assert written["explanation_drift"]["drifted"]
    page = (Path(cfg.paths.artifacts_dir) / "drift" / "explanation_report.html").read_text(encoding="utf-8")
    assert "tenure months" in page and "Explanation Drift" in page


def test_the_rows_the_reference_explained_are_left_out_of_the_batch_and_said(table_run):
    from glasswork.explain.column_drift import explanation_drift, row_digests
    from glasswork.explain.columns import ColumnExplainer

    cfg = with_current(table_run, "test")
    reference = read_json(Path(cfg.paths.artifacts_dir) / "explain" / "global_importance.json")
    describer = table_drift.TableDescriber(cfg)
    batch = table_drift.current_batch(cfg)
    digests = row_digests(batch, list(describer.pre.columns))
    # The drift step's batch is the test split as read for drift, the reference its processed rows:
    # the same rows hash alike, so half the split is known (global_max_texts=150 of 300).
    assert len(set(digests) & set(reference["row_digests"])) == len(set(reference["row_digests"])) > 100
    reference["row_digests"] = digests  # as if the explain step had explained every test row
    summary, report = explanation_drift(reference, ColumnExplainer(describer.predictor, cfg), batch, cfg)
    assert report is None and summary["status"].startswith("not computed: 0 rows to explain")
    assert f"{len(batch)} of the batch's {len(batch)} rows are rows the explain step explained" in summary["status"]
    assert "explain.global_max_texts" in summary["status"]


def test_the_shifted_batch_is_reproducible_and_other_batches_are_refused(table_run):
    cfg = with_current(table_run, "shifted")
    first, again = table_drift.current_batch(cfg), table_drift.current_batch(cfg)
    pd.testing.assert_frame_equal(first, again)
    test, train = load_split(cfg, "test"), load_split(cfg, "train")
    assert len(first) == len(test) and set(first["label"]) <= set(load_labels(cfg)["classes"])
    moved = first["tenure months"].mean() - test["tenure months"].mean()
    assert moved > 0.3 * train["tenure months"].std()  # half a spread up, less what the clip takes
    assert first["tenure months"].between(train["tenure months"].min(), train["tenure months"].max()).all()
    shares = first["plan"].value_counts(normalize=True)
    assert shares.max() == pytest.approx(table_drift.OVER_SHARE, abs=0.01)  # one plan over-represented
    assert table_drift.current_batch(with_current(table_run, "test"))["label"].tolist() == [
        load_labels(cfg)["classes"][i] for i in test["label"]
    ]
    with pytest.raises(ConfigError, match=r"drift\.current='tweets'"):
        table_drift.current_batch(with_current(table_run, "tweets"))


def test_an_unseen_category_and_a_column_with_no_value_are_named(table_run, monkeypatch):
    cfg = with_current(table_run, "test")
    batch = table_drift.current_batch(cfg)
    batch.loc[:29, "plan"] = "platinum"  # a plan launched after training
    batch["spend"] = np.nan  # a form that stopped asking
    monkeypatch.setattr(TabularClassification, "drift_batch", lambda self, cfg: batch.copy())
    view = table_drift.TableDescriber(cfg).describe(batch, None)
    assert view.findings == {"unseen_categories": {"plan": 30}, "all_missing_columns": ["spend"]}
    assert (view.frame["plan"] == "(other)").sum() == 30 and view.frame["spend"].notna().all()
    summary = drift.drift(cfg)  # Evidently cannot test an empty column: it is given what the model reads
    assert summary["unseen_categories"] == {"plan": 30} and summary["all_missing_columns"] == ["spend"]
    assert {"spend", "plan"} <= set(summary["drifted_signals"]), summary["drifted_signals"]


def local_champion(monkeypatch, cfg):
    """The work folder's model as the champion, without registering it (the lineage is
    glasswork.monitor's own, tested in test_monitor.py)."""
    ref = monitoring.Reference(
        name="glasswork-customers",
        version="1",
        run_id="local",
        model_dir=model_dir(cfg),
        splits_dir=Path(cfg.paths.processed_dir),
        recorded=cfg,
        data=local_reference(cfg),
    )
    version = SimpleNamespace(name=ref.name, version=ref.version)
    monkeypatch.setattr(monitoring, "champion", lambda cfg: (None, version))
    monkeypatch.setattr(monitoring, "find_reference", lambda client, version, cache: ref)
    return ref


def test_a_monitored_table_is_scored_whole_and_says_what_the_model_never_learned(table_run, monkeypatch, tmp_path):
    local_champion(monkeypatch, table_run)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    labelled = pd.read_csv(write_table(tmp_path / "new.csv", n=150, seed=7))
    labelled.loc[:11, "plan"] = "platinum"
    labelled.to_csv(incoming / "a.csv", index=False)
    unlabelled = pd.read_csv(write_table(tmp_path / "more.csv", n=50, seed=8)).drop(columns=["churn"])
    unlabelled[["plan", "spend", "tenure months"]].to_parquet(incoming / "b.parquet")  # any column order
    (incoming / "notes.txt").write_text("not a table")
    summary = monitoring.monitor(table_run, incoming)
    out = Path(summary["output_dir"])
    scored = pd.read_parquet(out / "predictions.parquet")
    assert len(scored) == 200 and sum(summary["predicted_counts"].values()) == 200
    assert scored.groupby("file").size().to_dict() == {str(incoming / "a.csv"): 150, str(incoming / "b.parquet"): 50}
    assert (scored["label"] != "").sum() == 150 and set(scored["predicted"]) <= {"churned", "stayed"}
    assert summary["batch"]["unseen_categories"] == {"plan": 12} and summary["batch"]["all_missing_columns"] == []
    assert summary["batch"]["n_rows"] == 200 and summary["batch"]["n_sampled"] == 100
    assert list(summary["batch"]["skipped"]) == [str(incoming / "notes.txt")]
    assert "plan" in summary["columns"] and summary["task"] == "tabular_classification"
    assert read_json(out / "drift.json")["batch"]["unseen_categories"] == {"plan": 12}


def test_retraining_takes_the_champions_rows_and_the_batchs_labelled_ones(table_run, monkeypatch, tmp_path):
    """monitor.on_drift=retrain for a table: the champion's prepared rows and every batch row whose
    label is a class it knows (a class it never learned and an unlabelled file left out), written
    as a table that `data=tabular` prepares like a user's own."""
    local_champion(monkeypatch, table_run)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    labelled = pd.read_csv(write_table(tmp_path / "new.csv", n=120, seed=11))
    labelled.loc[:9, "churn"] = "paused"  # a class the model never learned
    labelled.to_csv(incoming / "a.csv", index=False)
    unlabelled = pd.read_csv(write_table(tmp_path / "more.csv", n=30, seed=12)).drop(columns=["churn"])
    unlabelled.to_parquet(incoming / "b.parquet")
    summary = monitoring.monitor(table_run, incoming)
    assert summary["batch"]["label_column"] == "churn"
    data = TabularClassification().retraining(table_run, summary)
    # The labels keep their column's name: the retrained model's next batches carry them there.
    assert data is not None and data[0] == "data=tabular" and data[2] == "data.label_column=churn"
    table = pd.read_parquet(data[1].removeprefix("data.path="))
    splits = [load_split(table_run, s) for s in ("train", "val", "test")]
    assert len(table) == sum(map(len, splits)) + 110
    assert set(table.columns) == {*FEATURES, "churn"} and set(table["churn"]) == {"churned", "stayed"}
    added = table.iloc[-110:].reset_index(drop=True)
    pd.testing.assert_series_equal(added["spend"], labelled["spend"].iloc[10:].reset_index(drop=True))
    assert added["churn"].tolist() == labelled["churn"].iloc[10:].tolist()
    retrained = load_config(table_overrides(tmp_path / "retrain", Path("unused.csv"), *data, "data.test_fraction=0.2"))
    get("ingest").function()(retrained)
    get("prepare").function()(retrained)
    prepared = sum(len(load_split(retrained, s)) for s in ("train", "val", "test"))
    assert prepared == len(table)  # every row kept: no duplicates, no bad value


def test_a_batch_without_a_feature_column_is_refused_before_anything_is_written(table_run, monkeypatch, tmp_path):
    local_champion(monkeypatch, table_run)
    cfg = table_run.copy()
    cfg.monitor.output_dir = str(tmp_path / "monitor")
    batch = pd.read_csv(write_table(tmp_path / "new.csv", n=40, seed=3)).drop(columns=["spend"])
    batch.to_csv(tmp_path / "no-spend.csv", index=False)
    with pytest.raises(DataError, match=r"no-spend\.csv has no column\(s\) 'spend', which the model reads"):
        monitoring.monitor(cfg, tmp_path / "no-spend.csv")
    assert not (tmp_path / "monitor").exists()
    batch = pd.read_csv(tmp_path / "new.csv").astype({"tenure months": object})
    batch.loc[2, "tenure months"] = "about a year"
    batch.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(DataError, match=r"typo\.csv: numeric column 'tenure months' holds text at line 4"):
        monitoring.monitor(cfg, tmp_path / "typo.csv")
    assert not (tmp_path / "monitor").exists()
