"""The ``register`` step: log the model as a pyfunc, register a version, and decide whether it
takes the ``champion`` alias.

The decision is made *before* anything is registered, so a failure while scoring the current
champion registers nothing; a failure after the version exists deletes that version again. The
champion is compared with the challenger on the same test texts: the paired difference on
``registry.compare_metric`` with its bootstrap interval, judged by ``registry.promote_if``
(:mod:`glasswork.champion_comparison`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from glasswork import tasks, tracking
from glasswork.champion import compare_with_champion, find_champion, slices_vs_champion
from glasswork.champion_comparison import check_promote_if, passes, rule_words
from glasswork.config import to_yaml
from glasswork.data.prepare import data_md5, load_labels, load_split, split_md5
from glasswork.errors import PipelineOrderError, first_line
from glasswork.explain.faithfulness import check_alpha
from glasswork.explain.gate import explanation_failures, faithfulness_gate
from glasswork.models.backbone import model_dir
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)
SLICE_GATE = "the slice gate"  # what registry.slice_alpha: null turns off


@dataclass
class Decision:
    """Whether the new version takes the alias, and every reason for the answer."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None
    champion_score: float | None = None
    champion_comparison: dict | None = None  # the paired difference and its interval (champion_comparison)


def check_thresholds(metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """The threshold rules the metrics fail (empty when all pass)."""
    failed = []
    for name, minimum in thresholds.items():
        value = metrics.get(name)
        if value is None:
            failed.append(f"threshold on {name}: the model has no test metric {name!r} (have {sorted(metrics)})")
        elif value < minimum:
            failed.append(f"test {name} = {value:.4f} is below the threshold {minimum}")
    return failed


def decide(
    metrics: dict[str, float],
    thresholds: dict[str, float],
    rule: DictConfig,
    champion: tuple[str, dict] | None,
    explanation_failures: list[str] | None = None,
    passed: list[str] | None = None,
) -> Decision:
    """Promote only if every threshold and explanation rule passes and the interval of the
    challenger's difference from the champion meets ``rule`` (``registry.promote_if``);
    ``champion``: its version and :func:`~glasswork.champion_comparison.paired_difference`.
    ``passed``: rules that held, in words, kept among the reasons."""
    reasons = check_thresholds(metrics, thresholds) + list(explanation_failures or [])
    ok = not reasons
    if ok and thresholds:
        reasons.append(f"passes every threshold ({', '.join(f'{k} >= {v}' for k, v in thresholds.items())})")
    if champion is None:
        reasons.append("there is no champion yet")
        return Decision(ok, reasons)
    version, comparison = champion
    held = passes(comparison, rule)
    c = comparison
    reasons.append(
        f"test {c['metric']}: challenger {c['challenger']:.4f} − champion v{version} {c['champion']:.4f} = "
        f"{c['difference']:+.4f} on the same {c['n_texts']} test examples ({100 * c['confidence']:g}% interval "
        f"{c['ci_low']:+.4f} to {c['ci_high']:+.4f}): {'meets' if held else 'FAILS'} the rule that "
        f"{rule_words(rule, c['metric'])} (registry.promote_if)"
    )
    return Decision(ok and held, reasons + list(passed or []), version, c["champion"], c)


def register(cfg: DictConfig) -> dict:
    """Log, register and maybe promote the trained model; write ``artifacts/register/registration.json``."""
    task = tasks.build(cfg)
    cfg = task.resolve(cfg)  # e.g. model.max_length=auto: the length prepare chose
    check_alpha("registry.slice_alpha", cfg.registry.slice_alpha, off=SLICE_GATE)
    check_promote_if(cfg.registry.promote_if)
    metrics = _test_metrics(cfg)
    run_id = tracking.current_run_id(cfg)
    tracking.configure(cfg)
    client = MlflowClient()
    name, alias = cfg.registry.model_name, cfg.registry.alias
    champion = find_champion(cfg, client, metrics, task.inputs())
    comparison = None if champion is None else compare_with_champion(cfg, champion)
    slice_rows, slice_failures = slices_vs_champion(cfg, champion)
    # A champion registered from this very run (the register step run again) is this model: its
    # explanations need no comparison with themselves.
    other = None if champion is None or champion.run_id == run_id else champion.version
    faithfulness_failures, faithfulness_held = faithfulness_gate(cfg, other)
    decision = decide(
        metrics,
        dict(cfg.registry.thresholds),
        cfg.registry.promote_if,
        None if champion is None or comparison is None else (champion.version, comparison),
        _learned_nothing(cfg) + explanation_failures(cfg) + faithfulness_failures + slice_failures,
        faithfulness_held,
    )
    holder = _alias_holder(client, name, alias)
    created: str | None = None
    try:
        # The outputs are committed last, after the run has closed: a failure anywhere before
        # leaves the previous registration.json in place.
        with atomic_dir(output(cfg, "register")) as out, tracking.step_run(cfg, "register"):
            # One training run, one version: a retry, or the step run again, takes the run's own.
            version = _version_of_run(client, name, run_id)
            if version is None:
                info = _log_pyfunc(cfg, task)
                version = created = _create_version(client, cfg, name, info, run_id, metrics, task.pyfunc().description)
            mlflow.set_tag("glasswork.registered_version", f"{name}/{version}")
            record = {
                "model_name": name,
                "version": version,
                "alias": alias,
                "model_uri": f"models:/{name}/{version}",
                **asdict(decision),
                "slices_vs_champion": slice_rows,
            }
            write_json(out / "registration.json", record)
            if decision.promote:  # the last act: nothing that can fail comes between it and the outputs
                client.set_registered_model_alias(name, alias, version)
    except BaseException:
        _roll_back(client, name, alias, holder, created)
        raise
    verb = f"took '{alias}'" if decision.promote else f"did NOT take '{alias}'"
    log.info("register: %s version %s %s because %s", name, version, verb, "; ".join(decision.reasons))
    return record


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version that holds ``alias`` now (None: no such model or alias)."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _version_of_run(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version this training run already registered under ``name``, if any."""
    try:
        versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return None
    return str(min(int(v.version) for v in versions)) if versions else None


def _roll_back(client: MlflowClient, name: str, alias: str, holder: str | None, created: str | None) -> None:
    """After a failed register: delete the version it created and give ``alias`` back to the
    version that held it (MLflow drops an alias with the version it points to), so that a
    failure never leaves the model without its champion, nor with a new one."""
    try:
        if created is not None:
            client.delete_model_version(name, created)
        if _alias_holder(client, name, alias) != holder:
            if holder is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, holder)
    except MlflowException as err:  # the registry itself is failing: say what to check by hand
        log.error(
            "register: could not restore '%s' of %s to %s (%s): check it in the MLflow UI",
            alias,
            name,
            f"v{holder}" if holder else "no version",
            first_line(err),
        )


def _test_metrics(cfg: DictConfig) -> dict[str, float]:
    path = output(cfg, "evaluate", "metrics.json")
    if not path.is_file():
        raise PipelineOrderError(f"{path} is missing: run `glasswork evaluate` first")
    return read_json(path)["test"]


def _learned_nothing(cfg: DictConfig) -> list[str]:
    """The rule that a model whose test predictions collapsed (``evaluate`` flagged it) never
    takes the alias, whatever its accuracy: on a 10:1 table, answering the majority is 0.91."""
    reason = read_json(output(cfg, "evaluate", "metrics.json")).get("learned_nothing")
    return [f"the model learned nothing: {reason}"] if reason and cfg.registry.learned_nothing_gate else []


def _slice_tags(cfg: DictConfig) -> dict[str, str]:
    """The test slices whose accuracy lies significantly below overall (``evaluate/slices.json``),
    so that the registry UI shows where a version is weak."""
    path = output(cfg, "evaluate", "slices.json")
    if not path.is_file():  # written by evaluate since slices exist; older outputs lack it
        return {}
    result = read_json(path)
    flagged = [row["slice"] for row in result["slices"] if row["flagged"]]
    tags = {"glasswork.flagged_slices": ", ".join(flagged) or "none"}
    if "crossings" in result:
        tags["glasswork.flagged_crossings"] = ", ".join(r["slice"] for r in result["crossings"]["flagged"]) or "none"
    return tags


def _log_pyfunc(cfg: DictConfig, task):
    """Log the trained model as the task's pyfunc ("models from code"), with a signature and an
    input example of three test rows scored by the model itself."""
    path, spec = model_dir(cfg), task.pyfunc()
    example = load_split(cfg, "test")[task.inputs()].head(3).reset_index(drop=True)
    labels = load_labels(cfg)
    answer = getattr(task, "example_output", None)  # a model that does not answer with a class
    if answer is not None:
        output, params = answer(path, example)
    else:
        probs = task.predictor(path).predict_proba(example, batch_size=8)
        output, params = pd.DataFrame({"label": [str(labels["classes"][i]) for i in probs.argmax(1)]}), None
        for i, n in enumerate(labels["names"]):
            output[f"prob_{n}"] = probs[:, i].astype(np.float64)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=spec.code,
        artifacts={"model": str(path)},
        code_paths=spec.code_paths or None,
        signature=infer_signature(example, output, params),
        input_example=example,
        pip_requirements=spec.requirements,
    )


def _create_version(
    client: MlflowClient, cfg: DictConfig, name: str, info, run_id: str, metrics: dict, description: str
) -> str:
    created = False
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
        created = True
    tags = {
        **tracking.lineage_tags(cfg),
        "glasswork.data_md5": data_md5(cfg),
        "glasswork.test_split_md5": split_md5(cfg, "test"),
        "glasswork.config": tracking.config_tag(to_yaml(cfg)),
        **{f"glasswork.test.{k}": f"{v:.6f}" for k, v in metrics.items()},
        **_slice_tags(cfg),
    }
    try:
        # A tracking server accepts a `models:/m-...` source only with its model id.
        version = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
    except BaseException:
        if created:  # leave no empty registered model behind
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(name)
        raise
    return str(version.version)
