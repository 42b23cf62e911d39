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
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from glasswork import tasks, tracking
from glasswork.champion_comparison import check_promote_if, paired_difference, passes, rule_words
from glasswork.config import to_yaml
from glasswork.data.prepare import data_md5, load_labels, load_split, split_md5
from glasswork.errors import ConfigError, PipelineOrderError, first_line
from glasswork.evaluate import PREDICTIONS, read_predictions, split_slices
from glasswork.explain.faithfulness import check_alpha
from glasswork.explain.gate import explanation_failures, faithfulness_gate
from glasswork.models.backbone import model_dir
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.slices import compare_slices
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
    champion = _champion(cfg, client, metrics, task.inputs())
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


@dataclass
class Champion:
    """The current holder of the alias, scored on *our* test split: its class probabilities per
    test text (in test order)."""

    version: str
    probs: np.ndarray
    run_id: str | None = None

    def right(self, truth: np.ndarray) -> np.ndarray:
        """Per test text, whether the champion got it right."""
        return self.probs.argmax(axis=1) == truth


def _champion(cfg: DictConfig, client: MlflowClient, metrics: dict[str, float], inputs: list[str]) -> Champion | None:
    """The champion on our test split: its run's logged predictions when it was tested on the
    same split, its pyfunc scoring the split otherwise."""
    name, alias, metric = cfg.registry.model_name, cfg.registry.alias, cfg.registry.compare_metric
    if metric not in metrics:
        raise ConfigError(f"registry.compare_metric={metric!r} is not among the test metrics {sorted(metrics)}")
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    test = load_split(cfg, "test")
    names = [str(n) for n in load_labels(cfg)["names"]]
    if champion.tags.get("glasswork.test_split_md5") == split_md5(cfg, "test"):
        probs = _logged_probs(champion.run_id, test, names)
        if probs is not None:
            return Champion(str(champion.version), probs, champion.run_id)
    log.info("register: scoring champion v%s on this test split through its pyfunc", champion.version)
    predicted = mlflow.pyfunc.load_model(f"models:/{name}@{alias}").predict(test[inputs])
    classes = [str(c) for c in load_labels(cfg)["classes"]]
    probs = predicted[[c for c in predicted.columns if c.startswith("prob_")]].to_numpy(float)
    if predicted["label"].isin(classes).all() and probs.shape[1] == len(classes):
        return Champion(str(champion.version), probs, champion.run_id)
    raise ConfigError(
        f"champion v{champion.version} of {name!r} predicts other labels than this data's {classes}: "
        "register this model under its own name (registry.model_name=...)"
    )


def compare_with_champion(cfg: DictConfig, champion: Champion) -> dict:
    """The challenger's ``registry.compare_metric`` minus the champion's on the same test texts,
    with its interval, the rule and whether it holds."""
    test = load_split(cfg, "test")
    mine = _logged_probs_of(read_predictions(output(cfg, "evaluate", PREDICTIONS)), test, None)
    if mine is None:
        raise PipelineOrderError("evaluate/predictions.parquet is not of this test split: run `glasswork evaluate`")
    rule = cfg.registry.promote_if
    truth = test["label"].to_numpy()
    comparison = paired_difference(truth, mine, champion.probs, cfg.registry.compare_metric, rule.confidence, cfg.seed)
    return comparison | {"rule": rule_words(rule, comparison["metric"]), "passed": passes(comparison, rule)}


def champion_classes(cfg: DictConfig) -> tuple[str, list[str]] | None:
    """The current champion's version and the labels it predicts (its run's ``data/labels.json``),
    or ``None`` when there is no champion (a local store not yet created has none)."""
    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    tracking.configure(cfg)
    try:
        champion = MlflowClient().get_model_version_by_alias(cfg.registry.model_name, cfg.registry.alias)
    except MlflowException:
        return None
    try:
        labels = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/data/labels.json")
    except (MlflowException, OSError) as err:
        log.warning("register: the labels of champion v%s are unknown (%s)", champion.version, first_line(err))
        return None
    return str(champion.version), [str(c) for c in labels["classes"]]


def check_same_labels(cfg: DictConfig, classes: list) -> None:
    """Refuse, before any training, data whose labels differ from those the champion of
    ``registry.model_name`` predicts: the gate could not compare the two models."""
    found = champion_classes(cfg)
    mine = [str(c) for c in classes]
    if found is None or found[1] == mine:
        return
    version, theirs = found
    other = cfg.data.registry_name if cfg.data.registry_name != cfg.registry.model_name else "glasswork-NAME"
    raise ConfigError(
        f"registry.model_name={cfg.registry.model_name!r}: its '{cfg.registry.alias}' (v{version}) predicts the "
        f"labels {theirs}, but {cfg.data.path} has {mine}: register this data's model under a name of its own, "
        f"e.g. registry.model_name={other}"
    )


def _logged_probs(run_id: str, test: pd.DataFrame, names: list[str]) -> np.ndarray | None:
    """Per test text, the class probabilities the run's own evaluate step logged (Parquet, or
    the CSV of runs logged before it); ``None`` when they are missing or of another split."""
    logged = None
    with tempfile.TemporaryDirectory() as folder:
        for name in (PREDICTIONS, "predictions.csv"):
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"evaluate/{name}", dst_path=folder
                )
                logged = read_predictions(path)
                break
            except (MlflowException, OSError) as err:
                reason = first_line(err)
    if logged is None:
        log.warning("register: no predictions of the champion's run %s (%s)", run_id, reason)
        return None
    return _logged_probs_of(logged, test, names)


def _logged_probs_of(logged: pd.DataFrame, test: pd.DataFrame, names: list[str] | None) -> np.ndarray | None:
    """The ``prob_<name>`` columns of an evaluate step's predictions, in class order, when they are
    of this test split's rows (``names``: the classes to expect; ``None``: as they come). Rows are
    matched on what identifies them where both sides have it (the text, an image's path); the
    callers have matched the test split's md5 before."""
    columns = [c for c in logged.columns if c.startswith("prob_")] if names is None else [f"prob_{n}" for n in names]
    same = [c for c in ("text", "path") if c in logged.columns and c in test.columns]
    if len(logged) != len(test) or any((logged[c].astype(str) != test[c].astype(str).to_numpy()).any() for c in same):
        log.warning("register: logged predictions of %d rows are not of this test split", len(logged))
        return None
    if not columns or not set(columns) <= set(logged.columns):
        log.warning("register: the logged predictions have no columns %s", columns)
        return None
    return logged[columns].to_numpy(float)


def slices_vs_champion(cfg: DictConfig, champion: Champion | None) -> tuple[list[dict], list[str]]:
    """Each test slice of the challenger against the champion on the same texts, and the slices
    where it is significantly worse, in words (the gate's reasons; ``registry.slice_alpha: null``
    turns the gate off; ``register`` checked the setting)."""
    alpha = cfg.registry.slice_alpha
    if champion is None or alpha is None:
        return [], []
    test = load_split(cfg, "test")
    predictions = read_predictions(output(cfg, "evaluate", PREDICTIONS))
    mine = (predictions["actual"] == predictions["predicted"]).to_numpy()
    slices = split_slices(cfg, test, load_labels(cfg)["names"])
    rows = compare_slices(slices, champion.right(test["label"].to_numpy()), mine, alpha)
    failures = [
        f"slice '{r['slice']}' (n={r['n']}) is worse than champion v{champion.version}'s: accuracy "
        f"{r['champion_accuracy']:.3f} -> {r['accuracy']:.3f}, {r['lost']} test examples lost and {r['won']} won "
        f"(McNemar p = {r['p_value']:.1e} <= {alpha}/{len(rows)})"
        for r in rows
        if r["regressed"]
    ]
    return rows, failures


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
