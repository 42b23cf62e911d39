"""Evidently drift wrapper: verdicts on synthetic frames, HTML/JSON outputs, loud failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from glasswork.drift_report import _parse_snapshot, build_drift_report

ADJ = ["great", "boring", "brilliant", "dull", "moving", "clumsy", "charming", "tedious"]
NOUN = ["film", "movie", "plot", "cast", "script", "ending", "soundtrack", "story"]
TEMPLATES = ["The {n} was {a}.", "I loved the {a} {n}.", "A {a} {n}, honestly.", "What a {a} {n}!"]
HANDLES = ["@nasa", "@bbcnews", "@github", "@openai"]
TAGS = ["#crypto", "#ai", "#breaking", "#python", "#moon"]
WORDS = ["rocket", "launch", "price", "pump", "server", "deploy", "outage", "thread"]
# The default text test (percentile vs 1000 random classifiers) takes ~5 s per computation and
# Evidently runs it three times per report; the absolute-AUC test gives the same verdicts here.
FAST = {"text_columns": ["text"], "numerical_columns": ["length", "words", "proba"]}
FAST_TEXT = "abs_text_content_drift"


def _frame(texts: list[str], proba: np.ndarray) -> pd.DataFrame:
    text = pd.Series(texts)
    return pd.DataFrame(
        {
            "text": text,
            "length": text.str.len(),
            "words": text.str.split().str.len(),
            "proba": proba,
        }
    )


def reviews(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [str(rng.choice(TEMPLATES)).format(a=rng.choice(ADJ), n=rng.choice(NOUN)) for _ in range(n)]
    return _frame(texts, rng.beta(2, 2, n))


def tweets(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        tokens = [
            *rng.choice(WORDS, rng.integers(12, 30)),
            *rng.choice(HANDLES, 2),
            *rng.choice(TAGS, 3),
        ]
        rng.shuffle(tokens)
        texts.append(" ".join(tokens))
    return _frame(texts, rng.beta(8, 1.5, n))


def _check_outputs(result, tmp_path) -> dict:
    html = result.save_html(tmp_path / "report" / "drift.html")
    assert html.stat().st_size > 0
    # Self-contained: Evidently inlines its scripts rather than loading them from a CDN.
    assert "<script src=" not in html.read_text(encoding="utf-8")
    summary = json.loads(json.dumps(result.to_dict()))
    assert set(summary["columns"]) == {"text", "length", "words", "proba"}
    return summary


def test_same_distribution_is_not_drift(tmp_path):
    result = build_drift_report(reviews(300, 0), reviews(300, 1), text_method=FAST_TEXT, **FAST)

    assert result.dataset_drift is False
    assert result.n_drifted == 0 and result.share_drifted == 0.0 and result.n_columns == 4
    summary = _check_outputs(result, tmp_path)
    assert summary["columns"]["proba"]["method"] == "K-S p_value"
    assert summary["columns"]["proba"]["threshold"] == pytest.approx(0.05)


def test_different_texts_are_drift(tmp_path):
    result = build_drift_report(reviews(300, 0), tweets(300, 2), text_method=FAST_TEXT, **FAST)

    assert result.dataset_drift is True
    assert result.n_drifted == 4 and result.share_drifted == 1.0
    assert all(column["drifted"] for column in result.columns.values())
    summary = _check_outputs(result, tmp_path)
    assert summary["dataset_drift"] is True


def test_missing_column_is_rejected():
    with pytest.raises(ValueError, match="missing"):
        build_drift_report(reviews(20, 0), reviews(20, 1).drop(columns="proba"), **FAST)


class _FakeSnapshot:
    def __init__(self, data: dict):
        self._data = data

    def dict(self) -> dict:
        return self._data


def test_unexpected_snapshot_shape_raises():
    with pytest.raises(RuntimeError, match="DriftedColumnsCount"):
        _parse_snapshot(_FakeSnapshot({"metrics": [], "tests": []}))
    with pytest.raises(RuntimeError, match="metrics"):
        _parse_snapshot(_FakeSnapshot({}))


def _with_embeddings(frame: pd.DataFrame, shift: float, seed: int) -> pd.DataFrame:
    vectors = np.random.default_rng(seed).normal(loc=shift, size=(len(frame), 4))
    return frame.assign(**{f"e{i}": vectors[:, i] for i in range(4)})


def test_embeddings_vote_the_same_with_and_without_the_plot(tmp_path):
    # Shifted embeddings, same texts otherwise (the false-alarm test covers the other way).
    reference, current = _with_embeddings(reviews(60, 0), 0.0, 0), _with_embeddings(reviews(60, 1), 1.5, 1)
    groups = {"embeddings": {"sentence": ["e0", "e1", "e2", "e3"]}, "text_method": FAST_TEXT, **FAST}
    plotted = build_drift_report(reference, current, embeddings_plot=True, **groups)
    quick = build_drift_report(reference, current, embeddings_plot=False, **groups)
    assert plotted.columns["embeddings:sentence"] == quick.columns["embeddings:sentence"]
    assert plotted.columns["embeddings:sentence"]["drifted"] is True
    assert plotted.n_columns == quick.n_columns == 5 and plotted.dataset_drift == quick.dataset_drift
    assert "embeddings" in plotted.save_html(tmp_path / "p.html").read_text(encoding="utf-8").lower()
    # Data quality is reported beside the verdict and does not vote.
    assert plotted.data_quality["RowCount()"]["value"] == 60


def test_explanation_drift_is_evidentlys_ks_test_per_descriptor_with_bonferroni(tmp_path):
    from scipy.stats import ks_2samp

    from glasswork.drift import save_explanation_page
    from glasswork.drift_report import explanation_report

    rng = np.random.default_rng(0)
    reference = {"mass_non_letters": rng.beta(1, 9, 200), "mass_split_words": rng.beta(1, 5, 200)}
    reference["mass_top_word"] = rng.beta(4, 4, 200)
    same = {name: rng.permutation(values)[:80] for name, values in reference.items()}
    # Attribution moved onto punctuation and symbols (tweets), the rest unchanged.
    moved = same | {"mass_non_letters": rng.beta(5, 5, 80)}
    alpha = 0.01
    quiet, shifted = (explanation_report(reference, current, alpha, list(reference)) for current in (same, moved))
    assert not quiet.dataset_drift and shifted.dataset_drift
    assert shifted.drifted_signals == ["mass_non_letters"]
    for result, current in ((quiet, same), (shifted, moved)):
        assert result.data_quality == {}  # descriptors are not data: no row or duplicate checks
        for name, info in result.columns.items():
            p_value = ks_2samp(reference[name], current[name]).pvalue
            assert info["method"] == "ks" and info["threshold"] == pytest.approx(alpha / 3)
            assert info["score"] == pytest.approx(p_value, rel=1e-6)
            assert info["drifted"] == (p_value <= alpha / 3)
    page = save_explanation_page(shifted, {"status": "computed"}, tmp_path / "explanation.html")
    assert page.stat().st_size > 10_000 and "mass_non_letters" in page.read_text(encoding="utf-8")
    # No explanations to compare: the page says why instead of being missing.
    status = "not computed: drift.explain_sample=0 or no texts"
    page = save_explanation_page(None, {"status": status}, tmp_path / "none.html")
    assert status in page.read_text(encoding="utf-8")


def test_explanations_of_one_text_or_constant_descriptors_get_a_verdict_without_numpy_noise():
    import warnings

    from glasswork.drift_report import explanation_report
    from glasswork.text_drift import EXPLANATION_DESCRIPTORS

    spread = {name: np.linspace(0.0, 0.9, 20) for name in EXPLANATION_DESCRIPTORS}
    constant = {name: np.full(12, 0.5) for name in EXPLANATION_DESCRIPTORS}
    one_text = {name: [0.45] for name in EXPLANATION_DESCRIPTORS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flat = explanation_report(constant, constant, 0.01, EXPLANATION_DESCRIPTORS)
        single = explanation_report(spread, one_text, 0.01, EXPLANATION_DESCRIPTORS)
    assert not flat.dataset_drift and all(info["score"] == 1.0 for info in flat.columns.values())
    assert not single.dataset_drift and set(single.columns) == set(EXPLANATION_DESCRIPTORS)
    noise = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert noise == [], noise  # numpy's divide-by-zero from Evidently's column summaries
