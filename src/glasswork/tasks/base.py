"""What a kind of model supplies to the steps, and what every kind shares.

A task is built once per step from the config's ``task`` group (``conf/task/*.yaml``, each a
``_target_`` that Hydra's ``instantiate`` builds): ``task=text_classification`` is the default.
The steps call the task where they need something that depends on the kind of input (how a
batch is made, how the model is built and saved, how a split is scored, which descriptors slice
and describe it) and keep everything else (tracking, the splits, metrics, plots, the registry
gate) as one piece of code for every task.

What is behind the seam today: ingest and prepare (reading and checking the raw data, the data
card), training (module, batches, saving the model) and evaluation (scoring, descriptors for
slices, the baseline beside the model), explanation (each task's methods; the faithfulness
measure's AOPC and gains and the cascading randomisation check are shared) drift and monitor (the
batch and what describes a row; the comparison, the estimate and the outputs are shared:
:mod:`glasswork.comparison`), register (the pyfunc) and retraining from a monitored batch
(:meth:`Task.retraining`); ``reproduce`` reruns the recorded config's steps, whatever its task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from omegaconf import DictConfig

if TYPE_CHECKING:  # Lightning takes seconds to import; the CLI builds tasks to check configs
    import lightning as L

    from glasswork.batch import Batch
    from glasswork.data.schema import CleanTable
    from glasswork.drift import View
    from glasswork.drift_report import DriftResult


@dataclass(frozen=True)
class PyfuncSpec:
    """How the register step logs a task's model: the file logged as its code ("models from
    code"), files that code imports (``code_paths``), what it needs installed, and the
    registered model's description (what goes in and what comes out)."""

    code: str
    requirements: list[str]
    description: str
    code_paths: list[str] = field(default_factory=list)


def requirements(*packages: str) -> list[str]:
    """``name==version`` of each installed package (its import name), mlflow, pandas and numpy first."""
    import importlib

    names = ("mlflow", "pandas", "numpy", *packages)
    pins = {"PIL": "pillow"}  # import name -> distribution name
    found = []
    for name in names:
        version = importlib.import_module(name).__version__.split("+")[0]
        found.append(f"{pins.get(name, name)}=={version}")
    return found


class Predictor(Protocol):
    """A trained model loaded for inference."""

    def predict_proba(self, frame: pd.DataFrame, batch_size: int, progress: bool = False) -> np.ndarray:
        """Class probabilities of each row of ``frame`` (a processed split's columns), in its order."""
        ...


class Describer(Protocol):
    """What the drift step asks of a task's trained model (:class:`glasswork.drift.TextDescriber`,
    :class:`glasswork.image_drift.ImageDescriber`)."""

    rows: tuple[str, str]  # what the batch map calls its points and their embeddings

    def describe(self, frame: pd.DataFrame, labels: list[str] | None) -> View:
        """Score, embed and describe the rows of ``frame``; ``labels`` are class names."""
        ...

    def explanation_drift(self, current: pd.DataFrame, baseline: dict | None) -> tuple[dict, DriftResult | None]:
        """How the model's explanations moved from ``baseline`` (the explain step's global view) to
        the batch's rows: the summary and its report (or why not)."""
        ...


class Task(Protocol):
    """What one kind of model supplies. Implementations: :mod:`glasswork.tasks.text`,
    :mod:`glasswork.tasks.image`."""

    name: str
    baseline_name: str  # the simple model fitted beside it (evaluate), in words
    steps: tuple[str, ...]  # the pipeline steps this task has (glasswork.tasks.require_steps)
    slice_by: dict[str, tuple[str, float, str]]  # descriptors cut at tertiles (glasswork.slices)

    def inputs(self) -> list[str]:
        """The columns of a processed split that hold the model's input (``text``; ``image``; a
        table's feature columns, which ``prepare`` decided): the registered model's input too."""
        ...

    def preflight(self, cfg: DictConfig) -> list:
        """A run's checks of the task's own settings and data, before anything is written; the
        data's classes (:func:`glasswork.preflight.preflight` adds what every task shares)."""
        ...

    def ingest(self, cfg: DictConfig) -> dict:
        """Write packaged data to ``data.path`` (``{role: path}`` of what was written); a user's own
        data is only checked where it lies."""
        ...

    def read(self, cfg: DictConfig) -> CleanTable:
        """The checked raw data: a frame with the :meth:`inputs` columns, ``label`` (original values) and
        metadata columns, its sorted classes, and a report of what was dropped and why."""
        ...

    def card(self, cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
        """The data card ``prepare`` writes (:func:`glasswork.data.card.card` and the task's own lines)."""
        ...

    def resolve(self, cfg: DictConfig) -> DictConfig:
        """``cfg`` with the values ``prepare`` chose from the data filled in (e.g. a text length)."""
        ...

    def module(self, cfg: DictConfig, num_labels: int, class_weights: list[float] | None = None) -> L.LightningModule:
        """A new LightningModule to train (pretrained weights where the config names them)."""
        ...

    def datamodule(self, cfg: DictConfig, train: pd.DataFrame, val: pd.DataFrame) -> L.LightningDataModule:
        """Training and validation batches over two processed splits."""
        ...

    def log_training_data(self, cfg: DictConfig, train: pd.DataFrame) -> None:
        """Anything about the training data worth a metric or a warning before training starts."""
        ...

    def save(self, net, folder: Path, labels: dict, cfg: DictConfig) -> None:
        """Write the trained network (``module.net``) and all that inference needs into ``folder``."""
        ...

    def predictor(self, folder: Path, device: str = "cpu") -> Predictor:
        """The model that :meth:`save` wrote, ready to score."""
        ...

    def descriptors(self, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        """Numbers that describe each row's input (length, brightness, ...): slices and drift."""
        ...

    def drift_batch(self, cfg: DictConfig) -> pd.DataFrame:
        """The batch ``drift`` compares with the training reference (``drift.current``), with the
        input column and, where known, ``label`` as raw class values."""
        ...

    def describer(self, cfg: DictConfig, folder: Path | None = None) -> Describer:
        """The trained model (in ``folder``; default the work folder's), ready to describe rows
        for a comparison (:func:`glasswork.comparison.compare_batch`)."""
        ...

    def monitor_batch(self, source: Path, cfg: DictConfig, ref) -> Batch:
        """A new batch for ``glasswork monitor`` (a file or folder), with a seeded sample of
        ``monitor.sample_size`` rows read; ``ref`` is the champion's :class:`glasswork.monitor.Reference`."""
        ...

    def score_batch(self, path: Path, batch: Batch, describer: Describer, ref, cfg: DictConfig) -> dict[str, int]:
        """Score every row of ``batch`` into the parquet file ``path``; the counts per predicted class."""
        ...

    def retraining(self, cfg: DictConfig, summary: dict) -> list[str] | None:
        """For ``monitor.on_drift=retrain``: the champion's data plus the drifted batch's labelled
        rows written as one table, and the ``data`` overrides that train on it; ``None`` (having
        logged why) when there is nothing to retrain on."""
        ...

    def pyfunc(self) -> PyfuncSpec:
        """How ``register`` logs the trained model (the columns it takes are :meth:`inputs`)."""
        ...

    def explain(self, cfg: DictConfig) -> dict:
        """The explain step: explain the probe sample, measure the explanations, write
        ``artifacts/explain/`` and log it; returns the metrics."""
        ...

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
        """Test ``accuracy`` and ``macro_f1`` of a simple model fitted on the same training split."""
        ...
