"""The explanation-drift descriptors of a table (glasswork.explain.column_drift): each column's share
of a row's |attribution|, and the row digests that keep the reference's rows out of a batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glasswork.explain.column_drift import column_shares, mean_shares, row_digests


def test_each_row_shares_its_attribution_mass_among_the_columns():
    scores = np.array([[0.3, -0.1, 0.0], [0.0, 0.0, 0.0], [-2.0, 1.0, 1.0]])
    shares = column_shares(scores, ["age", "plan", "spend €"])
    assert list(shares) == ["age", "plan", "spend €"]
    assert shares["age"] == [0.75, 0.0, 0.5] and shares["plan"] == [0.25, 0.0, 0.25]
    assert shares["spend €"] == [0.0, 0.0, 0.25]  # the sign does not matter, the row's total is 1
    assert mean_shares(shares) == pytest.approx({"age": 1.25 / 3, "plan": 0.5 / 3, "spend €": 0.25 / 3})


def test_a_row_digest_is_its_feature_values_whatever_else_the_row_holds():
    a = pd.DataFrame({"age": [31, 31, 40], "plan": ["básico", "básico", None], "label": ["x", "y", "x"]})
    b = pd.DataFrame({"plan": ["básico", "premium"], "age": [31, 31]})
    first, second = row_digests(a, ["age", "plan"]), row_digests(b, ["age", "plan"])
    assert first[0] == first[1] == second[0] != second[1]  # the label and the column order do not count
    assert len(set(first)) == 2 and first[2] != first[0]
