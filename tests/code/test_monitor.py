"""`glasswork monitor`: a new batch checked with the tiny champion, the action taken, and the bad
batches it must survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tests.conftest import _rewrite_artifact_root, tiny_overrides

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.estimate import estimated_accuracy, fit_calibration
from glasswork.evaluate import prediction_arrays
from glasswork.monitor import LineageError, NoChampionError, logged_model_id, monitor
from glasswork.outputs import read_json

NAME = "glasswork-sentiment"


def _copy(trained_tiny_root, target):
    shutil.copytree(trained_tiny_root, target)
    _rewrite_artifact_root(target, trained_tiny_root)
    return target


def _overrides(root, *extra):
    return tiny_overrides(root, "monitor.sample_size=120", *extra)


def _latest_summary(root) -> dict:
    folders = sorted(p for p in (root / "artifacts" / "monitor").iterdir() if not p.name.startswith("."))
    return read_json(folders[-1] / "drift.json")


def _tweets(root, n: int, seed: int = 0) -> pd.DataFrame:
    return pd.read_csv(root / "data" / "raw" / "tweets.csv").sample(n=n, random_state=seed)


def _heldout_reviews(root, n: int) -> pd.DataFrame:
    """Reviews of the same source that the tiny run never saw (it trained on 300 of them)."""
    seen = set(pd.concat(pd.read_parquet(p) for p in (root / "data" / "processed").glob("*.parquet"))["text"])
    reviews = pd.read_csv(root / "data" / "raw" / "rotten_tomatoes.csv")
    return reviews[~reviews["text"].isin(seen)].sample(n=n, random_state=0)


@pytest.fixture(scope="module")
def tweets_folder(trained_tiny_root, tmp_path_factory):
    """One CLI check of an incoming folder: tweets, a few rows with a label the model never saw,
    and a file that cannot be read. Returns the root, the exit code and drift.json."""
    root = _copy(trained_tiny_root, tmp_path_factory.mktemp("monitor") / "run")
    incoming = root / "incoming"
    incoming.mkdir()
    _tweets(root, 150).to_csv(incoming / "tweets.csv", index=False)
    odd = pd.DataFrame({"text": [f"meh, it was okay {i}" for i in range(10)], "label": ["neutral"] * 10})
    odd.to_json(incoming / "odd.jsonl", orient="records", lines=True)
    (incoming / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    # A sample as large as the batch: the accuracy figures can be checked against every scored row.
    code = main(["monitor", str(incoming), *tiny_overrides(root, "monitor.sample_size=200")])
    return root, code, _latest_summary(root)


@pytest.mark.slow  # tweets_folder: the session's trained tiny run, monitored
def test_tweets_drift_with_reasons_an_estimate_and_an_alert(tweets_folder):
    root, code, summary = tweets_folder
    assert code == 1, "on_drift=alert must make the CLI exit non-zero"
    assert summary["dataset_drift"] is True and summary["share_drifted"] >= summary["drift_share"]
    assert "text" in summary["drifted_signals"] and "nonletter_share" in summary["drifted_signals"]
    assert set(summary["columns"]) >= {"text", "oov_share", "predicted_probability", "embeddings:sentence"}
    folder = root / "artifacts" / "monitor"
    out = next(p for p in folder.iterdir() if not p.name.startswith("."))
    # Tweets carry 0/1 labels, as the reviews do: the truth is the scored rows' own; the estimate,
    # those rows' probabilities through the champion's calibration on its validation split.
    performance = summary["performance"]
    scored = pd.read_parquet(out / "predictions.parquet")
    probs = scored[["prob_rotten", "prob_fresh"]].to_numpy()
    labels = scored["label"].astype(str).map({"0": 0, "1": 1})
    known = labels.notna().to_numpy()
    assert performance["n_labelled"] == 150 and known.sum() == 150  # the 10 "neutral" rows left out
    assert performance["actual_accuracy"] == pytest.approx((probs[known].argmax(1) == labels[known]).mean())
    validation = pd.read_parquet(root / "artifacts" / "evaluate" / "val_predictions.parquet")
    calibration = fit_calibration(*prediction_arrays(validation))
    assert performance["estimated_accuracy"] == pytest.approx(estimated_accuracy(calibration, probs))
    assert performance["calibrated_on"] == f"validation split ({len(validation)} rows, per class)"
    assert (out / "report.html").stat().st_size > 10_000 and (out / "metrics.json").is_file()
    assert "mass_top_word" in (out / "explanation_report.html").read_text(encoding="utf-8")
    # The champion's own explain step is the faithfulness reference, read from its MLflow run.
    assert summary["explanation_drift"]["faithfulness"]["status"] == "computed"
    assert "faithfulness: comprehensiveness gain" in summary["verdict_words"]
    change = summary["explanation_drift"]["faithfulness"]["change"]["sufficiency_gain"]
    assert f"interval {change['ci_low']:+.3f} to {change['ci_high']:+.3f}" in summary["verdict_words"]
    from pipelines.monitoring import report

    assert "faithfulness on the batch: comprehensiveness gain" in report(summary, markdown=True)
    assert "texts of incoming land among" in (out / "embeddings.html").read_text(encoding="utf-8")
    assert pq.read_metadata(out / "predictions.parquet").num_rows == 160  # every row scored, not the sample


@pytest.mark.slow  # tweets_folder: the session's trained tiny run, monitored
def test_the_check_is_an_mlflow_run_linked_to_the_champion(tweets_folder):
    root, _, summary = tweets_folder
    cfg = load_config(_overrides(root))
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    champion = client.get_model_version_by_alias(NAME, "champion")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["glasswork.monitor.model"] == f"{NAME}/{champion.version}"
    assert run.data.tags["glasswork.monitor.model_run_id"] == champion.run_id
    assert run.data.tags["glasswork.drift_verdict"] == "drift"
    assert run.data.metrics["drift/dataset_drift"] == 1.0 and "drift/estimated_accuracy" in run.data.metrics
    logged = {m.key for m in client.get_logged_model(logged_model_id(champion)).metrics or []}
    assert "drift/dataset_drift" in logged, "the check's numbers show on the champion's model page"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "glasswork-monitoring"
    # Its pages sit with the run's other artifacts, not in ./mlruns of the folder pytest started in.
    assert run.info.artifact_uri.startswith(Path(cfg.tracking.artifact_root).resolve().as_uri())
    # The reference came from the champion's lineage: its own prepared training split.
    assert summary["reference"].endswith("processed/train.parquet") and summary["model_run_id"] == champion.run_id


@pytest.mark.slow  # tweets_folder: the session's trained tiny run, monitored
def test_an_unreadable_file_is_skipped_and_reported_the_rest_processed(tweets_folder):
    _, _, summary = tweets_folder
    skipped = summary["batch"]["skipped"]
    assert list(skipped) == [str(next(iter(skipped)))] and next(iter(skipped)).endswith("broken.parquet")
    assert len(summary["batch"]["files"]) == 2 and summary["batch"]["n_rows"] == 160


@pytest.mark.slow  # tweets_folder: the session's trained tiny run, monitored
def test_labels_the_model_never_saw_are_named_and_left_out(tweets_folder):
    _, _, summary = tweets_folder
    assert summary["unseen_labels"] == ["neutral"]
    sampled_odd = summary["n_current"] - summary["performance"]["n_labelled"]
    assert summary["n_current"] == 160 and sampled_odd == 10  # the accuracy counts only rows with a known label
    assert summary["label_drift"].startswith("not tested")


@pytest.mark.slow
def test_heldout_reviews_do_not_drift_and_exit_zero(tiny_run):
    root, _ = tiny_run
    batch = root / "heldout.csv"
    _heldout_reviews(root, 150).to_csv(batch, index=False)
    assert main(["monitor", str(batch), *_overrides(root)]) == 0
    summary = _latest_summary(root)
    assert summary["dataset_drift"] is False and summary["action"] == "none: no drift"
    assert summary["label_drift"] == "tested" and "label" in summary["columns"]


@pytest.mark.slow
def test_retrain_trains_on_reference_plus_labelled_batch(tiny_run):
    root, cfg = tiny_run
    batch = root / "tweets.csv"
    _tweets(root, 80).to_csv(batch, index=False)
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    before = {v.version for v in client.search_model_versions(f"name='{NAME}'")}
    splits = [root / "data" / "processed" / f"{split}.parquet" for split in ("train", "val", "test")]
    reference = sum(len(pd.read_parquet(p)) for p in splits)
    assert main(["monitor", str(batch), *_overrides(root, "monitor.on_drift=retrain")]) == 0
    after = client.search_model_versions(f"name='{NAME}'")
    assert len(after) == len(before) + 1
    new = next(v for v in after if v.version not in before)
    assert new.tags["glasswork.data"].startswith("table:") and new.tags["glasswork.data"].endswith(".parquet")
    data = pd.read_parquet(new.tags["glasswork.data"].removeprefix("table:"))
    assert len(data) == reference + 80  # the champion's whole reference and every labelled batch row
    assert set(_tweets(root, 80)["text"]) <= set(data["text"])


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_the_champion_scores_at_the_length_it_was_trained_at_whatever_the_config_says(tiny_run):
    """The real model's default `model.max_length=auto` is resolved by `prepare` for a run, not for
    a check: `glasswork monitor` once passed the word "auto" to the tokenizer and failed on the first
    batch. The champion is scored at its own length (its folder's labels.json), as it is served."""
    root, _ = tiny_run
    batch = root / "tweets.csv"
    _tweets(root, 40).to_csv(batch, index=False)
    scored = {}
    for length in ("64", "auto", "8"):  # the tiny model trained at 64 tokens
        summary = monitor(load_config(_overrides(root, f"model.max_length={length}")), batch)
        scored[length] = pd.read_parquet(Path(summary["output_dir"]) / "predictions.parquet")
    assert len(scored["64"]) == 40
    for other in ("auto", "8"):
        pd.testing.assert_frame_equal(scored[other], scored["64"])


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_retrain_without_labels_alerts_instead(tiny_run):
    root, _ = tiny_run
    batch = root / "tweets.csv"
    _tweets(root, 60)[["text"]].to_csv(batch, index=False)
    assert main(["monitor", str(batch), *_overrides(root, "monitor.on_drift=retrain")]) == 1
    assert _latest_summary(root)["dataset_drift"] is True


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_a_batch_without_the_text_column_is_named(tiny_run, capsys):
    root, _ = tiny_run
    batch = root / "bodies.csv"
    pd.DataFrame({"body": ["fine film", "bad film"], "label": [1, 0]}).to_csv(batch, index=False)
    assert main(["monitor", str(batch), *_overrides(root)]) == 2
    err = capsys.readouterr().err
    assert str(batch) in err and "no text column 'text'" in err and "['body', 'label']" in err
    assert "monitor.text_column" in err
    assert not (root / "artifacts" / "monitor").exists() or not list((root / "artifacts" / "monitor").glob("2*"))


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_an_empty_batch_is_refused(tiny_run, capsys):
    root, _ = tiny_run
    batch = root / "empty.csv"
    batch.write_text("text,label\n")
    assert main(["monitor", str(batch), *_overrides(root)]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_no_champion_says_how_to_get_one(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path))
    batch = tmp_path / "b.csv"
    batch.write_text("text\nhello\n")
    with pytest.raises(NoChampionError, match=r"no version of model 'glasswork-sentiment' holds the alias 'champion'"):
        monitor(cfg, batch)
    with pytest.raises(NoChampionError, match=r"run `glasswork run` first"):
        monitor(cfg, batch)


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_reference_data_that_changed_since_training_is_refused(tiny_run):
    root, cfg = tiny_run
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    champion = client.get_model_version_by_alias(NAME, "champion")
    client.set_model_version_tag(NAME, champion.version, "glasswork.data_md5", "0" * 32)
    batch = root / "b.csv"
    batch.write_text("text\nhello\n")
    mlflow.set_tracking_uri(cfg.tracking.uri)
    with pytest.raises(LineageError, match=r"trained on data version 0{32}.*dvc checkout"):
        monitor(load_config(_overrides(root)), batch)


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_splits_replaced_by_a_later_run_are_read_from_the_champions_run(tiny_run):
    root, cfg = tiny_run
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    champion = client.get_model_version_by_alias(NAME, "champion")
    run = client.get_run(champion.run_id)
    logged = {f.path for f in client.list_artifacts(champion.run_id, "data/splits")}
    assert logged == {f"data/splits/{n}" for n in ("train.parquet", "val.parquet", "test.parquet", "labels.json")}
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"train", "val", "test"}
    # A later training run on other data replaced the local splits the champion was trained on
    # (this copy's own: its recorded config is pointed at them).
    recorded = OmegaConf.create(champion.tags["glasswork.config"])
    recorded.paths.processed_dir = str(root / "data" / "processed")
    client.set_model_version_tag(NAME, champion.version, "glasswork.config", OmegaConf.to_yaml(recorded))
    train = root / "data" / "processed" / "train.parquet"
    original = pd.read_parquet(train)
    original.iloc[: len(original) // 2].to_parquet(train)
    batch = root / "b.csv"
    _heldout_reviews(root, 40).to_csv(batch, index=False)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    summary = monitor(load_config(_overrides(root, "monitor.on_drift=none")), batch)
    reference = summary["reference"]
    assert reference.endswith("splits/train.parquet") and ".cache" in reference, reference
    assert pd.read_parquet(reference).equals(original)  # the champion's own training data, whole
    assert len(pd.read_parquet(train)) == len(original) // 2  # the local splits were left alone


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_a_recorded_config_that_is_not_a_mapping_is_refused(tiny_run):
    root, cfg = tiny_run
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    champion = client.get_model_version_by_alias(NAME, "champion")
    client.set_model_version_tag(NAME, champion.version, "glasswork.config", "- a\n- list\n")
    batch = root / "b.csv"
    batch.write_text("text\nhello\n")
    mlflow.set_tracking_uri(cfg.tracking.uri)
    with pytest.raises(LineageError, match=rf"v{champion.version}: its recorded config is a ListConfig, not a mapping"):
        monitor(load_config(_overrides(root)), batch)


def test_an_unknown_on_drift_action_is_named():
    from pipelines.monitoring import check_on_drift

    with pytest.raises(ConfigError, match=r"monitor.on_drift='page'.*\['alert', 'retrain', 'none'\]"):
        check_on_drift(load_config(["monitor.on_drift=page"]))


def test_retraining_data_keeps_the_slice_columns_of_the_splits_and_the_batch(tmp_path, cfg_factory):
    from glasswork.outputs import write_json
    from glasswork.retraining import text_retraining

    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("train", "val", "test"):
        pd.DataFrame({"text": [f"{name} a", f"{name} b"], "label": [0, 1], "source": ["web", "print"]}).to_parquet(
            splits / f"{name}.parquet"
        )
    write_json(splits / "labels.json", {"classes": ["neg", "pos"], "names": ["neg", "pos"]})
    batch = tmp_path / "batch.csv"
    new = pd.DataFrame(
        {"text": ["new one", "new two", "new three"], "label": ["pos", "neg", "meh"], "source": ["web", " ", "web"]}
    )
    new.to_csv(batch, index=False)
    out = tmp_path / "out"
    out.mkdir()
    summary = {"reference": str(splits / "train.parquet"), "output_dir": str(out),
               "batch": {"source": str(batch), "files": [str(batch)]}}  # fmt: skip
    overrides = text_retraining(cfg_factory(tiny_overrides(tmp_path)), summary)
    assert overrides is not None and overrides[0] == "data=table"
    data = pd.read_parquet(overrides[1].removeprefix("data.path="))
    assert list(data.columns) == ["text", "label", "source"]
    assert len(data) == 8  # 6 reference rows, 2 batch rows with a known label ("meh" is left out)
    assert data["source"].tolist()[:6] == ["web", "print"] * 3
    assert data["source"][6] == "web" and pd.isna(data["source"][7])  # from the batch, blank is missing
    assert set(data["label"]) == {"neg", "pos"}


@pytest.mark.slow  # every step of the pipeline
def test_a_champion_with_slice_columns_is_watched_on_them(tmp_path):
    from pipelines.monitoring import report
    from tests.conftest import learnable_overrides, learnable_rows

    from glasswork.steps import STEPS

    cfg = load_config(learnable_overrides(tmp_path, "data.slice_columns=[source]"))
    results = {step.name: step.function()(cfg) for step in STEPS}
    assert results["register"]["promote"]
    batch = tmp_path / "incoming"
    batch.mkdir()
    rows = pd.DataFrame(learnable_rows(80, seed=5), columns=["text", "label"])
    rows[:60].assign(source="print").to_csv(batch / "a.csv", index=False)  # training: a third from print
    rows[60:].to_parquet(batch / "b.parquet")  # a file without the column: its rows have it missing
    summary = monitor(cfg, batch)
    assert summary["batch"]["skipped"] == {}
    assert summary["columns"]["meta:source"]["drifted"] and "meta:source" in summary["drifted_signals"]
    # ... and the accuracy is estimated per source, beside the test split's and the truth.
    by_slice = {row["slice"]: row for row in summary["performance"]["slices"]}
    assert by_slice["source = print"]["n"] == 60 and by_slice["source missing"]["n"] == 20
    assert {"estimated_accuracy", "test_accuracy", "actual_accuracy"} <= set(by_slice["source = print"])
    assert "source = print (n=60): estimated" in report(summary)
    assert "slice/source_print/estimated_accuracy" in summary["metrics"]


def test_retraining_data_keeps_the_champions_own_class_values(tmp_path, cfg_factory):
    # Classes 0 and 1 (numbers) and a batch labelled "1" and "0" (text, as a CSV or a folder name
    # gives them): the retrained model must learn 0 and 1 again, or it predicts other classes than
    # the champion and is compared with it on nothing (found retraining on Fashion-MNIST).
    from glasswork.outputs import write_json
    from glasswork.retraining import text_retraining

    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("train", "val", "test"):
        pd.DataFrame({"text": [f"{name} a", f"{name} b"], "label": [0, 1]}).to_parquet(splits / f"{name}.parquet")
    write_json(splits / "labels.json", {"classes": [0, 1], "names": ["rotten", "fresh"]})
    batch = tmp_path / "batch.csv"
    pd.DataFrame({"text": ["new one", "new two"], "label": ["1", "0"]}).to_csv(batch, index=False)
    (tmp_path / "out").mkdir()
    summary = {"reference": str(splits / "train.parquet"), "output_dir": str(tmp_path / "out"),
               "batch": {"source": str(batch), "files": [str(batch)]}}  # fmt: skip
    overrides = text_retraining(cfg_factory(tiny_overrides(tmp_path)), summary)
    assert overrides is not None
    data = pd.read_parquet(overrides[1].removeprefix("data.path="))
    assert data["label"].tolist() == [0, 1] * 3 + [1, 0] and pd.api.types.is_integer_dtype(data["label"])
