"""Each step's outputs on the tiny run, and what one MLflow run holds at the end."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr
from tests.conftest import tiny_overrides

from glasswork.estimate import estimated_accuracy, fit_calibration
from glasswork.evaluate import expected_calibration_error, prediction_arrays
from glasswork.explain.faithfulness import SUMMARY as FAITHFULNESS_SUMMARY
from glasswork.outputs import read_json

# Every test reads tiny_run: the whole tiny pipeline, run once a worker (~15 s).
pytestmark = pytest.mark.slow


def _png_ok(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_evaluate_writes_metrics_predictions_and_plots(tiny_run):
    root, cfg = tiny_run
    out = root / "artifacts" / "evaluate"
    metrics = read_json(out / "metrics.json")["test"]
    assert set(metrics) >= {"accuracy", "macro_f1", "roc_auc", "average_precision", "ece", "n"}
    assert metrics["n"] == 30
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == 30 and set(predictions["actual"]) <= {"rotten", "fresh"}
    test = pd.read_parquet(root / "data/processed/test.parquet")
    assert predictions["text"].tolist() == test["text"].tolist()
    probs = predictions[["prob_rotten", "prob_fresh"]].to_numpy()
    assert metrics["accuracy"] == pytest.approx((probs.argmax(1) == test["label"].to_numpy()).mean())
    assert metrics["ece"] == pytest.approx(expected_calibration_error(test["label"].to_numpy(), probs))
    # The validation split's predictions, in its order: what the label-free estimate is calibrated on.
    validation = pd.read_parquet(out / "val_predictions.parquet")
    assert validation["text"].tolist() == pd.read_parquet(root / "data/processed/val.parquet")["text"].tolist()
    for_plots = pd.read_csv(out / "predictions.csv")  # dvc plots' confusion matrix: no texts
    assert list(for_plots.columns[:3]) == ["row", "actual", "predicted"] and len(for_plots) == 30
    assert np.allclose(predictions[["prob_rotten", "prob_fresh"]].sum(axis=1), 1, atol=1e-5)
    for plot in ("confusion_matrix.png", "roc.png", "pr.png", "calibration.png", "slices.png"):
        assert _png_ok(out / plot), plot
    slices = read_json(out / "slices.json")
    assert slices["overall_accuracy"] == metrics["accuracy"]
    by_family = {}
    for row in slices["slices"]:
        by_family[row["slice"].split()[0]] = by_family.get(row["slice"].split()[0], 0) + row["n"]
    assert by_family == {"length": 30, "words": 30, "true": 30}  # each family cuts the whole split
    # 30 texts: no crossing of two slices reaches the size at which crossings are tested.
    assert slices["crossings"]["n_tested"] == 0 and slices["crossings"]["flagged"] == []


def test_explain_writes_a_page_and_attributions(tiny_run):
    root, cfg = tiny_run
    out = root / "artifacts" / "explain"
    explained = json.loads((out / "attributions.json").read_text())
    assert set(explained) == set(cfg.explain.methods) == {"integrated_gradients", "attention_rollout", "kernel_shap"}
    for items in explained.values():
        assert len(items) == cfg.explain.n_probe
    for item in explained["integrated_gradients"]:
        assert item["tokens"][0] == "[CLS]" and len(item["tokens"]) == len(item["scores"])
        assert abs(item["delta"]) < 1e-2  # integrated gradients' completeness holds
    for item in explained["attention_rollout"]:
        assert all(s >= 0 for s in item["scores"])  # rollout is a product of stochastic matrices
    metrics = read_json(out / "metrics.json")["explain"]
    for method in explained:
        assert f"{method}/comprehensiveness_aopc" in metrics and f"{method}/random_sufficiency_aopc" in metrics
    rhos = []  # the mean Spearman correlation of the two methods' scores, start/end tokens left out
    for a, b in zip(explained["integrated_gradients"], explained["attention_rollout"], strict=True):
        keep = [k for k, t in enumerate(a["tokens"]) if t not in ("[CLS]", "[SEP]", "[PAD]")]
        if len(keep) > 2:
            rho = spearmanr([a["scores"][k] for k in keep], [b["scores"][k] for k in keep]).statistic
            rhos.append(0.0 if np.isnan(rho) else rho)
    assert metrics["agreement/integrated_gradients_vs_attention_rollout"] == pytest.approx(np.mean(rhos))
    assert {f"global/{k}" for k in FAITHFULNESS_SUMMARY} <= set(metrics)  # faithfulness of the global view
    for method in cfg.explain.sanity_methods:  # Kernel SHAP is not in the check by default
        prefix = f"{method}/randomisation_spearman_"
        numbered = {int(k[len(prefix) :]): v for k, v in metrics.items() if k.startswith(prefix) and k[-1].isdigit()}
        stages = [numbered[k] for k in sorted(numbered)]
        assert len(stages) >= 3  # the head, each encoder block, the embeddings
        assert metrics[f"{method}/randomisation_spearman_mean"] == pytest.approx(np.mean(stages))
        assert metrics[f"{method}/randomisation_spearman"] == stages[-1]  # every layer random
        passed = metrics[f"{method}/randomisation_spearman_mean"] < cfg.explain.sanity_max_spearman
        assert metrics[f"{method}/randomisation_passed"] == float(passed)
    assert "kernel_shap/randomisation_passed" not in metrics
    page = (out / "attributions.html").read_text()
    assert page.count('class="item"') == cfg.explain.n_probe
    assert "<script" not in page and "http" not in page  # self-contained
    assert _png_ok(out / "embeddings.png") and 'src="data:image/png;base64,' in page
    assert _png_ok(out / "faithfulness.png") and "How faithful each explanation is" in page
    assert page.count('src="data:image/png;base64,') == 4  # faithfulness, randomisation, global words, map
    view = (out / "embeddings.html").read_text(encoding="utf-8")
    assert "by true label (PCA)" in view and "hover a point for its text" in view
    # plotly.js inlined, no <script src=...>: the page works offline, in the MLflow UI too
    assert "<script src=" not in view and "Plotly.newPlot" in view


def test_drift_against_tweets_has_a_verdict_and_a_report(tiny_run):
    from glasswork.drift import faithfulness_words

    root, cfg = tiny_run
    out = root / "artifacts" / "drift"
    summary = read_json(out / "drift.json")
    assert summary["current"] == "tweets" and isinstance(summary["dataset_drift"], bool)
    signals = {"text", "length_chars", "length_words", "oov_share", "nonletter_share", "predicted_probability"}
    assert set(summary["columns"]) == signals | {"label", "embeddings:sentence"}
    assert summary["columns"]["text"]["drifted"], "movie reviews vs tweets: the text must drift"
    assert summary["columns"]["nonletter_share"]["drifted"], "tweets carry @, #, / and digits"
    assert summary["n_columns"] == 8 and summary["share_drifted"] == summary["n_drifted"] / 8
    assert summary["data_quality"]["RowCount()"]["value"] == cfg.drift.sample_size
    assert (out / "report.html").stat().st_size > 10_000
    # The tweets carry sentiment labels (positive -> 1 like fresh, negative -> 0 like rotten):
    # the label-free estimate and the truth sit side by side.
    performance = summary["performance"]
    assert performance["status"] == "computed"
    batch, probs = _drift_sample(cfg)
    labels = batch["label"].astype(str).map({"0": 0, "1": 1}).to_numpy()
    assert performance["actual_accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    validation = pd.read_parquet(root / "artifacts" / "evaluate" / "val_predictions.parquet")
    calibration = fit_calibration(*prediction_arrays(validation))  # the validation split's, not the batch's
    assert performance["estimated_accuracy"] == pytest.approx(estimated_accuracy(calibration, probs), abs=1e-6)
    test_accuracy = read_json(root / "artifacts" / "evaluate" / "metrics.json")["test"]["accuracy"]
    assert performance["reference_accuracy"] == test_accuracy
    explained = summary["explanation_drift"]
    assert explained["status"] == "computed" and set(explained["tests"]) == {
        "mass_non_letters",
        "mass_split_words",
        "mass_top_word",
    }
    assert explained["drifted"] == any(t["drifted"] for t in explained["tests"].values())
    # A descriptor drifted when its K-S p-value is at most alpha over the three descriptors.
    assert all(t["drifted"] == (t["p_value"] <= explained["alpha"] / 3) for t in explained["tests"].values())
    # Faithfulness on the batch beside the explain step's on the test split (its global view).
    quality = explained["faithfulness"]
    reference = read_json(root / "artifacts" / "explain" / "global_importance.json")["faithfulness"]
    assert quality["status"] == "computed" and quality["reference"] == reference
    assert set(quality["current"]) == set(reference) == {*FAITHFULNESS_SUMMARY, "n_texts", "by_text"}
    n_texts = min(cfg.drift.explain_sample, cfg.explain.faithfulness_max_texts)
    assert quality["current"]["n_texts"] == n_texts
    for side in (quality["current"], reference):  # each text's gains average to the side's gain
        assert all(len(side["by_text"][k]) == side["n_texts"] for k in ("comprehensiveness_gain", "sufficiency_gain"))
        for gain in ("comprehensiveness_gain", "sufficiency_gain"):
            assert np.mean(side["by_text"][gain]) == pytest.approx(side[gain], abs=1e-5)
    metrics = read_json(out / "metrics.json")["drift"]
    assert metrics["explanation_comprehensiveness_gain"] == quality["current"]["comprehensiveness_gain"]
    change = quality["change"]["comprehensiveness_gain"]  # the interval on the batch minus the test split
    assert change["ci_low"] <= change["difference"] <= change["ci_high"]
    assert change["difference"] == pytest.approx(
        quality["current"]["comprehensiveness_gain"] - reference["comprehensiveness_gain"], abs=1e-5
    )
    assert metrics["explanation_comprehensiveness_gain_fell"] == int(change["verdict"] == "lower")
    assert f"interval {change['ci_low']:+.3f} to {change['ci_high']:+.3f}" in faithfulness_words(quality)
    page = (out / "explanation_report.html").read_text(encoding="utf-8")
    assert len(page) > 10_000 and "mass_top_word" in page  # Evidently's page of the same tests
    assert "Explanation Drift" in page and "Dataset Drift" not in page and "Data Drift" not in page
    landing = (out / "embeddings.html").read_text(encoding="utf-8")
    n = cfg.drift.sample_size
    assert f"Where {n} texts of tweets land among {n} training texts: sentence embeddings (PCA)" in landing
    assert f"tweets ({n})" in landing and f"training data ({n})" in landing


def test_held_out_labelled_batch_gets_estimate_and_truth_side_by_side(tiny_run):
    from glasswork.config import load_config
    from glasswork.drift import drift
    from glasswork.explain.global_view import global_sample

    root, _ = tiny_run
    cfg = load_config(tiny_overrides(root, "drift.current=test"))
    summary = drift(cfg)
    performance = summary["performance"]
    assert {"estimated_accuracy", "actual_accuracy", "reference_accuracy"} <= set(performance)
    # Calibrated on the validation split, not on the test texts the batch is drawn from.
    n_validation = len(pd.read_parquet(root / "data/processed/val.parquet"))
    assert performance["calibrated_on"] == f"validation split ({n_validation} rows, per class)"
    batch, probs = _drift_sample(cfg)
    labels = batch["label"].astype(str).map({"0": 0, "1": 1}).to_numpy()
    assert performance["actual_accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    # The explanation drift compares the explain step's global view of the test split with the
    # batch's other texts: the two samples share none (the 30 test texts less the view's 24).
    test = pd.read_parquet(root / "data/processed/test.parquet")
    outside = set(test["text"]) - set(global_sample(test, cfg)["text"])
    assert summary["explanation_drift"]["n_current"] == len(outside) == 6


def _drift_sample(cfg):
    """The drift step's sample of the current batch and the trained model's probabilities on it."""
    from glasswork.data.prepare import with_max_length
    from glasswork.models.backbone import load_tokenizer, load_trained, model_dir
    from glasswork.serving import predict_proba
    from glasswork.text_drift import current_batch

    cfg = with_max_length(cfg)
    batch = current_batch(cfg)
    batch = batch.sample(n=min(cfg.drift.sample_size, len(batch)), random_state=cfg.seed)
    path = model_dir(cfg)
    texts = batch["text"].fillna("").astype(str).tolist()
    probs = predict_proba(
        load_trained(path), load_tokenizer(path), texts, cfg.trainer.eval_batch_size, cfg.model.max_length
    )
    return batch, probs


def test_an_explain_step_older_than_the_faithfulness_reference_still_gives_the_batchs_own(tiny_run):
    from glasswork.drift import drift
    from glasswork.outputs import write_json

    root, cfg = tiny_run
    path = root / "artifacts" / "explain" / "global_importance.json"
    write_json(path, {k: v for k, v in read_json(path).items() if k != "faithfulness"})
    quality = drift(cfg)["explanation_drift"]["faithfulness"]
    assert quality["reference"] is None and quality["status"].startswith("no reference")
    assert set(quality["current"]) == {*FAITHFULNESS_SUMMARY, "n_texts", "by_text"}


def test_champion_loads_as_pyfunc_and_predicts(tiny_run):
    root, cfg = tiny_run
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_registry_uri(cfg.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    out = model.predict(pd.DataFrame({"text": ["a wonderful film", "dull and far too long", ""]}))
    assert list(out.columns) == ["label", "prob_rotten", "prob_fresh"]
    assert set(out["label"]) <= {"0", "1"}
    assert np.allclose(out[["prob_rotten", "prob_fresh"]].sum(axis=1), 1, atol=1e-5)
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["text"]


def test_one_mlflow_run_holds_params_curves_metrics_artifacts_and_lineage(tiny_run):
    root, cfg = tiny_run
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    run_id = read_json(root / "artifacts" / "train" / "run.json")["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["model.name"] == "tiny_bert" and run.data.params["data.split.train"] == "239"
    for key in (
        "test/accuracy",
        "test/macro_f1",
        "test/roc_auc",
        "test/ece",
        "val/macro_f1",
        "explain/ig_mean_abs_delta",
        "drift/share_drifted",
        "drift/embeddings_sentence_score",
        "drift/oov_share_drifted",
        "test_slice/true_class_fresh/accuracy",
        "test_slice/n_flagged",
        "data/train_truncated_share",
    ):
        assert key in run.data.metrics, key
    assert run.data.metrics["data/train_longest_tokens"] > 20  # reviews: tens of tokens
    assert len(client.get_metric_history(run_id, "train/loss")) >= 2  # a curve, not a number
    for tag in ("glasswork.git_commit", "glasswork.data_md5", "glasswork.registered_version"):
        assert run.data.tags.get(tag), tag
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"evaluate", "explain", "drift", "config", "data"} <= top
    version = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    assert version.run_id == run_id
    assert "seed: 42" in version.tags["glasswork.config"] and version.tags["glasswork.data_md5"]
    sliced = read_json(root / "artifacts" / "evaluate" / "slices.json")
    flagged = [row["slice"] for row in sliced["slices"] if row["flagged"]]
    assert version.tags["glasswork.flagged_slices"] == (", ".join(flagged) or "none")
    crossed = [row["slice"] for row in sliced["crossings"]["flagged"]]
    assert version.tags["glasswork.flagged_crossings"] == (", ".join(crossed) or "none")
