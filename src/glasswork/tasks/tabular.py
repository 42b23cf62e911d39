"""``task=tabular_classification``: a multilayer perceptron trained on a table of features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork.data.tabular import Columns, Preprocessor
from glasswork.errors import ConfigError, DataError
from glasswork.outputs import read_json, write_json
from glasswork.steps import processed

PREPROCESS = "preprocess.json"  # the preprocessing fitted on the training split: saved with the model
SOURCES = ("fair", "table")


class TablePredictor:
    """A trained :class:`~glasswork.models.mlp.MLP` and the preprocessing it was trained with."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from glasswork.models.mlp import MLP

        self.net = MLP.from_pretrained(folder).to(device)
        self.device = device
        self.pre = Preprocessor.from_json(read_json(Path(folder) / PREPROCESS))

    def features(self, frame: pd.DataFrame, source: str = "the table") -> np.ndarray:
        return self.pre.transform(frame.reset_index(drop=True), source)[0]

    def embed(self, features: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Last hidden layer's activations and class probabilities of preprocessed rows."""
        import torch

        hidden, probs = [], []
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                x = torch.from_numpy(features[start : start + batch_size]).to(self.device)
                h = self.net.embed(x)
                hidden.append(h.float().cpu().numpy())
                probs.append(torch.softmax(self.net.classifier(h).float(), -1).cpu().numpy())
        width, k = self.net.config["hidden"][-1], self.net.config["num_labels"]
        return (np.concatenate(hidden) if hidden else np.zeros((0, width), np.float32)), (
            np.concatenate(probs) if probs else np.zeros((0, k), np.float32)
        )

    def predict_proba(self, frame: pd.DataFrame, batch_size: int, progress: bool = False) -> np.ndarray:
        return self.embed(self.features(frame), batch_size)[1]


def read_columns(cfg: DictConfig) -> Columns:
    """The features ``prepare`` kept, by kind (its ``report.json``)."""
    path = processed(cfg, "report.json")
    if not path.is_file():
        from glasswork.errors import PipelineOrderError

        raise PipelineOrderError(f"{path} is missing: run `glasswork prepare task=tabular_classification` first")
    features = read_json(path)["features"]
    return Columns(list(features["numeric"]), list(features["categorical"]))


class TabularClassification:
    """Rows of numeric and categorical columns; a :class:`~glasswork.models.mlp.MLP`."""

    name = "tabular_classification"
    # Not built yet for tables: reproduce.
    steps = ("ingest", "prepare", "train", "evaluate", "explain", "drift", "register")
    slice_by: dict[str, tuple[str, float, str]] = {}  # a table's own columns slice it (data.slice_columns)
    baseline_name = "logistic regression on the preprocessed columns"

    def __init__(self, cfg: DictConfig | None = None):
        self.cfg = cfg
        self._pre: Preprocessor | None = None

    def inputs(self) -> list[str]:
        """The feature columns the model reads (``prepare`` decided them)."""
        if self.cfg is None:
            raise RuntimeError("TabularClassification needs the run's config (glasswork.tasks.build passes it)")
        return read_columns(self.cfg).all

    def resolve(self, cfg: DictConfig) -> DictConfig:
        return cfg

    def preflight(self, cfg: DictConfig) -> list:
        """The tabular task's settings, then its data (read and checked as ``prepare`` will); the classes."""
        from glasswork.explain.table_step import check_table_settings
        from glasswork.table_drift import check_current

        check_table_settings(cfg)
        check_current(cfg.drift.current)
        if cfg.registry.forbidden_tokens:
            raise ConfigError(
                "registry.forbidden_tokens: a rule on the tokens an explanation relies on is for texts; "
                "task=tabular_classification has no tokens (leave it [])"
            )
        return self.read(cfg).classes if cfg.data.source == "table" or Path(cfg.data.path).is_file() else ["no", "yes"]

    def ingest(self, cfg: DictConfig) -> dict:
        """statsmodels' Fair table into ``data.path`` (Parquet, which DVC versions); a user's own
        table is checked where it lies."""
        check_settings(cfg)  # a bad model setting is said before the data is written
        if cfg.data.source == "fair":
            from glasswork.data.prepare import write_raw
            from glasswork.data.tabular import fair

            return {"data": str(write_raw(fair(), Path(cfg.data.path)))}
        self.read(cfg)
        return {}

    def read(self, cfg: DictConfig):
        """The checked table: the typed feature columns, ``label`` (original values) and the
        ``data.slice_columns``; at least two classes of a few rows each."""
        from glasswork.data import schema, tabular
        from glasswork.data.sources import read_table

        check_settings(cfg)  # every step that reads the table checks the task's settings first
        d, path = cfg.data, Path(cfg.data.path)
        if d.source == "fair" and not path.is_file():
            raise DataError(f"{path} is missing: run `glasswork ingest task=tabular_classification` first")
        raw = read_table(path, d.format, encoding=d.encoding)
        header = [str(c) for c in raw.attrs.get("header", raw.columns)]
        slices = list(d.slice_columns)
        wanted = None if d.feature_columns is None else list(d.feature_columns)
        names = tabular.feature_names(
            [c for c in header if c not in slices] if wanted is None else header, str(path), d.label_column, wanted
        )
        listed = sorted(set(slices) & set(names))
        if listed:
            raise ConfigError(f"data.slice_columns names feature(s) {listed}: list columns the model does not read")
        missing = [c for c in slices if c not in header]
        if missing:
            raise DataError(f"{path} has no slice column(s) {missing} (columns found: {', '.join(header)})")
        labels = schema.as_classes(raw[d.label_column].reset_index(drop=True), str(path), d.label_column)
        tabular.check_label_count(labels, str(path), d.label_column, d.max_classes)
        typed, columns, report = tabular.type_columns(
            raw, names, str(path), list(d.numeric_columns or ()), list(d.categorical_columns or ())
        )
        frame = typed.assign(label=labels.to_numpy())
        for column in slices:
            frame[column] = schema._metadata(raw[column].reset_index(drop=True))
        classes = schema.require_classes(frame["label"], str(path), d.label_column)
        report = {"rows_read": len(raw), "rows_kept": len(frame), **report}
        return schema.CleanTable(frame, classes, report)

    def card(self, cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
        from glasswork.data import card

        return card.card(report, splits, names)

    def preprocessor(self, cfg: DictConfig) -> Preprocessor:
        """The preprocessing fitted on the training split (once per task object)."""
        if self._pre is None:
            from glasswork.data.prepare import load_split

            self._pre = Preprocessor.fit(load_split(cfg, "train"), read_columns(cfg), cfg.data.max_categories)
        return self._pre

    def module(self, cfg: DictConfig, num_labels: int, class_weights: list[float] | None = None):
        import torch

        from glasswork.models.classifier_module import ClassifierModule
        from glasswork.models.mlp import MLP

        torch.manual_seed(cfg.seed)
        net = MLP(self.preprocessor(cfg).width, num_labels, tuple(cfg.model.hidden), cfg.model.dropout)
        return ClassifierModule(
            net,
            num_labels,
            lr=cfg.model.lr * cfg.trainer.lr_scale,
            weight_decay=cfg.model.weight_decay,
            warmup_fraction=cfg.model.warmup_fraction,
            class_weights=class_weights,
        )

    def datamodule(self, cfg: DictConfig, train: pd.DataFrame, val: pd.DataFrame):
        from glasswork.data.table_batches import RowTensors, TableDataModule

        pre = self.preprocessor(cfg)

        def rows(frame: pd.DataFrame, name: str) -> RowTensors:
            return RowTensors(pre.transform(frame, f"the {name} split")[0], frame["label"].to_numpy())

        return TableDataModule(
            rows(train, "training"),
            rows(val, "validation"),
            cfg.trainer.batch_size,
            cfg.trainer.eval_batch_size,
            cfg.seed,
            cfg.trainer.num_workers,
        )

    def log_training_data(self, cfg: DictConfig, train: pd.DataFrame) -> None:
        import mlflow

        pre = self.preprocessor(cfg)
        mlflow.log_params(
            {"data.numeric_columns_used": list(pre.numeric), "data.categorical_columns_used": list(pre.categorical)}
        )
        mlflow.log_metric("data/input_width", pre.width)

    def save(self, net, folder: Path, labels: dict, cfg: DictConfig) -> None:
        net.save_pretrained(folder)
        write_json(folder / PREPROCESS, self.preprocessor(cfg).to_json())
        write_json(folder / "labels.json", labels)

    def predictor(self, folder: Path, device: str = "cpu") -> TablePredictor:
        return TablePredictor(folder, device)

    def descriptors(self, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        return pd.DataFrame(index=range(len(frame)))  # the columns themselves describe a row

    def retraining(self, cfg: DictConfig, summary: dict) -> list[str] | None:
        from glasswork.retraining import table_retraining

        return table_retraining(cfg, summary)

    def pyfunc(self):
        from glasswork import serving_tables
        from glasswork.data import tabular
        from glasswork.models import mlp
        from glasswork.tasks.base import PyfuncSpec, requirements

        return PyfuncSpec(
            code=str(Path(serving_tables.__file__)),
            code_paths=[str(Path(mlp.__file__)), str(Path(tabular.__file__))],
            requirements=requirements("torch", "safetensors"),
            description="Glasswork tabular classifier (pyfunc: a DataFrame with the training columns, in any order, "
            "in; the label and class probabilities out).",
        )

    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
        from glasswork.baseline import table_baseline

        if self.cfg is None:
            raise RuntimeError("TabularClassification needs the run's config (glasswork.tasks.build passes it)")
        return table_baseline(train, test, seed, Preprocessor.fit(train, read_columns(self.cfg)))

    def drift_batch(self, cfg: DictConfig) -> pd.DataFrame:
        from glasswork.table_drift import current_batch

        return current_batch(cfg)

    def describer(self, cfg: DictConfig, folder: Path | None = None):
        from glasswork.table_drift import TableDescriber

        return TableDescriber(cfg, folder)

    def monitor_batch(self, source: Path, cfg: DictConfig, ref):
        from glasswork.table_drift import read_table_batch

        return read_table_batch(source, cfg, ref)

    def score_batch(self, path: Path, batch, describer, ref, cfg: DictConfig) -> dict[str, int]:
        from glasswork.table_drift import score_table

        return score_table(path, batch, describer, ref, cfg)

    def explain(self, cfg: DictConfig) -> dict:
        from glasswork.explain.table_step import explain_tables

        return explain_tables(cfg)


def check_settings(cfg: DictConfig) -> None:
    """The tabular task's own settings, before anything is read or written."""
    d, m = cfg.data, cfg.model
    if d.source not in SOURCES:
        raise ConfigError(f"data.source={d.source!r}: expected one of {list(SOURCES)} (task=tabular_classification)")
    if not isinstance(d.max_classes, int) or d.max_classes < 2:
        raise ConfigError(f"data.max_classes={d.max_classes!r}: expected a number of classes of at least 2")
    if not isinstance(d.max_categories, int) or d.max_categories < 1:
        raise ConfigError(f"data.max_categories={d.max_categories!r}: expected a number of categories of at least 1")
    hidden = list(m.hidden)
    if not hidden or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        raise ConfigError(f"model.hidden={hidden}: expected one or more layer widths, e.g. [64, 64]")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout}: expected a probability in [0, 1)")
