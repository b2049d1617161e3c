"""Request checks that need the collection: vector shape and finite values (the limits are
``tierdb.service.limits``).

They run before the engine is called, so a rejected request changes nothing.  The engine
re-checks semantics (dimension, NaN, ids, filters) for every caller; the versions here exist to
name the exact position in the request (``documents[3].vector``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..engine.vectors import CheckedMatrix, as_matrix
from ..errors import invalid


def to_matrix(rows: Sequence[Sequence[float]], dimension: int, label: Callable[[int], str]) -> np.ndarray:
    """``rows`` as a (n, dimension) float32 array; ``label(i)`` names row i in error messages."""
    for i, row in enumerate(rows):
        if len(row) != dimension:
            raise invalid(
                f"{label(i)} has {len(row)} values but the collection has dimension {dimension}",
                field=label(i),
            )
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = np.array(rows, dtype=np.float32)
    matrix = matrix.reshape(len(rows), dimension)
    finite = np.isfinite(matrix)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise invalid(
            f"{label(bad)} contains NaN, infinity or a value outside the float32 range",
            field=label(bad),
        )
    return matrix


def query_matrix(rows: Sequence[Sequence[float]], dimension: int, label: Callable[[int], str]) -> CheckedMatrix:
    """``to_matrix`` plus the engine's own checks (norm bound), done once: the engine takes the
    result as already checked."""
    return CheckedMatrix(as_matrix(to_matrix(rows, dimension, label), dimension, what="query vector"))
