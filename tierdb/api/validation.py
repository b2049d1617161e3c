"""Request checks that need the collection: vector shape and finite values (the limits are
``tierdb.service.limits``).

They run before the engine is called, so a rejected request changes nothing.  The engine
re-checks semantics (dimension, NaN, ids, filters) for every caller; the versions here exist to
name the exact position in the request (``documents[3].vector``).
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Sequence

import numpy as np

from ..engine.vectors import CheckedMatrix, as_matrix, rows_safe
from ..errors import invalid


def _check_lengths(rows: Sequence[Sequence[float]], dimension: int, label: Callable[[int], str]) -> None:
    for i, row in enumerate(rows):
        if len(row) != dimension:
            raise invalid(
                f"{label(i)} has {len(row)} values but the collection has dimension {dimension}",
                field=label(i),
            )


def _check_finite(matrix: np.ndarray, label: Callable[[int], str]) -> None:
    finite = np.isfinite(matrix)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise invalid(
            f"{label(bad)} contains NaN, infinity or a value outside the float32 range",
            field=label(bad),
        )


def to_matrix(rows: Sequence[Sequence[float]], dimension: int, label: Callable[[int], str]) -> np.ndarray:
    """``rows`` as a (n, dimension) float32 array; ``label(i)`` names row i in error messages."""
    _check_lengths(rows, dimension, label)
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = np.array(rows, dtype=np.float32)
    matrix = matrix.reshape(len(rows), dimension)
    _check_finite(matrix, label)
    return matrix


@functools.lru_cache(maxsize=64)
def _float32_packer(count: int) -> struct.Struct:
    """Packs ``count`` Python numbers as native float32 (rounded to nearest like numpy's cast;
    OverflowError for a finite value beyond the float32 range; NaN and infinities pass)."""
    return struct.Struct(f"={count}f")


def query_matrix(rows: Sequence[Sequence[float]], dimension: int, label: Callable[[int], str]) -> CheckedMatrix:
    """``to_matrix`` plus the engine's own checks (norm bound), done once: the engine takes the
    result as already checked.  One float32 pass settles the common case; only a failing row
    goes through the checks that name it."""
    _check_lengths(rows, dimension, label)
    matrix = np.empty((len(rows), dimension), dtype=np.float32)
    values = rows[0] if len(rows) == 1 else itertools.chain.from_iterable(rows)
    with np.errstate(over="ignore", invalid="ignore"):
        try:  # straight into float32: about 2.5x faster than numpy's conversion of a list
            _float32_packer(matrix.size).pack_into(matrix, 0, *values)
        except OverflowError:  # a value beyond float32: numpy's conversion (to inf) lets the checks name it
            matrix = np.array(rows, dtype=np.float32).reshape(len(rows), dimension)
        safe = rows_safe(matrix)
    if not safe:
        _check_finite(matrix, label)
        matrix = as_matrix(matrix, dimension, what="query vector")  # names a row whose norm is too big
    return CheckedMatrix(matrix)
