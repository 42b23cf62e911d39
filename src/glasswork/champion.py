"""The current champion of ``registry.model_name`` as the ``register`` step's gate sees it: found
through its alias, scored on *this* run's test split (its run's logged predictions where it was
tested on the same split, its pyfunc otherwise), compared with the challenger on the same texts
(:mod:`glasswork.champion_comparison`) and slice by slice; and the labels it predicts, which
``preflight`` checks a new dataset's against before any training."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.champion_comparison import paired_difference, passes, rule_words
from glasswork.data.prepare import load_labels, load_split, split_md5
from glasswork.errors import ConfigError, PipelineOrderError, first_line
from glasswork.evaluate import PREDICTIONS, read_predictions, split_slices
from glasswork.slices import compare_slices
from glasswork.steps import output

log = logging.getLogger(__name__)


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


def find_champion(
    cfg: DictConfig, client: MlflowClient, metrics: dict[str, float], inputs: list[str]
) -> Champion | None:
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
