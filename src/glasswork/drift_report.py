"""Data-drift reports built on Evidently 0.7's ``Report``/``Dataset`` API.

Every verdict here is Evidently's own: the dataset-level one is the result of the
``DriftedColumnsCount`` share test, the per-column ones are the ``ValueDrift`` tests. This
module only reads them out of ``Snapshot.dict()`` and fails loudly if that shape changes.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

_COUNT_TYPE = "evidently:metric_v2:DriftedColumnsCount"
_VALUE_TYPE = "evidently:metric_v2:ValueDrift"
# Test statuses that carry a verdict; ERROR/SKIPPED/WARNING mean Evidently could not decide.
_VERDICTS = {"FAIL": True, "SUCCESS": False}


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift report.

    Attributes:
        snapshot: The ``evidently.core.report.Snapshot`` the values were read from.
        dataset_drift: Evidently's dataset-level verdict (share of drifted columns test failed).
        share_drifted: Share of analysed columns that drifted.
        n_drifted: Number of analysed columns that drifted.
        n_columns: Number of analysed columns.
        columns: Per column ``{"drifted", "score", "method", "threshold"}``. ``score`` is
            on the method's own scale (a p-value for K-S, a ROC AUC for text drift), so
            ``drifted`` comes from Evidently's test, never from comparing it to ``threshold``.
    """

    snapshot: Any
    dataset_drift: bool
    share_drifted: float
    n_drifted: int
    n_columns: int
    columns: dict[str, dict[str, Any]]

    def save_html(self, path: str | Path) -> Path:
        """Write the self-contained Evidently HTML report (scripts inlined) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Snapshot.save_html silently writes nothing when given anything but a str (0.7.23).
        self.snapshot.save_html(str(path))
        return path

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary: every field except the snapshot."""
        summary = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "snapshot"}
        summary["columns"] = {name: dict(info) for name, info in self.columns.items()}
        return summary


def build_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    text_columns: list[str],
    numerical_columns: list[str],
    categorical_columns: list[str] | None = None,
    drift_share: float = 0.5,
    text_method: str | None = None,
) -> DriftResult:
    """Run Evidently's ``DataDriftPreset`` on two frames and read out its verdicts.

    Args:
        reference: Baseline data (e.g. the training split).
        current: Data to check against ``reference``.
        text_columns: Free-text columns (domain-classifier drift test).
        numerical_columns: Numerical columns.
        categorical_columns: Categorical columns, if any.
        drift_share: Share of drifted columns at or above which the dataset counts as drifted.
        text_method: Evidently stat test for text columns; ``None`` keeps Evidently's choice
            (``perc_text_content_drift`` up to 1000 reference rows, which fits 1000 random
            baselines and costs seconds per column; ``"abs_text_content_drift"`` is far cheaper).

    Returns:
        The parsed :class:`DriftResult`.

    Raises:
        ValueError: If no columns are given, one is missing from a frame, or ``drift_share``
            is outside (0, 1].
        RuntimeError: If Evidently's output lacks the metrics or tests this module reads.
    """
    columns = [*text_columns, *numerical_columns, *(categorical_columns or [])]
    # Checked here because Evidently's errors for these surface deep inside its legacy layer.
    missing = sorted({c for c in columns for f in (reference, current) if c not in f.columns})
    if not columns or missing or not 0.0 < drift_share <= 1.0:
        raise ValueError(f"bad input: columns={columns}, missing={missing}, {drift_share=}")
    # Imported here: evidently takes 8-15 s to import, too much for `import glasswork`.
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from sklearn.exceptions import ConvergenceWarning

    definition = DataDefinition(
        text_columns=text_columns,
        numerical_columns=numerical_columns,
        categorical_columns=categorical_columns or [],
    )
    # `columns=` pins the analysis to the declared columns whatever Evidently would infer.
    preset = DataDriftPreset(columns=columns, drift_share=drift_share, text_method=text_method)
    report = Report([preset], include_tests=True)
    with warnings.catch_warnings():
        # Evidently's text-drift SGDClassifier has a fixed max_iter=50 and warns on near-identical
        # texts; callers cannot act on it and it swamps logs.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Report.run takes (current, reference) in that order.
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    return _parse_snapshot(snapshot)


def _status_by_metric(tests: list[dict]) -> dict[str, bool]:
    """Map metric id to verdict (True = drift) from the tests in ``snapshot.dict()``."""
    verdicts: dict[str, bool] = {}
    for test in tests:
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        # TestStatus is a str Enum; .value gives the bare "FAIL"/"SUCCESS".
        status = getattr(test.get("status"), "value", test.get("status"))
        if metric_id is None or status not in _VERDICTS:
            raise RuntimeError(f"Evidently test {test.get('name')!r} has no verdict: {status!r}")
        verdicts[metric_id] = _VERDICTS[status]
    return verdicts


def _parse_snapshot(snapshot: Any) -> DriftResult:
    """Read the dataset- and column-level results out of ``snapshot.dict()``."""
    data = snapshot.dict()
    if not isinstance(data.get("metrics"), list) or not isinstance(data.get("tests"), list):
        raise RuntimeError("snapshot.dict() lacks 'metrics'/'tests' lists")
    verdicts = _status_by_metric(data["tests"])
    by_type: dict[str, list[dict]] = {_COUNT_TYPE: [], _VALUE_TYPE: []}
    for metric in data["metrics"]:
        by_type.get((metric.get("config") or {}).get("type"), []).append(metric)
    counts, values = by_type[_COUNT_TYPE], by_type[_VALUE_TYPE]
    value = counts[0].get("value") if len(counts) == 1 else None
    if not isinstance(value, dict) or {"count", "share"} - value.keys():
        raise RuntimeError(f"snapshot lacks one DriftedColumnsCount with count/share: {counts}")
    if counts[0].get("id") not in verdicts:
        raise RuntimeError("snapshot lacks the DriftedColumnsCount share test")
    columns = {}
    for metric in values:
        score, config = metric.get("value"), metric["config"]
        known = metric.get("id") in verdicts and "column" in config
        if not known or not isinstance(score, numbers.Real):
            raise RuntimeError(f"ValueDrift {metric.get('metric_name')!r} lacks column/score/test")
        threshold = config.get("threshold")
        columns[config["column"]] = {
            "drifted": verdicts[metric["id"]],
            "score": float(score),
            "method": config.get("method"),
            "threshold": None if threshold is None else float(threshold),
        }
    if not columns:
        raise RuntimeError("snapshot lacks per-column ValueDrift metrics")
    n_drifted = int(value["count"])
    # Both numbers come from Evidently (legacy and v2 paths); a mismatch is worth a look.
    if n_drifted != sum(c["drifted"] for c in columns.values()):
        logger.warning("Evidently drifted count %d disagrees with per-column tests", n_drifted)
    return DriftResult(
        snapshot=snapshot,
        dataset_drift=verdicts[counts[0]["id"]],
        share_drifted=float(value["share"]),
        n_drifted=n_drifted,
        n_columns=len(columns),
        columns=columns,
    )
