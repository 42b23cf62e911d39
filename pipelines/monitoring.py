"""The monitoring flow: check a new batch with the ``champion`` and act on the verdict.

    read batch → score with champion → compare with its reference → log → act (monitor.on_drift)

``alert`` emits the Prefect event ``glasswork.drift.detected`` (automations can route it to
Slack, e-mail or a retraining deployment) and publishes a markdown artifact with the reasons;
the CLI then exits 1. ``retrain`` runs the training flow on the champion's training data plus
the batch's labelled rows; the new model takes ``champion`` only through the usual register gate.
The daily deployment (``prefect.yaml``) runs this flow on ``monitor.incoming``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from glasswork.config import from_plain, load_config, to_plain
from glasswork.errors import ConfigError

log = logging.getLogger("glasswork.flow")

ALERT_EVENT = "glasswork.drift.detected"


@task(name="check-batch", cache_policy=NO_CACHE, persist_result=False)
def check_batch(cfg: dict, batch: str) -> dict:
    """Score the batch with the champion and compare it with the champion's reference."""
    from glasswork.monitor import monitor

    return monitor(from_plain(cfg), Path(batch))


@flow(name="glasswork-monitoring", log_prints=True, persist_result=False)
def monitoring(batch: str, overrides: list[str] | None = None) -> dict:
    """Check ``batch`` (a file or a folder) and act per ``monitor.on_drift``; return the summary
    with the ``action`` taken."""
    from glasswork.monitor import record_action
    from pipelines.flow_parameters import deployment_run_overrides

    overrides = deployment_run_overrides(overrides)
    cfg = load_config(overrides)
    check_on_drift(cfg)
    summary = check_batch(to_plain(cfg), batch)
    record_action(summary, act(cfg, summary, overrides or []))
    print(report(summary))
    return summary


def check_on_drift(cfg: DictConfig) -> None:
    from glasswork.monitor import ON_DRIFT

    m = cfg.monitor
    if m.on_drift not in ON_DRIFT:
        raise ConfigError(f"monitor.on_drift={m.on_drift!r}: expected one of {list(ON_DRIFT)}")
    drop = m.max_accuracy_drop
    if drop is not None and not (isinstance(drop, int | float) and 0 < drop < 1):
        raise ConfigError(f"monitor.max_accuracy_drop={drop!r}: expected null or an accuracy drop between 0 and 1")


def triggers(cfg: DictConfig, summary: dict) -> list[str]:
    """Why the batch calls for ``monitor.on_drift``'s action: the data verdict, and where the
    settings ask for them, an accuracy drop (``monitor.max_accuracy_drop``) and explanation drift
    (``monitor.on_explanation_drift``). Empty: nothing to act on."""
    found = ["data drift"] if summary["dataset_drift"] else []
    perf, drop = summary["performance"], cfg.monitor.max_accuracy_drop
    if drop is not None and perf["status"] == "computed":
        kind = "actual" if "actual_accuracy" in perf else "estimated"
        accuracy, reference = perf[f"{kind}_accuracy"], perf["reference_accuracy"]
        if reference - accuracy > drop:
            found.append(
                f"{kind} accuracy {accuracy:.3f}, {reference - accuracy:.3f} below the test split's {reference:.3f} "
                f"(monitor.max_accuracy_drop={drop:g})"
            )
    explained = summary["explanation_drift"]
    if cfg.monitor.on_explanation_drift and explained["status"] == "computed" and explained["drifted"]:
        found.append("explanation drift (monitor.on_explanation_drift)")
    return found


def act(cfg: DictConfig, summary: dict, overrides: list[str]) -> str:
    """Do what ``monitor.on_drift`` says when the batch calls for it (:func:`triggers`, recorded
    in the summary); return what was done."""
    summary["triggers"] = triggers(cfg, summary)
    if not summary["triggers"]:
        return "none: no drift"
    mode = cfg.monitor.on_drift
    if mode == "none":
        return "none: monitor.on_drift=none"
    if mode == "retrain":
        from glasswork.tasks import build

        data = build(cfg).retraining(cfg, summary)  # the data overrides, or None (it says why)
        if data is not None:
            return retrain(overrides, data, cfg.registry.model_name)
        log.warning("monitor: on_drift=retrain but nothing to retrain on (see above): alerting instead")
    alert(summary)
    return "alert"


def alert(summary: dict) -> None:
    """A Prefect event (for automations) and a markdown artifact (for people) with the reasons."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.events import emit_event

    name, _, version = summary["model"].partition(" v")
    emit_event(
        event=ALERT_EVENT,
        resource={
            "prefect.resource.id": f"glasswork.model.{name}.{version}",
            "prefect.resource.name": summary["model"],
        },
        payload={
            "batch": summary["batch"]["source"],
            "drifted_signals": summary["drifted_signals"],
            "share_drifted": summary["share_drifted"],
            "estimated_accuracy": summary["performance"].get("estimated_accuracy"),
            "report": str(Path(summary["output_dir"]) / "report.html"),
            "explanation_report": str(Path(summary["output_dir"]) / "explanation_report.html"),
            "embedding_map": str(Path(summary["output_dir"]) / "embeddings.html"),
            "mlflow_run_id": summary["mlflow_run_id"],
        },
    )
    create_markdown_artifact(key="glasswork-drift-alert", markdown=report(summary, markdown=True),
                             description=f"drift in {summary['batch']['source']}")  # fmt: skip


def retrain(overrides: list[str], data: list[str], model_name: str) -> str:
    """Run the training flow on the data the ``data`` overrides name (the task's retraining table);
    the register step decides whether it takes the ``champion`` alias of ``model_name`` (the
    monitored model's, not one named after the file)."""
    from pipelines.training import run_pipeline

    cfg = load_config([*overrides, *data, "data.max_rows=null", f"registry.model_name={model_name}"])
    results = run_pipeline(cfg)
    reg = results["register"]
    took = "took" if reg["promote"] else "did not take"
    return f"retrained: {reg['model_name']} v{reg['version']} {took} '{reg['alias']}'"


def report(summary: dict, markdown: bool = False) -> str:
    """The verdict for people: what drifted, the accuracy estimate, where the files are."""
    from glasswork.drift import faithfulness_words  # late: the flow module stays light to import

    verdict = "DRIFT" if summary["dataset_drift"] else "no drift"
    perf = summary["performance"]
    lines = [
        f"{'# ' if markdown else ''}Glasswork monitor: {verdict} in {summary['batch']['source']}",
        f"- model: {summary['model']} (reference: its training data, {summary['n_reference']} rows sampled)",
        f"- batch: {summary['batch']['n_rows']} rows in {len(summary['batch']['files'])} file(s), "
        f"{summary['n_current']} sampled; skipped: {summary['batch']['skipped'] or 'none'}",
        f"- verdict: {summary['n_drifted']} of {summary['n_columns']} signals drifted "
        f"(drift when >= {summary['drift_share']:.0%}): {', '.join(summary['drifted_signals']) or 'none'}",
    ]
    for name, info in summary["columns"].items():
        lines.append(f"  - {name}: {'DRIFT' if info['drifted'] else 'ok'} ({info['method']} = {info['score']:.3g})")
    if perf["status"] == "computed":
        truth = f", actual {perf['actual_accuracy']:.3f}" if "actual_accuracy" in perf else ""
        lines.append(
            f"- accuracy: estimated {perf['estimated_accuracy']:.3f} without labels{truth} "
            f"(on its test split: {perf['reference_accuracy']:.3f})"
        )
        for row in perf.get("slices", []):
            tested = f" (test split: {row['test_accuracy']:.3f})" if "test_accuracy" in row else ""
            truth = f", actual {row['actual_accuracy']:.3f}" if "actual_accuracy" in row else ""
            lines.append(f"  - {row['slice']} (n={row['n']}): estimated {row['estimated_accuracy']:.3f}{tested}{truth}")
    if summary["unseen_labels"]:
        lines.append(f"- labels the model never saw (left out): {summary['unseen_labels']}")
    explained = summary["explanation_drift"]
    if explained["status"] == "computed":
        lines.append(f"- explanation drift: {'DRIFT' if explained['drifted'] else 'none'}")
        lines.append(f"- explanations' faithfulness on the batch: {faithfulness_words(explained['faithfulness'])}")
    if summary.get("triggers"):
        lines.append(f"- acted on: {'; '.join(summary['triggers'])}")
    lines += [
        f"- action: {summary.get('action', 'pending')}",
        f"- report: {summary['output_dir']}/report.html (explanations: explanation_report.html; "
        "where the batch lands: embeddings.html)",
    ]
    return "\n".join(lines)
