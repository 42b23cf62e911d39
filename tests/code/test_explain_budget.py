"""``explain.max_share_of_train``: the explain step sizes its global view to what is left of its
share of the training time, from what its first texts cost on this machine."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from tests.conftest import tiny_overrides

from glasswork.config import load_config
from glasswork.errors import ConfigError
from glasswork.explain.budget import MIN_GLOBAL_TEXTS, check_share, faithfulness_forwards, plan_global_view
from glasswork.explain.step import explain

E = OmegaConf.create(
    {"fractions": [0.1, 0.2, 0.5], "n_random": 2, "faithfulness_max_texts": 64, "global_n_steps": 4, "n_steps": 20}
)


def _plan(seconds_left: float, champion: bool = False) -> int:
    # 32 texts in 8.32 s: 0.26 s a text = 13 forwards (4 steps of 3, and the baseline) of 0.02 s.
    return plan_global_view(
        E,
        done=32,
        seconds_done=8.32,
        wanted=128,
        seconds_left=seconds_left,
        n_probe=12,
        n_projected=400,
        champion=champion,
    ).n_texts


def test_the_plan_keeps_the_largest_global_view_that_fits_and_never_fewer_than_32_texts():
    assert faithfulness_forwards(E) == 19  # the full text, then 3 fractions x delete/keep x (1 + 2 random)
    # The default: ERASER's 5 bins and 5 random rankings.
    assert faithfulness_forwards(load_config([]).explain) == 1 + 2 * 5 * (1 + 5)
    # n texts cost (n - 32) x 0.26 s more, 19 forwards (0.38 s) each for the first 64, and 8 s of map:
    # within 40 s, 0.64 n - 0.32 <= 40 gives 63.
    assert _plan(40.0) == 63
    assert _plan(1_000.0) == 128
    assert _plan(0.0) == _plan(-50.0) == MIN_GLOBAL_TEXTS
    # A champion to compare with costs its probe and its faithfulness on the same texts: fewer fit.
    assert MIN_GLOBAL_TEXTS < _plan(80.0, champion=True) < _plan(80.0)


@pytest.mark.parametrize("share", [0, -0.1, 1.5, True, "fast"])
def test_a_share_that_is_not_in_0_1_is_refused(share):
    with pytest.raises(ConfigError, match=r"explain.max_share_of_train=.*expected a share of the training time"):
        check_share(share)
    check_share(None)
    check_share(0.2)
    check_share(1)


def _global(root):
    view = json.loads((root / "artifacts/explain/global_importance.json").read_text())
    page = (root / "artifacts/explain/attributions.html").read_text(encoding="utf-8")
    return view["n_texts"], page


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_the_global_view_shrinks_to_the_budget_and_says_so(tiny_run, caplog, monkeypatch):
    root, _ = tiny_run
    # The tiny run's test split holds 30 texts: a smallest view of 8 leaves room to shrink.
    monkeypatch.setattr("glasswork.explain.global_view.MIN_GLOBAL_TEXTS", 8)
    monkeypatch.setattr("glasswork.explain.budget.MIN_GLOBAL_TEXTS", 8)
    # The tiny model trained in a few seconds: 1% of that leaves room for the smallest view only.
    cfg = load_config(tiny_overrides(root, "explain.global_max_texts=null", "explain.max_share_of_train=0.01"))
    metrics = explain(cfg)
    n_texts, page = _global(root)
    assert n_texts == metrics["global/n_texts"] == 8
    # The cascading randomisation check ran on 16 texts, its curve drawn: the tiny model's head,
    # its 2 layers and its embeddings, one Spearman each.
    assert metrics["sanity_n_texts"] == 16
    curve = [k for k in range(1, 9) if f"integrated_gradients/randomisation_spearman_{k}" in metrics]
    assert curve == [1, 2, 3, 4]
    assert (root / "artifacts/explain/randomisation.png").read_bytes()[:4] == b"\x89PNG"
    assert "Model-randomisation check" in page and "bins 1%, 5%, 10%, 20%, 50%" in page
    # Every method is measured against the same random rankings.
    assert len({metrics[f"{m}/random_sufficiency_aopc"] for m in cfg.explain.methods}) == 1
    assert "the global view takes 8 of its 30 texts" in caplog.text and "explain.max_share_of_train" in caplog.text
    assert "the global view took 8 of 30 texts" in page
    # Without a budget the same settings explain the whole test split.
    explain(load_config(tiny_overrides(root, "explain.global_max_texts=null")))
    whole, page = _global(root)
    assert whole == 30 and "the global view took" not in page
