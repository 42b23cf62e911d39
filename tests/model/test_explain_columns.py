"""Table explanations: one score per column (a category's one-hot block summed back to it), a
faithfulness measure that tells a right ranking of columns from a wrong one, and the explain step
on a trained MLP: the column the label depends on ranks first, deleting it beats chance, the
randomisation check sees the layers turn random, the user's column names and categories are
escaped, and the champion contrast feeds the register step's faithfulness gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests.code.test_tabular_task import table_overrides
from torch import nn

from glasswork.config import load_config
from glasswork.data.tabular import OTHER, Columns, Preprocessor
from glasswork.errors import ConfigError
from glasswork.explain.columns import (
    METHODS,
    Probabilities,
    column_mask,
    column_sums,
    dependence_values,
    explain_columns,
    faithfulness_columns,
)
from glasswork.explain.pixels import agreement
from glasswork.explain.sanity import randomisation_check
from glasswork.explain.table_step import explain_tables
from glasswork.outputs import read_json
from glasswork.steps import get

ART = "artifacts/tabular_classification"
TENURE, PLAN, SPEND = "tenure months", "plan <b>&", "spend $ (usd)"  # odd names: HTML and mathtext
PLANS = ["basic", "pro", "<script>alert(1)</script>", 'a & "b"']


# --- the methods and the measure on a model whose logit reads one categorical column -----------


def _frame(n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    categories = rng.choice(["a", "b", "c"], n, p=[0.5, 0.25, 0.25])  # "a" the mode: the baseline
    return pd.DataFrame({"x": rng.normal(size=n), "c": categories, "z": rng.normal(size=n)})


class CategoryModel(nn.Module):
    """Class 1's logit is 3 when the row's category is ``b``, -3 otherwise: nothing else counts."""

    def __init__(self, pre: Preprocessor):
        super().__init__()
        self.linear = nn.Linear(pre.width, 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.tensor([0.0, -3.0]))
            self.linear.weight[1, pre.blocks["c"].start + pre.categorical["c"].index("b")] = 6.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def _setup():
    frame = _frame()
    pre = Preprocessor.fit(frame, Columns(["x", "z"], ["c"]))
    x = torch.from_numpy(pre.transform(frame)[0])
    return frame, pre, x, torch.from_numpy(pre.fill_row()), column_mask(pre)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_scores_columns_and_finds_the_one_the_model_reads(method):
    frame, pre, x, fill, mask = _setup()
    model = CategoryModel(pre)
    assert pre.columns == ["x", "z", "c"] and mask.tolist() == [[0, 1, 2, 2, 2, 2]]  # (other), a, b, c
    scores = explain_columns(model, x, fill, mask, [1] * len(x), [method], n_steps=64, shap_samples=32)[method]
    assert scores.shape == (len(frame), 3)  # one score per column, not per one-hot position
    assert np.abs(scores[:, :2]).max() < 1e-3  # x and z: the model never reads them
    read = (frame["c"] == "b").to_numpy()  # "a", the mode, is the baseline: from it only "b" moves the logit
    assert read.any() and (np.abs(scores[read, 2]) > 0.3).all() and np.abs(scores[~read, 2]).max() < 1e-3
    if method == "integrated_gradients":  # completeness: the columns' scores add up to p(x) - p(baseline)
        with torch.no_grad():
            probs = Probabilities(model)
            expected = (probs(x)[:, 1] - probs(fill[None])[0, 1]).numpy()
        np.testing.assert_allclose(scores.sum(1), expected, atol=2e-3)


def test_faithfulness_ranks_the_right_columns_above_chance_and_the_wrong_ones_below():
    frame, pre, x, fill, mask = _setup()
    model = CategoryModel(pre)
    x = x[torch.from_numpy((frame["c"] == "b").to_numpy())]  # rows whose category the model reads
    targets = Probabilities(model)(x).argmax(1).tolist()
    right = np.tile([0.0, 0.0, 1.0], (len(x), 1))  # the category first
    wrong = np.tile([1.0, 0.5, 0.0], (len(x), 1))  # the category last
    metrics = faithfulness_columns(model, x, fill, mask, targets, {"right": right, "wrong": wrong}, [0.1, 0.5])
    # 3 columns: 10% and 50% are one and two columns, the category first for "right".
    assert metrics["right/comprehensiveness_aopc"] > metrics["right/random_comprehensiveness_aopc"] + 0.1
    assert metrics["wrong/comprehensiveness_aopc"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["right/sufficiency_aopc"] == pytest.approx(0.0, abs=1e-6)  # the category alone keeps it all
    assert metrics["right/comprehensiveness_gain"] > 0 > metrics["wrong/comprehensiveness_gain"]
    assert metrics["right/sufficiency_gain"] > 0 > metrics["wrong/sufficiency_gain"]


def test_a_columns_dependence_values_are_its_training_quantiles_or_categories():
    frame, pre, *_ = _setup()
    values = dependence_values(frame, pre, "x", n_points=5)
    assert values == sorted(values) and values[0] == frame["x"].min() and values[-1] == frame["x"].max()
    assert dependence_values(frame, pre, "c") == ["a", "b", "c"] and OTHER in pre.categorical["c"]


# --- the explain step on a trained MLP ----------------------------------------------------------


def write_one_column_table(path: Path, n: int = 400, seed: int = 0) -> Path:
    """The label depends on the tenure alone (churned under 30 months); four columns of noise,
    with names and categories that HTML and matplotlib's mathtext would otherwise read."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, n)
    frame = pd.DataFrame(
        {
            TENURE: tenure.round(1),
            PLAN: rng.choice(PLANS, n),
            SPEND: rng.normal(50, 15, n).round(2),
            "region": rng.choice(["north", "south", "east"], n),
            "age": rng.integers(18, 80, n),
            "churn": np.where(tenure < 30, "churned", "stayed"),
        }
    )
    frame.to_csv(path, index=False)
    return path


EXPLAIN = (  # a few epochs of a few batches: the train step's own overhead is most of its time
    "trainer.max_epochs=6",
    "trainer.limit_train_batches=1.0",
    "trainer.batch_size=64",
    "trainer.log_every_n_steps=50",
    "model.lr=0.01",
    "explain.methods=[integrated_gradients,kernel_shap,feature_ablation]",
    "explain.sanity_methods=[integrated_gradients,feature_ablation]",
    "explain.n_probe=4",
    "explain.n_steps=16",
    "explain.global_n_steps=8",
    "explain.global_max_texts=null",
    "explain.shap_samples=32",
)
SANITY = ("integrated_gradients", "feature_ablation")


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("table-explain")
    cfg = load_config(table_overrides(root, write_one_column_table(root / "customers.csv"), *EXPLAIN))
    for name in ("ingest", "prepare", "train", "evaluate"):
        get(name).function()(cfg)
    return cfg, root, explain_tables(cfg)


@pytest.mark.slow  # explained: the table pipeline's steps, once a module
def test_the_column_the_label_depends_on_ranks_first_and_deleting_it_beats_chance(explained):
    cfg, root, metrics = explained
    out = root / ART / "explain"
    importance = read_json(out / "global_importance.json")
    assert importance["columns"][0]["column"] == TENURE, importance["columns"]
    assert importance["n_rows"] == 40  # global_max_texts=null: the whole test split
    for method in METHODS:
        assert metrics[f"{method}/comprehensiveness_gain"] > 0.05, (method, metrics)
    attributions = read_json(out / "attributions.json")
    first = attributions["columns"].index(TENURE)
    top = np.abs(np.asarray(attributions["scores"]["integrated_gradients"])).argmax(1)
    assert (top == first).mean() >= 0.75, top  # the probe rows: tenure carries the prediction
    curve = importance["dependence"]
    assert curve["column"] == TENURE and curve["kind"] == "numeric"
    churned = np.asarray(curve["mean_probability"])[:, curve["classes"].index("churned")]
    assert churned[0] > 0.8 > 0.2 > churned[-1], churned  # short tenure: churned; long: stayed


@pytest.mark.slow  # explained: the table pipeline's steps, once a module
def test_the_outputs_keep_the_image_steps_keys_and_escape_the_users_text(explained):
    cfg, root, metrics = explained
    out = root / ART / "explain"
    assert {p.name for p in out.iterdir()} == {
        "attributions.html", "attributions.json", "contrast.json", "dependence.png", "faithfulness.png",
        "global_importance.json", "global_importance.png", "metrics.json", "randomisation.png",
    }  # fmt: skip
    assert read_json(out / "metrics.json")["explain"] == metrics
    assert {"agreement/integrated_gradients_vs_kernel_shap", "integrated_gradients/sufficiency_gain",
            "kernel_shap/comprehensiveness_aopc", "feature_ablation/random_sufficiency_aopc",
            "integrated_gradients/randomisation_spearman_mean", "probe_accuracy"} <= set(metrics)  # fmt: skip
    assert read_json(out / "contrast.json") == {
        "method": "integrated_gradients",
        "status": "no champion to compare with",
    }
    attributions = read_json(out / "attributions.json")
    assert set(attributions["columns"]) == {TENURE, PLAN, SPEND, "region", "age"}
    assert len(attributions["rows"]) == 4 and set(attributions["rows"][0]["values"]) == set(attributions["columns"])
    assert {np.asarray(s).shape for s in attributions["scores"].values()} == {(4, 5)}
    page = (out / "attributions.html").read_text(encoding="utf-8")
    shown = {row["values"][PLAN] for row in attributions["rows"]}
    assert shown - {"basic", "pro"}, shown  # the probe holds a category to escape
    assert "plan &lt;b&gt;&amp;" in page and PLAN not in page
    assert "<script" not in page and 'a & "b"' not in page
    escaped = {"<script>alert(1)</script>": "&lt;script&gt;alert(1)&lt;/script&gt;", 'a & "b"': "a &amp; &quot;b&quot;"}
    assert all(escaped[plan] in page for plan in shown if plan in escaped)


@pytest.mark.slow  # explained: the table pipeline's steps, once a module
def test_randomised_layers_part_the_explanations_from_the_trained_models(explained):
    cfg, root, metrics = explained
    assert not any(k.startswith("kernel_shap/randomisation") for k in metrics)  # not in explain.sanity_methods
    for method in SANITY:  # every layer random: the columns' ranking is no longer the trained one
        assert metrics[f"{method}/randomisation_spearman"] < 0.9, (method, metrics)
        assert min(metrics[f"{method}/randomisation_spearman_{k}"] for k in (1, 2, 3)) < 0.8
    # An "explanation" that reads the row but not the weights stays the same and fails the check.
    from glasswork.data.prepare import load_split
    from glasswork.tasks.tabular import TablePredictor

    predictor = TablePredictor(root / ART / "train" / "model")
    x = predictor.features(load_split(cfg, "test").head(16))
    blind = column_sums(torch.from_numpy(np.abs(x - predictor.pre.fill_row())), column_mask(predictor.pre))
    found, curves = randomisation_check(
        predictor.net, lambda model: {"blind": blind}, agreement, seed=0, max_spearman=0.5
    )
    assert list(curves["blind"]) == ["classifier", "dense 2", "dense 1"]
    assert found["blind/randomisation_spearman_mean"] == pytest.approx(1.0) and found["blind/randomisation_passed"] == 0


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("explain.methods=[integrated_gradients,lime]", "explain.methods"),
        ("explain.methods=[]", "explain.methods"),
        ("explain.sanity_methods=[attention_rollout]", "explain.sanity_methods"),
        ("explain.shap_samples=0", "explain.shap_samples"),
    ],
)
def test_a_bad_setting_is_refused_naming_it_before_anything_is_read_or_written(tmp_path, override, setting):
    cfg = load_config(table_overrides(tmp_path, tmp_path / "nothing.csv", *EXPLAIN, override))
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        explain_tables(cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # explained: the table pipeline's steps, once a module
def test_the_champion_is_measured_on_the_same_rows_and_the_faithfulness_gate_reads_it(explained):
    # Last in the file: it registers, retrains and re-explains in the shared folder.
    cfg, root, _ = explained
    first = get("register").function()(cfg)
    assert first["promote"], first["reasons"]
    retrained = load_config(table_overrides(root, root / "customers.csv", *EXPLAIN, "seed=7"))
    for name in ("train", "evaluate"):
        get(name).function()(retrained)
    metrics = explain_tables(retrained)
    versus = read_json(root / ART / "explain" / "contrast.json")
    assert versus["status"] == "compared with champion v1" and versus["champion_version"] == "1"
    paired = versus["global_faithfulness"]
    assert paired["n_texts"] == 40 and set(paired["change"]) == {"comprehensiveness_gain", "sufficiency_gain"}
    assert len({paired["champion"]["comprehensiveness_gain"], paired["this_model"]["comprehensiveness_gain"]}) == 2
    assert "contrast/global_comprehensiveness_gain_change" in metrics
    second = get("register").function()(retrained)
    # The gate read contrast.json: either a gain fell, or the line that says none did.
    assert any(r.startswith("integrated gradients'") and "from champion v1's on 40 test examples" in r
               for r in second["reasons"]), second["reasons"]  # fmt: skip
