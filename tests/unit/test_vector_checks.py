"""``as_matrix``: the float32 fast check accepts exactly what the exact checks accept."""

from __future__ import annotations

import numpy as np
import pytest

from tierdb.engine.vectors import MAX_NORM, CheckedMatrix, as_matrix
from tierdb.errors import TierDBError


def _rejected(rows, dim: int = 4) -> str:
    with pytest.raises(TierDBError) as err:
        as_matrix(rows, dim, what="query vector")
    return err.value.message


@pytest.mark.parametrize("scale", [1 - 1e-6, 0.75, 0.7, 0.5, 1e-30, 0.0])
def test_norms_below_the_limit_are_accepted(scale: float) -> None:
    rows = np.zeros((3, 4), dtype=np.float32)
    rows[1, 2] = MAX_NORM * scale
    np.testing.assert_array_equal(as_matrix(rows, 4), rows)


def test_norms_above_the_limit_name_the_first_such_row() -> None:
    rows = [[1, 0, 0, 0], [MAX_NORM * 0.8, MAX_NORM * 0.8, 0, 0], [MAX_NORM * (1 + 1e-6), 0, 0, 0]]
    assert _rejected(rows).startswith("query vector 1 has a norm above 1e+18")
    assert _rejected([[0, 0, 0, MAX_NORM * (1 + 1e-6)]]).startswith("query vector 0 has a norm above")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e39, 3e19])
def test_non_finite_or_overflowing_values_are_rejected(bad: float) -> None:
    message = _rejected([[1, 2, 3, 4], [1, 2, 3, 4], [1, bad, 3, 4]])
    if abs(bad) < 3.4e38:  # finite in float32: a norm problem, squares overflow only the fast check
        assert message.startswith("query vector 2 has a norm above")
    else:
        assert message.startswith("query vector 2 contains NaN or infinity")


def test_a_checked_matrix_is_passed_through_for_its_dimension_only() -> None:
    rows = np.ones((2, 4), dtype=np.float32)
    assert as_matrix(CheckedMatrix(rows), 4) is rows
    assert _rejected(CheckedMatrix(rows), dim=3).startswith("query vectors must be a list of 3-dimensional")
