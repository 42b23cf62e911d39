"""``monitor.on_drift=retrain``: the champion's prepared splits plus a drifted batch's labelled
rows as one table, and the config overrides that train on it (each task's
``retraining(cfg, summary)`` calls one of these). The new model takes ``champion`` only through
the usual register gate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from glasswork.outputs import read_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def reference_rows(summary: dict) -> tuple[pd.DataFrame, dict]:
    """The champion's prepared splits as one table (its class values in ``label``), and its
    classes by their text (a batch's labels are text: a folder's name, a CSV cell). The table
    keeps the classes' own values: a model retrained on "0".."9" where the champion learned
    0..9 predicts other classes, and is compared with it on nothing (found on Fashion-MNIST)."""
    splits = Path(summary["reference"]).parent
    classes = read_json(splits / "labels.json")["classes"]
    old = pd.concat([pd.read_parquet(splits / f"{s}.parquet") for s in SPLITS], ignore_index=True)
    old["label"] = [classes[i] for i in old["label"]]
    return old, {str(c): c for c in classes}


def write_table(summary: dict, frame: pd.DataFrame, n_old: int) -> Path:
    """The retraining table, written whole or not at all, beside the monitor run's outputs."""
    path = Path(summary["output_dir"]) / "retraining_data.parquet"
    tmp = path.with_suffix(".partial")
    frame.to_parquet(tmp)
    tmp.rename(path)
    log.info("monitor: retraining on %d reference rows + %d new labelled rows (%s)", n_old, len(frame) - n_old, path)
    return path


def text_retraining(cfg: DictConfig, summary: dict) -> list[str] | None:
    """The champion's texts plus every row of the batch with a label the model knows (the splits'
    slice columns come along, from the batch where it has them), as ``data=table`` overrides; or
    ``None`` when the batch has no such row."""
    table = labelled_table(cfg, summary, "text")
    return (
        None
        if table is None
        else ["data=table", f"data.path={table}", "data.text_column=text", "data.label_column=label"]
    )


def generation_retraining(cfg: DictConfig, summary: dict) -> list[str] | None:
    """The champion's prompt/response pairs plus every prompt of the batch whose expected answer
    (``monitor.label_column``) is one the model knows, as ``data=table`` overrides; or ``None``."""
    table = labelled_table(cfg, summary, "prompt")
    if table is None:
        return None
    return ["data=table", f"data.path={table}", "data.prompt_column=prompt", "data.response_column=label"]


def labelled_table(cfg: DictConfig, summary: dict, column: str) -> Path | None:
    """The champion's rows and the batch's labelled ones (its ``monitor.text_column`` read as
    ``column``, the split's input) as one table, written beside the monitor run's outputs."""
    from glasswork.batch import batch_files, stream
    from glasswork.data.schema import conform_metadata
    from glasswork.monitor import metadata_columns

    old, classes = reference_rows(summary)
    metadata = metadata_columns(old, cfg, (column,))
    new = []
    for file in batch_files(Path(summary["batch"]["source"])):
        if str(file) not in summary["batch"]["files"]:
            continue  # skipped as unreadable
        for chunk in stream(file, cfg.monitor.text_column, cfg.monitor.label_column, metadata, cfg.monitor.encoding):
            frame = chunk.to_pandas().rename(columns={"text": column})
            known = frame[frame["label"].astype(str).isin(list(classes))]
            new.append(known.assign(label=known["label"].astype(str).map(classes)))
    added = pd.concat(new, ignore_index=True) if new else pd.DataFrame()
    if added.empty:
        log.warning("monitor: on_drift=retrain but the batch has no row with a label the model knows")
        return None
    for name in metadata:
        added[name] = conform_metadata(added[name], old[name])
    return write_table(summary, pd.concat([old, added[[column, "label", *metadata]]], ignore_index=True), len(old))


def table_retraining(cfg: DictConfig, summary: dict) -> list[str] | None:
    """The champion's rows plus every row of the batch whose label (in the column the monitor
    found it: ``batch.label_column``) is a class the model knows, with the champion's feature
    columns, as ``data=tabular`` overrides; or ``None`` when the batch has no such row."""
    from glasswork.data.sources import read_table
    from glasswork.table_drift import as_labels

    old, classes = reference_rows(summary)
    label = summary["batch"].get("label_column")
    if not label:
        log.warning("monitor: on_drift=retrain but the batch has no label column (monitor.label_column)")
        return None
    columns = [c for c in old.columns if c != "label"]
    new = []
    for file in summary["batch"]["files"]:
        frame = read_table(Path(file), encoding=cfg.monitor.encoding)
        if label not in frame.columns:
            continue  # an unlabelled file of a labelled batch
        known = frame[as_labels(frame[label]).isin(list(classes))]
        rows = known.reindex(columns=columns)  # a column the model does not read may be absent
        new.append(rows.assign(label=as_labels(known[label]).map(classes).to_numpy()))
    added = pd.concat(new, ignore_index=True) if new else pd.DataFrame()
    if added.empty:
        log.warning("monitor: on_drift=retrain but the batch has no row with a label the model knows")
        return None
    for column in columns:  # numbers as numbers (the monitor refused text in a numeric column)
        if pd.api.types.is_numeric_dtype(old[column]):
            added[column] = pd.to_numeric(added[column], errors="coerce")
    # Under the label column's own name: the retrained model records it, and its next batches
    # carry the labels there (a "label" column would leave them unread).
    table = pd.concat([old, added[[*columns, "label"]]], ignore_index=True).rename(columns={"label": label})
    path = write_table(summary, table, len(old))
    return ["data=tabular", f"data.path={path}", f"data.label_column={label}"]


def image_retraining(cfg: DictConfig, summary: dict) -> list[str] | None:
    """The champion's images plus every image of the batch folder's class sub-folders that names
    a class the model knows, read in the size and mode it was trained on, as ``data=images``
    overrides over a table of the images' bytes; or ``None`` when there is no such image."""
    from glasswork.data.images import IMAGE_SUFFIXES, ImageReader, decode

    old, classes = reference_rows(summary)
    first = decode(old["image"].iloc[0])
    size, mode = (int(first.shape[0]), int(first.shape[1])), "L" if first.ndim == 2 else "RGB"
    reader = ImageReader(size=size, mode=mode, on_bad_image="skip")
    source = Path(summary["batch"]["source"])
    rows = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name in classes):
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            data = reader.read(file)
            if data is not None:  # a bad image was skipped and listed when the batch was scored
                rows.append({"image": data, "label": classes[folder.name]})
    if not rows:
        log.warning("monitor: on_drift=retrain but no class sub-folder of %s names a class the model knows", source)
        return None
    path = write_table(summary, pd.concat([old[["image", "label"]], pd.DataFrame(rows)], ignore_index=True), len(old))
    return [
        "data=images",
        f"data.path={path}",
        "data.path_column=image",
        f"data.image_size=[{size[0]},{size[1]}]",
        f"data.image_mode={mode}",
    ]
