"""The training flow: one Prefect task per step, in the order of the diagram in the README.

    ingest → prepare → train → evaluate → explain → drift → register

Without ``PREFECT_API_URL`` Prefect runs the flow in-process against a temporary local server;
with it set, the flow run reports to that server (and shows in its UI). The config is composed
once, outside the tasks (Hydra's compose API is not thread-safe), and handed to every task as a
plain resolved dict.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from glasswork.config import from_plain, to_plain
from glasswork.errors import GlassworkError
from glasswork.preflight import preflight
from glasswork.steps import STEP_NAMES, STEPS, Step, output
from glasswork.tasks import build, require_steps

log = logging.getLogger("glasswork.flow")


def _transient_only(task, task_run, state) -> bool:
    """Retry unexpected failures (a server, a disk), never a bad input: that will fail again."""
    try:
        state.result(raise_on_failure=True)
    except GlassworkError as err:
        return bool(getattr(err, "transient", False))  # e.g. a tracking server that is down
    except Exception:
        return True
    return False


def _make_task(step: Step):
    def run_step(cfg: dict) -> dict:
        return step.function()(from_plain(cfg))

    run_step.__name__ = step.name
    return task(
        run_step,
        name=step.name,
        description=step.summary,
        retries=step.retries,
        retry_delay_seconds=5,
        retry_condition_fn=_transient_only,
        cache_policy=NO_CACHE,
        persist_result=False,
    )


TASKS = {step.name: _make_task(step) for step in STEPS}
ingest, prepare, train, evaluate, explain, drift, register = (TASKS[s.name] for s in STEPS)


@flow(name="glasswork-training", log_prints=True, persist_result=False)
def training(cfg: dict) -> dict:
    """Run every step on one resolved config; return each step's result."""
    from prefect.runtime import flow_run

    os.environ["GLASSWORK_FLOW_RUN_ID"] = str(flow_run.id)
    results = {"ingest": ingest(cfg)}
    results["prepare"] = prepare(cfg)
    results["train"] = train(cfg)
    results["evaluate"] = evaluate(cfg)
    results["explain"] = explain(cfg)
    if "drift" in _built(cfg):  # not built for every task yet (task=text_generation)
        results["drift"] = drift(cfg)
    results["register"] = register(cfg)
    return results


def _built(cfg: dict) -> tuple[str, ...]:
    from hydra.utils import get_class

    task: Any = get_class(cfg["task"]["_target_"])
    return task.steps


# What a run needs of a task: every step but drift (which a task may not have yet: the run says so).
RUN_STEPS = tuple(name for name in STEP_NAMES if name != "drift")


def run_pipeline(cfg: DictConfig) -> dict:
    """Check the inputs, run the flow, and print where its results are."""
    require_steps(cfg, RUN_STEPS)
    if "drift" not in _built(to_plain(cfg)):
        log.warning("glasswork run: task=%s has no drift step yet; the run skips it", cfg.task._target_.split(".")[-1])
    preflight(cfg)
    results = training(to_plain(cfg))
    print(where_to_look(cfg, results))
    return results


@flow(name="glasswork-scheduled-training", log_prints=True, persist_result=False)
def scheduled_training(overrides: list[str] | None = None) -> dict:
    """The training flow with its config composed from ``overrides`` (what a deployment's
    parameters can carry: a resolved config cannot be written by hand)."""
    from glasswork.config import load_config
    from pipelines.flow_parameters import deployment_run_overrides

    return run_pipeline(load_config(deployment_run_overrides(overrides)))


def _ui(uri: str) -> str:
    from glasswork.tracking import is_server

    if is_server(uri):
        return f"open {uri}"
    return f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   then open http://127.0.0.1:5000"


def where_to_look(cfg: DictConfig, results: dict) -> str:
    """The closing message: metrics, the champion decision, and the files and UI to open."""
    reg = results["register"]
    test = results["evaluate"]
    verdict = "took" if reg["promote"] else "did not take"
    drift = results.get("drift")
    auc = test.get("roc_auc", float("nan"))
    baseline = build(cfg).baseline_name
    model_uri = f"models:/{reg['model_name']}@{reg['alias']}" if reg["promote"] else reg["model_uri"]
    return "\n".join(
        [
            "",
            "Glasswork run finished.",
            f"  test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
            f"ROC-AUC {auc:.3f}, ECE {test['ece']:.3f}",
            f"  baseline ({baseline}, same split): accuracy {test['baseline_accuracy']:.3f}, "
            f"macro-F1 {test['baseline_macro_f1']:.3f}"
            + ("" if test["macro_f1"] > test["baseline_macro_f1"] else "  <- the trained model does not beat it"),
            *(["  THE MODEL LEARNED NOTHING (see the evaluate step's log)"] if test.get("learned_nothing") else []),
            f"  registered {reg['model_name']} v{reg['version']}; it {verdict} '{reg['alias']}': "
            + "; ".join(reg["reasons"]),
            *(
                [
                    f"  drift vs {drift['current']}: {'DRIFT' if drift['dataset_drift'] else 'no drift'} "
                    f"({drift['n_drifted']} of {drift['n_columns']} signals)"
                ]
                if drift
                else ["  drift: not built for this task yet"]
            ),  # fmt: skip
            "Where to look:",
            f"  MLflow UI:     {_ui(cfg.tracking.uri)}",
            f"  explanations:  {output(cfg, 'explain', 'attributions.html')} (and the figures beside it: "
            + ", ".join(sorted(p.name for p in output(cfg, "explain").glob("*.png")))
            + ")",
            *(
                [
                    f"  drift report:  {output(cfg, 'drift', 'report.html')} (explanations: explanation_report.html; "
                    "where the batch lands: embeddings.html)"
                ]
                if drift
                else []
            ),  # fmt: skip
            f"  metrics/plots: {output(cfg, 'evaluate')}/ (metrics.json, slices.png, confusion_matrix.png, roc.png, "
            "pr.png, calibration.png)",
            f"  the model:     mlflow.pyfunc.load_model('{model_uri}')",
            *(
                [f"  new data:      glasswork monitor FILE_OR_FOLDER   (scored and compared by the '{reg['alias']}')"]
                if drift
                else []
            ),  # fmt: skip
        ]
    )
