"""Bad tables for `task=tabular_classification`: each a clear error naming the column (and row),
stopped before anything is written; a constant column is dropped and said."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.code.test_tabular_task import table_overrides, write_table

from glasswork.cli import main
from glasswork.outputs import read_json


def _run_prepare(tmp_path, frame: pd.DataFrame, *extra: str) -> int:
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return main(["prepare", *table_overrides(tmp_path, path, *extra)])


def _table(tmp_path, n: int = 120) -> pd.DataFrame:
    return pd.read_csv(write_table(tmp_path / "base.csv", n=n))


def _refused(tmp_path, capsys, frame, *extra) -> str:
    assert _run_prepare(tmp_path, frame, *extra) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "data" / "tabular_classification" / "processed").exists(), "a refused table wrote splits"
    return err


def test_text_in_a_numeric_column_is_named_by_line(tmp_path, capsys):
    frame = _table(tmp_path)
    frame["spend"] = frame["spend"].astype(object)
    frame.loc[5, "spend"] = "12,50"
    err = _refused(tmp_path, capsys, frame)
    assert "numeric column 'spend' holds text at line 7 ('12,50')" in err
    assert "data.categorical_columns" in err


def test_a_column_listed_as_numeric_must_hold_numbers(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _table(tmp_path), "data.numeric_columns=[plan]")
    assert "numeric column 'plan' holds text at line 2" in err and "listed in data.numeric_columns" in err


def test_an_all_missing_column_is_refused(tmp_path, capsys):
    frame = _table(tmp_path).assign(region=np.nan)
    err = _refused(tmp_path, capsys, frame)
    assert "feature column 'region' has no value in any of its 120 rows" in err


def test_a_constant_column_is_dropped_and_said(tmp_path, caplog):
    frame = _table(tmp_path).assign(country="FR")
    assert _run_prepare(tmp_path, frame) == 0
    report = read_json(tmp_path / "data/tabular_classification/processed/report.json")
    assert report["dropped_constant_columns"] == ["country"]
    assert "country" not in report["features"]["categorical"]
    assert "['country'] hold a single value and are dropped" in caplog.text


def test_the_label_among_the_features_is_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _table(tmp_path), "data.feature_columns=[spend,churn]")
    assert "data.feature_columns includes the label column 'churn'" in err


def test_a_missing_feature_column_is_named(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _table(tmp_path), "data.feature_columns=[spend,age]")
    assert "has no feature column(s) 'age'" in err and "columns found: tenure months, plan, spend, churn" in err


def test_a_numeric_label_with_many_values_is_called_a_regression_target(tmp_path, capsys):
    frame = _table(tmp_path)
    frame["churn"] = np.arange(len(frame)) % 40
    err = _refused(tmp_path, capsys, frame)
    assert "label column 'churn' holds 40 different numbers, more than data.max_classes=20" in err
    assert "regression target" in err


def test_a_bad_setting_is_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _table(tmp_path), "model.hidden=[64,0]")
    assert "model.hidden=[64, 0]: expected one or more layer widths" in err


@pytest.mark.parametrize("name", ["label", "path"])
def test_a_feature_named_like_a_split_column_is_refused(tmp_path, capsys, name):
    frame = _table(tmp_path).rename(columns={"spend": name})
    err = _refused(tmp_path, capsys, frame)
    assert f"a feature column is named {name!r}" in err


def test_a_column_name_hydra_cannot_parse_gets_the_quoting_that_works(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv", n=40)
    unquoted = "data.feature_columns=[plan,spend (€)]"  # a bracket inside a value stops Hydra's parser
    assert main(["show-config", *table_overrides(tmp_path, table, unquoted)]) == 2
    err = capsys.readouterr().err
    assert f"{unquoted}: Hydra could not parse this value" in err and '\'data.feature_columns=["tenure (months)"' in err
    quoted = 'data.feature_columns=["tenure months","plan"]'
    assert main(["show-config", *table_overrides(tmp_path, table, quoted)]) == 0
    assert "- tenure months" in capsys.readouterr().out
