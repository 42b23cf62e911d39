"""Every bad input of the end-to-end issue: a non-zero exit, an error naming the file or setting
and what was expected, nothing half-written, nothing registered, `champion` untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import tiny_overrides

from glasswork.cli import main

GOOD_ROWS = "".join(
    f"review number {i} is {'great' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(40)
)


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


BAD_FILES = {
    # name: (file maker, words the error must contain)
    "missing file": (lambda d: d / "nope.csv", ["nope.csv", "no such file"]),
    "directory": (lambda d: (d / "adir.csv").mkdir() or d / "adir.csv", ["adir.csv", "is a directory"]),
    "empty file": (lambda d: _write(d / "empty.csv", ""), ["empty.csv", "is empty"]),
    "header only": (lambda d: _write(d / "header.csv", "text,label\n"), ["header.csv", "no rows"]),
    "no text column": (
        lambda d: _write(d / "notext.csv", "body,label\n" + GOOD_ROWS),
        ["notext.csv", "no text column 'text'", "body"],
    ),
    "no label column": (
        lambda d: _write(d / "nolabel.csv", "text,stars\n" + GOOD_ROWS),
        ["nolabel.csv", "no label column 'label'", "stars"],
    ),
    "single class": (
        lambda d: _write(d / "oneclass.csv", "text,label\n" + "".join(f"text {i},pos\n" for i in range(30))),
        ["oneclass.csv", "single class", "'pos'"],
    ),
    "ragged, too many fields": (
        lambda d: _write(d / "wide.csv", "text,label\n" + GOOD_ROWS + "one,pos,extra\n"),
        ["wide.csv", "Expected 2 fields in line 42, saw 3"],
    ),
    "ragged, too few fields": (
        lambda d: _write(d / "short.csv", "text,label\nlonely text\n" + GOOD_ROWS),
        ["short.csv", "line(s) 2", "every row needs a label"],
    ),
    "binary garbage": (lambda d: _write(d / "garbage.csv", bytes(range(256)) * 16), ["garbage.csv", "binary"]),
    "binary parquet": (
        lambda d: _write(d / "garbage.parquet", b"not parquet at all" * 10),
        ["garbage.parquet", "could not be read as PARQUET"],
    ),
    "all texts empty": (
        lambda d: _write(
            d / "blank.csv", "text,label\n" + "".join(f",{'pos' if i % 2 else 'neg'}\n" for i in range(30))
        ),
        ["blank.csv", "every value of text column 'text' is empty"],
    ),
}

BAD_SETTINGS = {
    "unknown data key": ("data.colour=blue", ["data.colour", "Valid keys of data"]),
    "typo in a model setting": ("model.learning_rate=0.1", ["model.learning_rate", "Valid keys of model"]),
    "typo in a trainer setting": ("trainer.max_epoch=3", ["trainer.max_epoch", "Did you mean trainer.max_epochs?"]),
    "typo in a model choice": ("model=minlm", ["model/minlm", "Available options"]),
    "unknown projection": ("explain.projection=tsne", ["explain.projection='tsne'", "['pca', 'umap']"]),
    "one-text map": ("explain.projection_max=1", ["explain.projection_max=1", "at least 2 texts"]),
    "no faithfulness sample": ("explain.faithfulness_max_texts=0", ["explain.faithfulness_max_texts=0", "at least 1"]),
    "slice gate level": ("registry.slice_alpha=5", ["registry.slice_alpha=5.0", "between 0 and 1", "null"]),
    "champion contrast level": ("explain.contrast_alpha=1.5", ["explain.contrast_alpha=1.5", "between 0 and 1"]),
    "explanation drift level": ("drift.explanation_alpha=0", ["drift.explanation_alpha=0", "between 0 and 1"]),
    "learning-rate scale": ("trainer.lr_scale=0", ["trainer.lr_scale=0.0", "above 0", "model.lr times it"]),
    "compile mode": ("trainer.compile_mode=fast", ["trainer.compile_mode='fast'", "reduce-overhead"]),
    "two checkpoint cadences": (
        "trainer.checkpoint_every_minutes=5",
        ["trainer.checkpoint_every_n_steps=50 and trainer.checkpoint_every_minutes=5", "set one of them"],
    ),
    "Lightning's FSDP1": ("trainer.strategy=fsdp", ["trainer.strategy=fsdp", "use trainer=fsdp (strategy fsdp2"]),
}


def _state(root: Path, cfg) -> dict:
    """Everything a failed run must leave as it was: output files and the registry."""
    files = {}
    for folder in ("data/processed", "artifacts"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    name = cfg.registry.model_name
    versions = sorted(v.version for v in client.search_model_versions(f"name='{name}'"))
    champion = client.get_model_version_by_alias(name, cfg.registry.alias).version
    return {"files": files, "versions": versions, "champion": champion}


@pytest.fixture
def registered_run(tiny_run):
    root, cfg = tiny_run
    before = _state(root, cfg)
    assert before["champion"] and before["files"], "the fixture should hold a trained, registered champion"
    return root, cfg, before


@pytest.mark.parametrize("command", ["run", "prepare"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_fails_clearly_and_changes_nothing(case, command, registered_run, tmp_path, capsys):
    root, cfg, before = registered_run
    make, words = BAD_FILES[case]
    bad = make(tmp_path)
    table = ["data=table", f"data.path={bad}", "data.text_column=text", "data.label_column=label", "data.max_rows=null"]
    code = main([command, *tiny_overrides(root, *table)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{case}: {word!r} not in {err!r}"
    assert _state(root, cfg) == before


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_fails_clearly_and_changes_nothing(case, registered_run, capsys):
    root, cfg, before = registered_run
    override, words = BAD_SETTINGS[case]
    code = main(["run", *tiny_overrides(root, override)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for word in words:
        assert word in err, f"{case}: {word!r} not in {err!r}"
    assert _state(root, cfg) == before


WITH_SOURCE = "".join(f"{row},{'web' if i % 3 else 'print'}\n" for i, row in enumerate(GOOD_ROWS.splitlines()))
BAD_SLICE_COLUMNS = {
    # name: (header, data.slice_columns, data.text_column, words the error must contain)
    "no such column": ("text,label,source", "[region]", "text", ["no slice column 'region'", "text, label, source"]),
    "the label column": ("text,label,source", "[label]", "text", ["names the label column 'label'", "true class"]),
    "named twice": ("text,label,source", "[source,source]", "text", ["lists 'source' twice"]),
    "a name the splits use": ("body,label,text", "[text]", "body", ["'text' is a name the prepared splits use"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SLICE_COLUMNS))
def test_bad_slice_columns_fail_clearly_and_change_nothing(case, registered_run, tmp_path, capsys):
    root, cfg, before = registered_run
    header, columns, text, words = BAD_SLICE_COLUMNS[case]
    table = _write(tmp_path / "sourced.csv", f"{header}\n{WITH_SOURCE}")
    overrides = ["data=table", f"data.path={table}", f"data.text_column={text}", "data.label_column=label"]
    code = main(["run", *tiny_overrides(root, *overrides, f"data.slice_columns={columns}")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for word in words:
        assert word in err, f"{case}: {word!r} not in {err!r}"
    assert _state(root, cfg) == before


def test_steps_out_of_order_say_which_step_to_run_first(tmp_path, capsys):
    assert main(["evaluate", *tiny_overrides(tmp_path)]) == 2
    assert "run `glasswork" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "evaluate").exists()
