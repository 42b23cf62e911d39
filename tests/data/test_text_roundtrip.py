"""Texts survive every file the pipeline writes: carriage returns, newlines, tabs, quotes,
delimiters, NUL, zero-width and right-to-left marks, emoji and 100 kB texts come back from the
splits, the probe, the evaluate step's predictions, the explanations' texts and the monitor's
predictions exactly as they went in (a tweet with a lone carriage return once broke the CSV that
the drift step read back)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from tests.conftest import learnable_overrides, learnable_rows

from glasswork import tracking
from glasswork.cli import main
from glasswork.config import load_config
from glasswork.data.prepare import load_probe
from glasswork.models.backbone import load_tokenizer, load_trained, model_dir
from glasswork.serving import HeadTailTokenizer, predict_proba
from glasswork.steps import STEPS

# odd_run takes a table of odd texts through every step of the pipeline, once for the module.
pytestmark = pytest.mark.slow

ODD = [
    "lone\rcarriage return",
    "windows\r\nline end",
    "two\n\nparagraphs",
    "a\ttab",
    'double "quotes", and a comma',
    "single 'quotes'; a semicolon",
    "nul\x00inside",
    "zero\u200bwidth\u200djoiner",
    "right\u200fto\u202eleft",
    "emoji 🎬👩‍👩‍👧 here",
]


def _odd_table(n: int = 240) -> pd.DataFrame:
    rows = []
    for i, (text, label) in enumerate(learnable_rows(n)):
        if i % 4 == 0:  # every fourth text carries one oddity (a number keeps each one unique)
            text = f"{text} {ODD[(i // 4) % len(ODD)]} #{i}"
        if i in (8, 16):
            text = f"{text} " + "long " * 20_000  # 100 kB
        rows.append((text, label))
    return pd.DataFrame(rows, columns=["review", "sentiment"])


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    table = root / "odd.parquet"
    frame = _odd_table()
    frame.to_parquet(table)
    cfg = load_config(
        learnable_overrides(root, f"data.path={table}", "explain.n_probe=24", "model.truncation=head+tail")
    )
    for step in STEPS:
        step.function()(cfg)
    return root, cfg, frame


def test_the_splits_and_the_probe_hold_every_text_as_it_was(odd_run):
    root, cfg, frame = odd_run
    kept = pd.concat(pd.read_parquet(root / f"data/processed/{s}.parquet") for s in ("train", "val", "test"))
    assert sorted(kept["text"]) == sorted(frame["review"].str.strip())
    assert sum(any(odd in t for odd in ODD) for t in kept["text"]) == 60
    probe = load_probe(cfg)
    test = pd.read_parquet(root / "data/processed/test.parquet")
    assert len(probe) == 24 and set(probe["text"]) <= set(test["text"])


def test_the_evaluate_steps_predictions_hold_every_test_text(odd_run):
    root, _, _ = odd_run
    test = pd.read_parquet(root / "data/processed/test.parquet")
    predictions = pd.read_parquet(root / "artifacts/evaluate/predictions.parquet")
    assert predictions["text"].tolist() == test["text"].tolist()
    for_plots = pd.read_csv(root / "artifacts/evaluate/predictions.csv")  # no texts: one row each
    assert len(for_plots) == len(test)


def test_the_explanations_hold_the_probe_texts_unchanged(odd_run):
    root, cfg, _ = odd_run
    probe = load_probe(cfg)["text"].tolist()
    assert sum(any(odd in t for odd in ODD) for t in probe) >= 3
    explained = json.loads((root / "artifacts/explain/attributions.json").read_text(encoding="utf-8"))
    for method, items in explained.items():
        assert [item["text"] for item in items] == probe, method
    # The pages wrap a text for display (embeddings.html's hover, attributions.html's heat map);
    # the data they are drawn from is the json above.


def test_the_monitors_predictions_hold_every_batch_row(odd_run, capsys):
    root, cfg, frame = odd_run
    batch = root / "batch.parquet"
    frame.rename(columns={"review": "text", "sentiment": "label"}).to_parquet(batch)
    overrides = learnable_overrides(root, "monitor.sample_size=120", f"registry.model_name={cfg.registry.model_name}")
    assert main(["monitor", str(batch), *overrides]) in (0, 1), capsys.readouterr().err
    folder = sorted(p for p in (root / "artifacts/monitor").iterdir() if not p.name.startswith("."))[-1]
    scored = pd.read_parquet(folder / "predictions.parquet")
    assert scored["text"].tolist() == frame["review"].tolist()


def test_the_registered_model_cuts_long_texts_as_training_did(odd_run):
    root, cfg, frame = odd_run
    path = model_dir(cfg)
    assert json.loads((path / "labels.json").read_text())["truncation"] == "head+tail"
    tracking.configure(cfg)
    served = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/1")
    # MLflow loads serving.py as a module of its own: the class is compared by name.
    assert type(served.unwrap_python_model().tokenizer).__name__ == HeadTailTokenizer.__name__
    predictions = pd.read_parquet(root / "artifacts/evaluate/predictions.parquet")
    columns = [c for c in predictions.columns if c.startswith("prob_")]
    np.testing.assert_allclose(
        served.predict(predictions[["text"]])[columns].to_numpy(), predictions[columns].to_numpy(), atol=1e-5
    )
    long = frame.loc[frame["review"].str.len() > 50_000, ["review"]].rename(columns={"review": "text"})
    expected = predict_proba(
        load_trained(path), load_tokenizer(path), long["text"].tolist(), max_length=cfg.model.max_length
    )
    np.testing.assert_allclose(served.predict(long)[columns].to_numpy(), expected, atol=1e-5)
