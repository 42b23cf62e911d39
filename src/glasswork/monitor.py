"""``glasswork monitor BATCH``: score a new batch with the ``champion`` and tell whether, and how,
it moved away from the data that champion was trained on.

The reference is found through the champion's lineage tags, never through a path in today's
config: its recorded config says where its prepared splits were, and the recorded data version
(``glasswork.data_md5``) must match what is there. The calibration for the label-free accuracy
estimate and the explanation baseline come from the champion's own MLflow run. Each check is
one MLflow run in ``monitor.experiment_name``, tagged with the model version it watched.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from glasswork import comparison, tracking
from glasswork.batch import Batch, read_batch, stream
from glasswork.comparison import compare_batch
from glasswork.config import recorded_config
from glasswork.data.prepare import split_files, splits_md5
from glasswork.drift import drift_metadata, label_indices, save_explanation_page
from glasswork.errors import GlassworkError, LineageError, first_line
from glasswork.evaluate import PREDICTIONS, VAL_PREDICTIONS, read_predictions
from glasswork.explain.embeddings import check_projection
from glasswork.explain.faithfulness import check_alpha, check_sample
from glasswork.outputs import atomic_dir, fetch_file, read_json, write_json
from glasswork.serving import predict_proba

log = logging.getLogger(__name__)

ON_DRIFT = ("alert", "retrain", "none")


class NoChampionError(GlassworkError):
    """The registry has no version under the alias to monitor."""


@dataclass
class Reference:
    """What the champion was trained and checked on, found through its lineage: where it came
    from (name, version, run, recorded config, model folder, splits) and the data a comparison
    needs (:class:`glasswork.comparison.Reference`)."""

    name: str
    version: str
    run_id: str
    model_dir: Path
    splits_dir: Path
    recorded: DictConfig  # the config the champion was trained with (its task, its data settings)
    data: comparison.Reference
    model_id: str | None = None  # MLflow 3's LoggedModel behind the version

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def train(self) -> pd.DataFrame:  # the prepared training split: the input, label (class index)
        return self.data.train

    @property
    def labels(self) -> dict:  # classes (raw values), names
        return self.data.labels

    def task(self):
        """The champion's own task (a config recorded before tasks existed: text)."""

        from glasswork import tasks

        if OmegaConf.select(self.recorded, "task._target_") is None:
            return tasks.get_task("glasswork.tasks.text.TextClassification", self.recorded)
        return tasks.build(self.recorded)


def champion(cfg: DictConfig):
    """The model version holding ``registry.alias``, or a message saying how to get one."""
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    name, alias = cfg.registry.model_name, cfg.registry.alias
    try:
        return client, client.get_model_version_by_alias(name, alias)
    except MlflowException:
        raise NoChampionError(
            f"no version of model {name!r} holds the alias {alias!r} in the registry at {cfg.tracking.uri}: "
            f"run `glasswork run` first (its register step gives {alias!r} to a model that passes the gate), "
            f"or point the alias at a version: MlflowClient().set_registered_model_alias({name!r}, {alias!r}, N)"
        ) from None


def find_reference(client: MlflowClient, version, cache: Path) -> Reference:
    """Follow the version's lineage tags to its training data, its run's artifacts and its model."""
    label = f"{version.name} v{version.version}"
    tags = version.tags
    if "glasswork.data_md5" not in tags:
        raise LineageError(f"{label} has no glasswork.data_md5 tag: it was not registered by `glasswork register`")
    recorded = recorded_config(tracking.recorded_config_text(client, version, cache / "run"), label)
    splits = _reference_splits(version, Path(recorded.paths.processed_dir), cache, label)
    model_dir = _download(f"models:/{version.name}/{version.version}", cache / "model") / "artifacts" / "model"
    data = comparison.Reference(
        train=pd.read_parquet(splits / "train.parquet"),
        test=pd.read_parquet(splits / "test.parquet"),  # in the order of the champion's predictions
        labels=read_json(splits / "labels.json"),
        validation=_run_artifact(version.run_id, f"evaluate/{VAL_PREDICTIONS}", cache, read_predictions),
        predictions=_logged_predictions(version.run_id, cache),
        explanations=_run_artifact(version.run_id, "explain/global_importance.json", cache, read_json),
        val=pd.read_parquet(splits / "val.parquet"),
    )
    return Reference(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        model_dir=model_dir,
        splits_dir=splits,
        recorded=recorded,
        data=data,
        model_id=logged_model_id(version),
    )


def _reference_splits(version, local: Path, cache: Path, label: str) -> Path:
    """The folder holding the version's data version: the local processed splits when they are
    still that version, else the copy its training run logged (downloaded once into ``cache``)."""
    wanted = version.tags["glasswork.data_md5"]
    found = splits_md5(local)
    if found == wanted:
        return local
    logged = _logged_splits(version.run_id, cache / "data")
    if logged is not None and splits_md5(logged) == wanted:
        log.info("monitor: %s holds data version %s, not %s's: reading the copy its run logged", local, found, label)
        return logged
    commit = version.tags.get("glasswork.git_commit", "?")[:12]
    run_copy = "holds no copy" if logged is None else f"holds {splits_md5(logged)}"
    raise LineageError(
        f"{label} was trained on data version {wanted} (tag glasswork.data_md5), but {local} holds {found} and "
        f"its run's {tracking.SPLITS_ARTIFACT} {run_copy}: restore its splits "
        f"(`git checkout {commit} -- dvc.lock && dvc checkout`, or `dvc pull` on a fresh clone) and run again"
    )


def _logged_splits(run_id: str, target: Path) -> Path | None:
    """The run's logged splits, downloaded once; ``None`` when the run logged none (trained
    before runs carried their data)."""
    try:
        folder = _download(f"runs:/{run_id}/{tracking.SPLITS_ARTIFACT}", target)
    except (MlflowException, OSError) as err:
        log.info("monitor: run %s has no %s (%s)", run_id, tracking.SPLITS_ARTIFACT, first_line(err))
        return None
    found = folder / Path(tracking.SPLITS_ARTIFACT).name
    return found if all(path.is_file() for path in split_files(found)) else None


def logged_model_id(version) -> str | None:
    """The MLflow 3 LoggedModel behind a version (the SQLite store leaves ``model_id`` empty,
    but the version's source names it: ``models:/m-...``)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _logged_predictions(run_id: str, cache: Path) -> pd.DataFrame | None:
    """The champion's test predictions: Parquet, or the CSV of versions logged before it."""
    for name in (PREDICTIONS, "predictions.csv"):
        found = _run_artifact(run_id, f"evaluate/{name}", cache, read_predictions)
        if found is not None:
            return found
    return None


def _download(uri: str, target: Path) -> Path:
    """Download once per version into the cache (all or nothing)."""
    if not target.is_dir():
        with atomic_dir(target) as staging:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging))
    return target


def _run_artifact(run_id: str, path: str, cache: Path, read):
    target = cache / "run" / path
    if not target.is_file():
        try:
            # A single file lands directly in dst_path, without its artifact folders.
            fetch_file(
                target,
                lambda into: mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=into),
            )
        except (MlflowException, OSError):
            log.warning("monitor: run %s has no artifact %s", run_id, path)
            return None
    return read(target)


def monitor(cfg: DictConfig, source: Path) -> dict:
    """Score ``source`` with the champion, compare it with the champion's reference, log one
    MLflow run, and write ``<monitor.output_dir>/<time>-<batch>/`` (predictions.parquet,
    report.html, explanation_report.html, embeddings.html, drift.json, metrics.json). Returns the summary
    (``drift.json``)."""
    check_projection(cfg.explain.projection)
    check_sample(cfg.explain.faithfulness_max_texts)
    check_alpha("drift.explanation_alpha", cfg.drift.explanation_alpha)
    tracking.check_store(cfg)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_registry_uri(cfg.tracking.uri)
    client, version = champion(cfg)
    output = Path(cfg.monitor.output_dir)
    ref = find_reference(client, version, output / ".cache" / f"{version.name}-v{version.version}")
    task = ref.task()
    cfg = as_trained(cfg, ref.model_dir)
    batch = task.monitor_batch(Path(source), cfg, ref)
    log.info("monitor: %s rows in %d file(s) of %s, watched with %s", batch.n_rows, len(batch.files), source, ref.label)
    describer = task.describer(cfg, ref.model_dir)
    folder = output / f"{time.strftime('%Y%m%dT%H%M%S')}-{Path(source).stem}"
    with atomic_dir(folder) as out, _monitor_run(cfg, ref, batch) as run:
        counts = task.score_batch(out / "predictions.parquet", batch, describer, ref, cfg)
        summary, found = _compare(batch, describer, ref, tuple(task.inputs()), cfg)
        summary |= {"predicted_counts": counts, "output_dir": str(folder), "mlflow_run_id": run.info.run_id}
        summary["task"] = task.name
        found.result.save_html(out / "report.html")
        save_explanation_page(found.explanation_report, found.explained, out / "explanation_report.html")
        (out / "embeddings.html").write_text(found.landing, encoding="utf-8")
        write_json(out / "drift.json", summary)
        write_json(out / "metrics.json", {"drift": summary["metrics"]})
        mlflow.set_tags(
            {
                "glasswork.drift_verdict": "drift" if summary["dataset_drift"] else "no drift",
                "glasswork.monitor.drifted_signals": ", ".join(summary["drifted_signals"]) or "none",
            }
        )
        # With model_id the numbers also show on the champion's own model page in the MLflow UI.
        mlflow.log_metrics({f"drift/{k}": float(v) for k, v in summary["metrics"].items()}, model_id=ref.model_id)
        mlflow.log_artifacts(str(out), "monitor")
    log.info("monitor: %s vs %s's training data -> %s", source, ref.label, summary["verdict_words"])
    return summary


def as_trained(cfg: DictConfig, model_dir: Path) -> DictConfig:
    """``cfg`` with ``model.max_length`` the length the champion was trained and is served at (its
    folder's labels.json): the config's own is ``auto`` by default, which ``prepare`` resolves for a
    run but nothing does for a check, or another model's number."""
    saved = model_dir / "labels.json"
    length = read_json(saved).get("max_length") if saved.is_file() else None
    if length is None or OmegaConf.select(cfg, "model.max_length") is None:
        return cfg
    resolved = copy.deepcopy(cfg)
    resolved.model.max_length = int(length)
    return resolved


def metadata_columns(train: pd.DataFrame, cfg: DictConfig, inputs: tuple[str, ...] = ("text",)) -> tuple[str, ...]:
    """The champion's metadata columns (``data.slice_columns``) to read from a batch beside the
    input and the label, where the batch has them (its drift signals ``meta:NAME``)."""
    taken = (*inputs, "label", "file", "row", "path", cfg.monitor.text_column, cfg.monitor.label_column)
    return tuple(c for c in train.columns if c not in taken)


def record_action(summary: dict, action: str) -> None:
    """Add what was done about the verdict to ``drift.json`` and the check's MLflow run."""
    summary["action"] = action
    path = Path(summary["output_dir"]) / "drift.json"
    write_json(path.with_suffix(".partial"), summary).replace(path)
    MlflowClient().set_tag(summary["mlflow_run_id"], "glasswork.monitor.action", action)


def _compare(batch: Batch, describer, ref: Reference, inputs: tuple[str, ...], cfg: DictConfig):
    """The batch's sample against the champion's reference (:func:`glasswork.comparison.compare_batch`,
    as the drift step compares), with what monitor adds: labels the model never saw, and the
    label tested only when every sampled row has one it knows."""
    sample = batch.sample
    labels = None
    unseen: list[str] = []
    if batch.has_labels:
        labelled = sample["label"] != ""
        index, unseen = label_indices(sample["label"], ref.labels["classes"])
        labels = np.where(labelled.to_numpy(), index, -1)
        unseen = [u for u in unseen if u]  # "": a row without a label, not an unknown one
        if unseen:
            log.warning(
                "monitor: %s carries labels %s never seen in training (the model knows %s); "
                "those rows are left out of the accuracy and of retraining",
                batch.source,
                unseen[:10],
                [str(c) for c in ref.labels["classes"]],
            )
    # Label drift is tested only when every sampled row has a label the model knows.
    test_labels = labels is not None and (labels >= 0).all()
    metadata = [c for c in drift_metadata(ref.train, sample, inputs) if c in metadata_columns(ref.train, cfg, inputs)]
    found = compare_batch(
        ref.data,
        describer,
        sample,
        labels,
        Path(batch.source).name,
        cfg,
        sample_size=cfg.monitor.sample_size,
        metadata=metadata,
        test_labels=bool(test_labels),
    )
    summary = {
        "model": ref.label,
        "model_run_id": ref.run_id,
        "reference": str(ref.splits_dir / "train.parquet"),
        "batch": batch.summary(),
        "n_current": len(sample),
        **found.summary(),
        "label_drift": "tested" if test_labels else "not tested: the batch has no labels for every sampled row",
        "unseen_labels": unseen,
        "metrics": found.metrics,
        "verdict_words": found.words,
    }
    return summary, found


def read_text_batch(source: Path, cfg: DictConfig, ref: Reference, inputs: tuple[str, ...] = ("text",)) -> Batch:
    """The text task's batch: a file or a folder of csv, parquet or jsonl files (:mod:`glasswork.batch`);
    ``inputs``: the split's input columns, which are not metadata."""
    return read_batch(
        source,
        text_column=cfg.monitor.text_column,
        label_column=cfg.monitor.label_column,
        sample_size=cfg.monitor.sample_size,
        seed=cfg.seed,
        extra=metadata_columns(ref.train, cfg, inputs),
        encoding=cfg.monitor.encoding,
    )


def write_predictions(path: Path, batch: Batch, describer, ref: Reference, cfg: DictConfig) -> dict[str, int]:
    """Score every row of a text batch into one parquet file; return the counts per predicted class."""
    names = [str(n) for n in ref.labels["names"]]

    def score(texts: list[str]) -> tuple[dict, list[str]]:
        probs = predict_proba(
            describer.model, describer.tokenizer, texts, cfg.trainer.eval_batch_size, cfg.model.max_length
        )
        predicted = [names[i] for i in probs.argmax(axis=1)]
        columns = {"text": texts, "predicted": predicted}
        return columns | {f"prob_{n}": probs[:, i].astype(np.float64) for i, n in enumerate(names)}, predicted

    return write_scored(path, batch, cfg, score, names, ("scoring the batch", "row"))


def write_scored(path: Path, batch: Batch, cfg: DictConfig, score, kinds: list[str], bar: tuple[str, str]) -> dict:
    """Stream every row of ``batch``'s files through ``score`` (a chunk's inputs -> its columns and
    the value to count of each row), chunk by chunk, into one parquet file with each row's file,
    row number and label (where the batch has labels); return the count of each of ``kinds``.
    ``bar``: the progress bar's words (what it does, its unit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    counts = dict.fromkeys(kinds, 0)
    writer = None
    with tqdm(total=batch.n_rows, desc=bar[0], unit=bar[1], leave=False) as progress:
        for file in batch.files:
            start = 0
            for chunk in stream(file, cfg.monitor.text_column, cfg.monitor.label_column, encoding=cfg.monitor.encoding):
                inputs = [t or "" for t in chunk.column("text").to_pylist()]
                scored, counted = score(inputs)
                columns = {"file": [str(file)] * len(inputs), "row": np.arange(start, start + len(inputs)), **scored}
                if batch.has_labels:  # every file, labelled or not: one schema for the whole batch
                    columns["label"] = chunk.column("label")
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
                for value in counted:
                    counts[value] = counts.get(value, 0) + 1
                start += len(inputs)
                progress.update(len(inputs))
    if writer is not None:
        writer.close()
    return counts


def _monitor_run(cfg: DictConfig, ref: Reference, batch: Batch):
    """One MLflow run per check (failed if the check fails), tagged with the model version it watched."""
    # Not mlflow.set_experiment: it would pin this process to the experiment, and a retraining
    # flow run in the same process could not reopen its model's run in another one.
    experiment_id = tracking.experiment_id(cfg, cfg.monitor.experiment_name)
    tags = {
        "glasswork.monitor.model": f"{ref.name}/{ref.version}",
        "glasswork.monitor.model_run_id": ref.run_id,
        "glasswork.monitor.batch": str(batch.source),
    }
    mlflow.end_run()  # a run left open by an earlier step in this process
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor {ref.label} {batch.source.name}", tags=tags)
    mlflow.log_params({"n_rows": batch.n_rows, "n_files": len(batch.files), "n_skipped": len(batch.skipped)})
    return run
