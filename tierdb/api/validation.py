"""Request checks that need settings or the collection: limits, vector shape, finite values.

They run before the engine is called, so a rejected request changes nothing.  The engine
re-checks semantics (dimension, NaN, ids, filters) for every caller; the versions here exist to
name the exact position in the request (``documents[3].vector``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ErrorKind, TierDBError, invalid

MAX_EF = 4096


def check_count(what: str, count: int, limit: int, setting: str) -> None:
    """Too many items in one request is a 413 naming the limit and the setting that controls it."""
    if count > limit:
        raise TierDBError(
            ErrorKind.TOO_LARGE,
            f"{what} has {count} entries; the limit is {limit} per request ({setting})",
            field=what,
            limit=limit,
        )


def check_k(k: int, max_k: int) -> None:
    if not 1 <= k <= max_k:
        raise invalid(f"k must be between 1 and {max_k} (server.max_k), got {k}", field="k")


def check_ef(ef: int | None) -> None:
    if ef is not None and not 1 <= ef <= MAX_EF:
        raise invalid(f"ef must be between 1 and {MAX_EF}, got {ef}", field="ef")


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
