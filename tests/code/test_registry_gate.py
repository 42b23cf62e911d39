"""The registry gate: a worse model is registered but never takes `champion`."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import learnable_overrides

from glasswork.config import load_config
from glasswork.outputs import read_json
from glasswork.registry import decide, register
from glasswork.steps import STEPS


def test_decide_needs_every_threshold():
    d = decide({"accuracy": 0.8, "macro_f1": 0.6}, {"accuracy": 0.75, "macro_f1": 0.7}, "macro_f1", 0.0, None)
    assert not d.promote and any("macro_f1 = 0.6000 is below the threshold 0.7" in r for r in d.reasons)


def test_decide_refuses_a_worse_challenger_and_allows_a_tie():
    worse = decide({"macro_f1": 0.79}, {}, "macro_f1", 0.0, ("3", 0.80))
    assert not worse.promote and "worse than champion v3" in worse.reasons[-1]
    tie = decide({"macro_f1": 0.80}, {}, "macro_f1", 0.0, ("3", 0.80))
    assert tie.promote
    tolerated = decide({"macro_f1": 0.79}, {}, "macro_f1", 0.02, ("3", 0.80))
    assert tolerated.promote
    # The same model trained again, the champion's score read back from a tag of 6 decimals that
    # rounded it up (0.8074296 -> "0.807430"): not worse.
    again = decide({"macro_f1": 0.8074296}, {}, "macro_f1", 0.0, ("3", float(f"{0.8074296:.6f}")))
    assert again.promote, again.reasons


def _run_steps(cfg) -> dict:
    results = {}
    for step in STEPS:
        results[step.name] = step.function()(cfg)
    return results


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
    assert "not worse than champion v1" in " ".join(again["reasons"])

    # Same data and test split, but the weights never move: a coin-flip model.
    bad = load_config(learnable_overrides(tmp_path, "data.slice_columns=[source]", "model.lr=0.0"))
    second = _run_steps(bad)
    assert second["evaluate"]["macro_f1"] < first["evaluate"]["macro_f1"]
    assert not second["register"]["promote"]
    assert "worse than champion v1" in " ".join(second["register"]["reasons"])
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

    from glasswork.registry import _logged_right

    test = pd.DataFrame({"text": ["good", "bad", "fine"], "label": [1, 0, 1]})
    logged = pd.DataFrame({"text": test["text"], "actual": ["pos", "neg", "pos"], "predicted": ["pos", "pos", "pos"]})

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
