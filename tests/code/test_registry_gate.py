"""The registry gate: a worse model is registered but never takes `champion`."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sklearn.metrics import f1_score
from tests.conftest import learnable_overrides, tiny_overrides

from glasswork.champion_comparison import check_promote_if, paired_difference
from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.outputs import read_json
from glasswork.registry import decide, register
from glasswork.steps import STEPS

RULE = OmegaConf.create({"bound": "lower", "above": -0.02, "confidence": 0.95})


def _comparison(difference: float, low: float, high: float) -> dict:
    return {
        "metric": "macro_f1",
        "challenger": 0.80 + difference,
        "champion": 0.80,
        "difference": difference,
        "ci_low": low,
        "ci_high": high,
        "confidence": 0.95,
        "n_texts": 1000,
    }


def test_decide_needs_every_threshold():
    d = decide({"accuracy": 0.8, "macro_f1": 0.6}, {"accuracy": 0.75, "macro_f1": 0.7}, RULE, None)
    assert not d.promote and any("macro_f1 = 0.6000 is below the threshold 0.7" in r for r in d.reasons)


def test_decide_judges_the_interval_not_the_point_estimate():
    # Better on the point estimate, but the interval reaches 0.05 below the champion: refused.
    unsure = decide({"macro_f1": 0.801}, {}, RULE, ("3", _comparison(0.001, -0.05, 0.052)))
    assert not unsure.promote and "FAILS the rule" in unsure.reasons[-1]
    assert "+0.0010 on the same 1000 test examples (95% interval -0.0500 to +0.0520)" in unsure.reasons[-1]
    # Worse on the point estimate, but shown to be at most 0.015 worse: takes over.
    close = decide({"macro_f1": 0.797}, {}, RULE, ("3", _comparison(-0.003, -0.015, 0.009)))
    assert close.promote and close.champion_comparison["ci_low"] == -0.015 and close.champion_score == 0.80
    # The upper-bound rule refuses only a challenger shown to be worse.
    lenient = OmegaConf.merge(RULE, {"bound": "upper", "above": 0.0})
    assert decide({"macro_f1": 0.801}, {}, lenient, ("3", _comparison(0.001, -0.05, 0.052))).promote
    assert not decide({"macro_f1": 0.7}, {}, lenient, ("3", _comparison(-0.1, -0.15, -0.05))).promote


def test_the_paired_interval_covers_the_true_difference_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    n = 1000
    truth = rng.integers(0, 2, n)
    champion_right = rng.uniform(size=n) < 0.8
    # The challenger agrees with the champion except on 60 texts, where it is right on 40.
    challenger_right = champion_right.copy()
    changed = rng.choice(n, 60, replace=False)
    challenger_right[changed] = np.arange(60) < 40

    def probs(right):
        predicted = np.where(right, truth, 1 - truth)
        return np.where(predicted[:, None] == np.arange(2), 0.9, 0.1)

    result = paired_difference(truth, probs(challenger_right), probs(champion_right), "accuracy", 0.95, seed=0)
    assert result["difference"] == pytest.approx(challenger_right.mean() - champion_right.mean())
    assert result["ci_low"] < result["difference"] < result["ci_high"]
    # Paired, only the texts the two disagree on (about 24) move it: sd about sqrt(24)/1000, a
    # 95% interval about 0.02 wide; resampling each model's texts apart would give about 0.07.
    assert 0.01 < result["ci_high"] - result["ci_low"] < 0.03
    f1 = paired_difference(truth, probs(challenger_right), probs(champion_right), "macro_f1", 0.95, seed=0)
    assert f1["champion"] == pytest.approx(f1_score(truth, probs(champion_right).argmax(1), average="macro"))
    auc = paired_difference(truth, probs(challenger_right), probs(champion_right), "roc_auc", 0.9, seed=0)
    assert auc["ci_low"] < auc["difference"] < auc["ci_high"] and "400 resamples" in auc["method"]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("registry.promote_if.bound=lowest", "registry.promote_if.bound='lowest': expected 'lower'"),
        ("registry.promote_if.above=2", "registry.promote_if.above=2.0: expected a difference"),
        ("registry.promote_if.confidence=95", "registry.promote_if.confidence=95.0: expected a level in [0.5, 1)"),
    ],
)
def test_a_promotion_rule_that_states_nothing_is_refused(tmp_path, override, words):
    cfg = load_config(tiny_overrides(tmp_path, override))
    with pytest.raises(ConfigError) as caught:
        check_promote_if(cfg.registry.promote_if)
    assert words in str(caught.value)
    check_promote_if(load_config(tiny_overrides(tmp_path)).registry.promote_if)  # the default states a rule


def _run_steps(cfg) -> dict:
    results = {}
    for step in STEPS:
        results[step.name] = step.function()(cfg)
    return results


@pytest.mark.slow  # trains and registers two models through the pipeline's steps
def test_a_worse_model_never_takes_champion(tmp_path):
    good = load_config(learnable_overrides(tmp_path, "data.slice_columns=[source]"))
    first = _run_steps(good)
    assert first["evaluate"]["accuracy"] >= 0.9, "the tiny model should learn the one-word rule"
    assert first["register"]["promote"]
    sliced = {row["slice"]: row["n"] for row in read_json(tmp_path / "artifacts/evaluate/slices.json")["slices"]}
    assert sliced["source = web"] + sliced["source = print"] == first["evaluate"]["n"]  # the metadata slices
    assert "meta:source" in read_json(tmp_path / "artifacts/drift/drift.json")["columns"]  # and a drift signal
    # The register step run again on the same run: one training run, one version; the champion is
    # this very model, so there is no rival's explanations to compare with and no gate holds it back.
    again = register(good)
    assert again["promote"] and again["version"] == "1", again["reasons"]
    itself = again["champion_comparison"]  # the same predictions: no difference, no spread
    assert (itself["difference"], itself["ci_low"], itself["ci_high"]) == (0.0, 0.0, 0.0) and itself["passed"]

    # Same data and test split, but the weights never move: a coin-flip model.
    bad = load_config(learnable_overrides(tmp_path, "data.slice_columns=[source]", "model.lr=0.0"))
    second = _run_steps(bad)
    assert second["evaluate"]["macro_f1"] < first["evaluate"]["macro_f1"]
    assert not second["register"]["promote"]
    versus = second["register"]["champion_comparison"]  # registration.json: the paired difference
    assert versus["metric"] == "macro_f1" and versus["n_texts"] == first["evaluate"]["n"]
    assert versus["difference"] == pytest.approx(second["evaluate"]["macro_f1"] - first["evaluate"]["macro_f1"])
    assert versus["ci_low"] <= versus["difference"] <= versus["ci_high"] < -0.02 and not versus["passed"]
    assert versus == read_json(tmp_path / "artifacts/register/registration.json")["champion_comparison"]
    rule = "FAILS the rule that the 95% interval of challenger − champion on test macro_f1 lies above -0.02"
    assert rule in " ".join(second["register"]["reasons"])
    # ... and on the same texts, slice by slice (McNemar): the coin flip loses most of them.
    slices = {row["slice"]: row for row in second["register"]["slices_vs_champion"]}
    assert slices and all(row["lost"] >= row["won"] for row in slices.values())
    assert {"source = web", "source = print"} <= set(slices)
    regressed = [name for name, row in slices.items() if row["regressed"]]
    assert regressed and all(f"slice '{name}'" in " ".join(second["register"]["reasons"]) for name in regressed)
    assert first["register"]["slices_vs_champion"] == []  # no champion to compare with yet

    client = MlflowClient(tracking_uri=good.tracking.uri, registry_uri=good.tracking.uri)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{good.registry.model_name}'"))
    assert versions == [1, 2]  # the worse model is registered (for the record) ...
    assert (
        str(client.get_model_version_by_alias(good.registry.model_name, "champion").version) == "1"
    )  # ... not promoted


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_champion_from_another_split_is_rescored_on_this_one(tiny_run):
    import mlflow
    from tests.conftest import tiny_overrides

    from glasswork.data.prepare import load_split, prepare
    from glasswork.evaluate import classification_metrics, evaluate
    from glasswork.registry import register
    from glasswork.train import train

    root, _ = tiny_run
    cfg = load_config(tiny_overrides(root, "seed=7"))  # another seed: another test split
    prepare(cfg)
    train(cfg)
    evaluate(cfg)
    record = register(cfg)
    assert record["champion_version"] == "1"

    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_registry_uri(cfg.tracking.uri)
    test = load_split(cfg, "test")
    # The registry's own figure for v1 must be v1 scored on *this* split, not its tagged one.
    out = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/1").predict(test[["text"]])
    expected = classification_metrics(test["label"].to_numpy(), out[["prob_rotten", "prob_fresh"]].to_numpy())
    assert record["champion_score"] == pytest.approx(expected["macro_f1"])


def test_the_champions_per_text_results_come_from_its_logged_predictions(monkeypatch, tmp_path, caplog):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from glasswork.champion import _logged_probs

    test = pd.DataFrame({"text": ["good", "bad", "fine"], "label": [1, 0, 1]})
    logged = pd.DataFrame(
        {
            "text": test["text"],
            "actual": ["pos", "neg", "pos"],
            "predicted": ["pos", "pos", "pos"],
            "prob_neg": [0.1, 0.4, 0.3],
            "prob_pos": [0.9, 0.6, 0.7],
        }
    )
    names = ["neg", "pos"]

    def _logged_right(run_id, test):
        probs = _logged_probs(run_id, test, names)
        return None if probs is None else probs.argmax(axis=1) == test["label"].to_numpy()

    def download(rows):
        def fake(run_id, artifact_path, dst_path):
            path = tmp_path / "predictions.parquet"
            rows.to_parquet(path, index=False)
            return str(path)

        return fake

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download(logged))
    assert _logged_right("run", test).tolist() == [True, False, True]
    # Another split's predictions (a text differs): no per-text comparison, and the log says why.
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download(logged.assign(text=["good", "bad", "x"])))
    assert _logged_right("run", test) is None and "not of this test split" in caplog.text

    def only_csv(run_id, artifact_path, dst_path):  # a champion logged before predictions were Parquet
        if artifact_path.endswith(".parquet"):
            raise MlflowException("no such artifact")
        path = tmp_path / "predictions.csv"
        logged.to_csv(path, index=False)
        return str(path)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", only_csv)
    assert _logged_right("run", test).tolist() == [True, False, True]

    def missing(**_):
        raise MlflowException("run 'run' not found")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", missing)
    assert _logged_right("run", test) is None and "no predictions of the champion's run run" in caplog.text
