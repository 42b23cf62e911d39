"""What calls for `monitor.on_drift`'s action (pipelines.monitoring.triggers): the data verdict
always; an accuracy drop and explanation drift where the settings ask. The summaries are drift.json's
shape, as glasswork.monitor writes it; the whole check runs in tests/code/test_monitor.py."""

from __future__ import annotations

import pytest
from pipelines.monitoring import check_on_drift, report, triggers
from tests.conftest import tiny_overrides

from glasswork.config import load_config
from glasswork.errors import ConfigError


def _summary(drifted: bool, estimated: float, actual: float | None = None, explained: bool = False) -> dict:
    performance = {"status": "computed", "estimated_accuracy": estimated, "reference_accuracy": 0.80}
    if actual is not None:
        performance["actual_accuracy"] = actual
    return {
        "dataset_drift": drifted,
        "performance": performance,
        "explanation_drift": {"status": "computed", "drifted": explained, "faithfulness": {"status": "not computed"}},
    }


def _cfg(tmp_path, *extra):
    return load_config(tiny_overrides(tmp_path, *extra))


def test_by_default_only_the_data_verdict_calls_for_action(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.monitor.max_accuracy_drop is None and cfg.monitor.on_explanation_drift is False
    assert triggers(cfg, _summary(True, 0.80)) == ["data drift"]
    assert triggers(cfg, _summary(False, 0.40, actual=0.30, explained=True)) == []


def test_an_accuracy_drop_calls_for_action_the_actual_one_where_there_are_labels(tmp_path):
    cfg = _cfg(tmp_path, "monitor.max_accuracy_drop=0.1")
    assert triggers(cfg, _summary(False, 0.75)) == []  # 0.05 below: within the allowed drop
    (estimated,) = triggers(cfg, _summary(False, 0.65))
    assert estimated.startswith("estimated accuracy 0.650, 0.150 below the test split's 0.800")
    assert "monitor.max_accuracy_drop=0.1" in estimated
    # Labels outrank the estimate: here it says all is well, the labels say otherwise.
    (actual,) = triggers(cfg, _summary(False, 0.79, actual=0.55))
    assert actual.startswith("actual accuracy 0.550, 0.250 below")
    assert triggers(cfg, _summary(False, 0.40, actual=0.78)) == []
    both = triggers(cfg, _summary(True, 0.60))
    assert both[0] == "data drift" and both[1].startswith("estimated accuracy 0.600")


def test_explanation_drift_calls_for_action_when_asked(tmp_path):
    summary = _summary(False, 0.80, explained=True)
    assert triggers(_cfg(tmp_path), summary) == []
    assert triggers(_cfg(tmp_path, "monitor.on_explanation_drift=true"), summary) == [
        "explanation drift (monitor.on_explanation_drift)"
    ]
    summary["explanation_drift"] = {"status": "not computed: no reference"}
    assert triggers(_cfg(tmp_path, "monitor.on_explanation_drift=true"), summary) == []


@pytest.mark.parametrize("drop", [0, 1.5, -0.1])
def test_an_accuracy_drop_that_cannot_work_is_refused(tmp_path, drop):
    cfg = _cfg(tmp_path, f"monitor.max_accuracy_drop={drop}")
    with pytest.raises(
        ConfigError, match=r"monitor\.max_accuracy_drop=.*expected null or an accuracy drop between 0 and 1"
    ):
        check_on_drift(cfg)
    check_on_drift(_cfg(tmp_path, "monitor.max_accuracy_drop=0.05"))  # and a sound one passes


def test_an_accuracy_drop_in_words_is_refused_when_the_config_is_composed(tmp_path):
    with pytest.raises(ConfigError, match=r"setting monitor\.max_accuracy_drop: Value 'a lot'"):
        _cfg(tmp_path, "monitor.max_accuracy_drop='a lot'")


def test_the_report_says_what_the_action_was_taken_on():
    summary = _summary(False, 0.6) | {
        "triggers": ["estimated accuracy 0.600, 0.200 below the test split's 0.800 (monitor.max_accuracy_drop=0.1)"],
        "action": "alert",
        "model": "m v1",
        "batch": {"source": "b.csv", "files": ["b.csv"], "n_rows": 10, "skipped": {}},
        "n_reference": 10,
        "n_current": 10,
        "n_drifted": 0,
        "n_columns": 3,
        "drift_share": 0.5,
        "drifted_signals": [],
        "columns": {},
        "unseen_labels": [],
        "output_dir": "out",
    }
    summary["performance"]["slices"] = []
    summary["explanation_drift"] = {"status": "not computed: none"}
    text = report(summary)
    assert "- acted on: estimated accuracy 0.600, 0.200 below" in text and "- action: alert" in text
