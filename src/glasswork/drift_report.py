"""Data-drift reports built on Evidently 0.7's ``Report``/``Dataset`` API.

Every per-signal verdict here is Evidently's own: the ``ValueDrift`` test of each column and
the test on ``EmbeddingsDrift`` (a domain classifier's ROC AUC on the sentence embeddings).
**The dataset-level verdict** counts them together: the data drifted when at least
``drift_share`` of the signals (the columns and the embeddings) drifted. Data-quality tests
(rows, duplicates, missing texts) are reported beside it and do not vote. This module only reads
the results out of ``Snapshot.dict()`` and fails loudly if that shape changes.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

_COUNT_TYPE = "evidently:metric_v2:DriftedColumnsCount"
_VALUE_TYPE = "evidently:metric_v2:ValueDrift"
_EMBEDDINGS_TYPE = "evidently:metric_v2:EmbeddingsDrift"
# A domain classifier told apart reference and current embeddings at least this well (ROC AUC):
# drift. Evidently's own threshold; fixed (no bootstrap) so the test can carry it.
EMBEDDINGS_AUC_THRESHOLD = 0.55
# Test statuses that carry a verdict; ERROR/SKIPPED/WARNING mean Evidently could not decide.
_VERDICTS = {"FAIL": True, "SUCCESS": False}
# The two lines of Evidently's page (0.7.23, ``evidently.legacy.utils.dashboard``) that hold the
# report's data: ``var metric_<uuid hex> = JSON;`` and ``var additional_graphs_metric_<hex> =
# JSON;`` inside a <script> block. json.dumps writes no raw newline, so each is one line.
_DATA_LINE = re.compile(r"^(\s*var (?:additional_graphs_)?metric_[0-9a-f]{32} = )(.*);$")


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift report.

    Attributes:
        snapshot: The ``evidently.core.report.Snapshot`` the values were read from.
        dataset_drift: The dataset-level verdict: ``share_drifted >= drift_share``.
        share_drifted: Share of the signals (columns and embeddings) that drifted.
        n_drifted: Number of signals that drifted.
        n_columns: Number of signals analysed.
        columns: Per signal ``{"drifted", "score", "method", "threshold"}``; embeddings appear
            as ``embeddings:NAME``. ``score`` is on the method's own scale (a p-value for K-S,
            a ROC AUC for text and embeddings), so ``drifted`` comes from Evidently's test,
            never from comparing it to ``threshold``.
        data_quality: Per data-quality metric its value and test status (they do not vote).
        drift_share: The share of drifted signals that makes the dataset drift.
    """

    snapshot: Any
    dataset_drift: bool
    share_drifted: float
    n_drifted: int
    n_columns: int
    columns: dict[str, dict[str, Any]]
    data_quality: dict[str, Any] = field(default_factory=dict)
    drift_share: float = 0.5

    @property
    def drifted_signals(self) -> list[str]:
        return [name for name, info in self.columns.items() if info["drifted"]]

    def save_html(self, path: str | Path) -> Path:
        """Write the self-contained Evidently HTML report (scripts inlined) and return its path;
        the data's texts stay text (see :func:`inert_data`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(inert_data(self.snapshot.get_html_str(as_iframe=False)), encoding="utf-8")
        return path

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary: every field except the snapshot."""
        summary = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "snapshot"}
        summary["columns"] = {name: dict(info) for name, info in self.columns.items()}
        return summary


def inert_data(page: str) -> str:
    """Evidently's page with every ``<`` in its inlined data written as ``\\u003c``.

    Evidently inlines the report's data (texts of the data, column names, class names) in a
    <script> block with plain json.dumps, so a text holding ``</script>`` closes the block and
    the rest runs as markup. In valid JSON a ``<`` occurs only inside a string, where ``\\u003c``
    is the same character, so the data Evidently's app reads is unchanged (plotly's to_json does
    the same). Each line is parsed as JSON after the change: a page whose shape Evidently changed
    fails here rather than being written half-escaped.

    Raises:
        RuntimeError: If the page does not have exactly the two data lines this expects, or one
            of them is not JSON.
    """
    lines = page.split("\n")
    found = [(i, m) for i, line in enumerate(lines) if (m := _DATA_LINE.match(line))]
    if len(found) != 2:
        raise RuntimeError(f"Evidently's page has {len(found)} inlined data lines, expected 2: its template changed")
    for i, match in found:
        data = match.group(2).replace("<", "\\u003c")
        try:
            json.loads(data)
        except ValueError as error:
            raise RuntimeError(f"Evidently's inlined data is not one JSON value: {error}") from error
        lines[i] = f"{match.group(1)}{data};"
    return "\n".join(lines)


def build_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    text_columns: list[str],
    numerical_columns: list[str],
    categorical_columns: list[str] | None = None,
    embeddings: dict[str, list[str]] | None = None,
    drift_share: float = 0.5,
    text_method: str | None = None,
    num_method: str | None = None,
    num_threshold: float | None = None,
    embeddings_plot: bool = True,
    data_quality: bool = True,
) -> DriftResult:
    """Run Evidently's ``DataDriftPreset`` on two frames and read out its verdicts.

    Args:
        reference: Baseline data (e.g. the training split).
        current: Data to check against ``reference``.
        text_columns: Free-text columns (domain-classifier drift test).
        numerical_columns: Numerical columns.
        categorical_columns: Categorical columns, if any (e.g. the label).
        embeddings: Named groups of numerical columns holding embedding vectors, each tested
            as one signal (a PCA-reduced vector keeps Evidently's t-SNE plot quick).
        drift_share: Share of drifted columns at or above which the dataset counts as drifted.
        embeddings_plot: Put Evidently's embeddings widget in the report. Its t-SNE plot is
            most of the report's cost (seconds to tens of seconds on 2 cores); without it the
            same drift method (Evidently's domain classifier) is called directly, with the same
            verdict, and only the plot is missing.
        text_method: Evidently stat test for text columns; ``None`` keeps Evidently's choice
            (``perc_text_content_drift`` up to 1000 reference rows, which fits 1000 random
            baselines and costs seconds per column; ``"abs_text_content_drift"`` is far cheaper).
        num_method: Evidently stat test for numerical columns (``None``: Evidently's choice, by
            sample size); ``num_threshold`` its threshold (for ``"ks"``, the p-value at or
            below which a column drifted).
        data_quality: Add the row, duplicate and missing-text checks (off for frames that are
            not data, e.g. per-text explanation descriptors).

    Returns:
        The parsed :class:`DriftResult`.

    Raises:
        ValueError: If no columns are given, one is missing from a frame, or ``drift_share``
            is outside (0, 1].
        RuntimeError: If Evidently's output lacks the metrics or tests this module reads.
    """
    columns = [*text_columns, *numerical_columns, *(categorical_columns or [])]
    embeddings = embeddings or {}
    needed = columns + [c for group in embeddings.values() for c in group]
    # Checked here because Evidently's errors for these surface deep inside its legacy layer.
    missing = sorted({c for c in needed for f in (reference, current) if c not in f.columns})
    if not columns or missing or not 0.0 < drift_share <= 1.0:
        raise ValueError(f"bad input: columns={columns}, missing={missing}, {drift_share=}")
    # Imported here: evidently takes 8-15 s to import, too much for `import glasswork`.
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as domain_classifier
    from evidently.metrics import DuplicatedRowCount, EmbeddingsDrift, MissingValueCount, RowCount
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte
    from sklearn.exceptions import ConvergenceWarning

    definition = DataDefinition(
        text_columns=text_columns,
        numerical_columns=numerical_columns + [c for group in embeddings.values() for c in group],
        categorical_columns=categorical_columns or [],
        embeddings=embeddings or None,
    )
    # `columns=` pins the analysis to the declared columns whatever Evidently would infer.
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift_share,
        text_method=text_method,
        num_method=num_method,
        num_threshold=num_threshold,
    )
    method = domain_classifier(threshold=EMBEDDINGS_AUC_THRESHOLD, bootstrap=False)
    plotted = embeddings if embeddings_plot else {}
    metrics = [
        preset,
        *(
            EmbeddingsDrift(embeddings_name=name, drift_method=method, tests=[lte(EMBEDDINGS_AUC_THRESHOLD)])
            for name in plotted
        ),
    ]
    if data_quality:
        metrics += [RowCount(), DuplicatedRowCount(), *(MissingValueCount(column=c) for c in text_columns)]
    report = Report(metrics, include_tests=True)
    with warnings.catch_warnings():
        # Evidently's text-drift SGDClassifier has a fixed max_iter=50 and warns on near-identical
        # texts; callers cannot act on it and it swamps logs.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Its column summaries correlate every pair of columns with numpy, which divides by a
        # zero spread on a constant or one-row column (an explanation descriptor over one text);
        # the drift tests do not use those numbers and their verdict stands.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"numpy\.")
        # A category only the current data has (a new source) has an expected count of zero in
        # the reference: chi-square divides by it and says p = 0, the right verdict (drift).
        warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning, module=r"scipy\.stats")
        # Report.run takes (current, reference) in that order.
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    unplotted = {}
    for name, group in embeddings.items():
        if name not in plotted:
            # The method adds a column to the frames it is given: hand it copies.
            score, drifted, _ = method(current[group].copy(), reference[group].copy())
            unplotted[name] = _embeddings_signal(float(score), bool(drifted))
    return _parse_snapshot(snapshot, drift_share, unplotted)


def _embeddings_signal(score: float, drifted: bool) -> dict[str, Any]:
    return {
        "drifted": drifted,
        "score": score,
        "method": "domain classifier ROC AUC",
        "threshold": EMBEDDINGS_AUC_THRESHOLD,
    }


def _status_by_metric(tests: list[dict]) -> dict[str, str]:
    """Map metric id to its test status (``FAIL``, ``SUCCESS``, ``WARNING``...) in ``snapshot.dict()``."""
    statuses: dict[str, str] = {}
    for test in tests:
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        # TestStatus is a str Enum; .value gives the bare "FAIL"/"SUCCESS".
        status = getattr(test.get("status"), "value", test.get("status"))
        if metric_id is None or not isinstance(status, str):
            raise RuntimeError(f"Evidently test {test.get('name')!r} has no status: {status!r}")
        # A metric with several tests (data quality): the worst status stands.
        if statuses.get(metric_id) != "FAIL":
            statuses[metric_id] = status
    return statuses


def _verdict(statuses: dict[str, str], metric: dict) -> bool:
    """Evidently's drift verdict for one metric (its test failed = drift)."""
    status = statuses.get(str(metric.get("id")))
    if status not in _VERDICTS:
        raise RuntimeError(f"Evidently test of {metric.get('metric_name')!r} has no verdict: {status!r}")
    return _VERDICTS[status]


def _parse_snapshot(snapshot: Any, drift_share: float = 0.5, embeddings: dict | None = None) -> DriftResult:
    """Read the per-signal verdicts and data-quality results out of ``snapshot.dict()``;
    ``embeddings`` holds embedding signals computed outside the report."""
    data = snapshot.dict()
    if not isinstance(data.get("metrics"), list) or not isinstance(data.get("tests"), list):
        raise RuntimeError("snapshot.dict() lacks 'metrics'/'tests' lists")
    statuses = _status_by_metric(data["tests"])
    by_type: dict[str, list[dict]] = {_COUNT_TYPE: [], _VALUE_TYPE: [], _EMBEDDINGS_TYPE: []}
    quality = {}
    for metric in data["metrics"]:
        kind = (metric.get("config") or {}).get("type")
        if kind in by_type:
            by_type[kind].append(metric)
        else:
            value = metric.get("value")
            quality[metric.get("metric_name", kind)] = {
                "value": {k: float(v) for k, v in value.items()} if isinstance(value, dict) else value,
                "status": statuses.get(metric.get("id"), "not tested"),
            }
    counts = by_type[_COUNT_TYPE]
    value = counts[0].get("value") if len(counts) == 1 else None
    if not isinstance(value, dict) or {"count", "share"} - value.keys():
        raise RuntimeError(f"snapshot lacks one DriftedColumnsCount with count/share: {counts}")
    columns = {}
    for metric in by_type[_VALUE_TYPE]:
        score, config = metric.get("value"), metric["config"]
        if "column" not in config or not isinstance(score, numbers.Real):
            raise RuntimeError(f"ValueDrift {metric.get('metric_name')!r} lacks column/score")
        threshold = config.get("threshold")
        columns[config["column"]] = {
            "drifted": _verdict(statuses, metric),
            "score": float(score),
            "method": config.get("method"),
            "threshold": None if threshold is None else float(threshold),
        }
    if not columns:
        raise RuntimeError("snapshot lacks per-column ValueDrift metrics")
    # Both numbers come from Evidently (legacy and v2 paths); a mismatch is worth a look.
    if int(value["count"]) != sum(c["drifted"] for c in columns.values()):
        logger.warning("Evidently drifted count %d disagrees with per-column tests", int(value["count"]))
    for metric in by_type[_EMBEDDINGS_TYPE]:
        name = metric["config"]["embeddings_name"]
        columns[f"embeddings:{name}"] = _embeddings_signal(float(metric["value"]), _verdict(statuses, metric))
    columns |= {f"embeddings:{name}": signal for name, signal in (embeddings or {}).items()}
    n_drifted = sum(c["drifted"] for c in columns.values())
    share = n_drifted / len(columns)
    return DriftResult(
        snapshot=snapshot,
        dataset_drift=share >= drift_share,
        share_drifted=share,
        n_drifted=n_drifted,
        n_columns=len(columns),
        columns=columns,
        data_quality=quality,
        drift_share=drift_share,
    )


def explanation_report(
    reference: dict[str, list[float]],
    current: dict[str, list[float]],
    alpha: float,
    names: Sequence[str],
) -> DriftResult:
    """Evidently's two-sample K-S test on each explanation descriptor (``names``; one value per
    text or image); the explanations drifted when any p-value is at or
    below ``alpha`` over the number of descriptors (Bonferroni)."""
    columns = list(names)
    return build_drift_report(
        pd.DataFrame({c: reference[c] for c in columns}),
        pd.DataFrame({c: current[c] for c in columns}),
        text_columns=[],
        numerical_columns=columns,
        num_method="ks",
        num_threshold=alpha / len(columns),
        drift_share=1 / len(columns),  # one drifted descriptor is enough
        data_quality=False,
    )
