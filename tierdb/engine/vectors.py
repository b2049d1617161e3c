"""Vector math shared by brute-force search and validation (hnswlib distance conventions).

cosine = 1 - cos(a, b); l2 = squared euclidean distance; ip = 1 - a.b
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import invalid

# Squared norms and dot products must stay finite in float32 (max ~3.4e38).
MAX_NORM = 1e18


class CheckedMatrix(NamedTuple):
    """A matrix ``as_matrix`` already accepted: handed to the engine, it is not checked again
    (the API validates query vectors itself to name the offending field)."""

    array: np.ndarray


# Below this squared norm a float32 sum of squares proves a row finite and well under MAX_NORM
# (its relative error is far below 1/2), so only rows near the limit pay for the float64 check.
_SAFE_SQUARED_NORM = np.float32(MAX_NORM**2 / 2)
# Row-wise dot products: numpy 2's vecdot ufunc is about twice as fast as einsum on small inputs.
_row_dots = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("ij,ij->i", a, b))


def rows_safe(matrix: np.ndarray) -> bool:
    """True when every row of the float32 ``matrix`` is finite with a norm well under MAX_NORM:
    one float32 pass that settles the common case (call it under ``np.errstate(over="ignore",
    invalid="ignore")``; a NaN, an infinity or an overflowing square make it False)."""
    return bool((_row_dots(matrix, matrix) < _SAFE_SQUARED_NORM).all())


def as_matrix(vectors: object, dimension: int, *, what: str = "vector") -> np.ndarray:
    """A C-contiguous float32 (n, dimension) matrix, or a 400 error naming the problem."""
    if type(vectors) is CheckedMatrix and vectors.array.shape[1] == dimension:
        return vectors.array
    try:
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected below
            matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise invalid(f"{what}s must be lists of numbers with {dimension} elements each ({exc})") from exc
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise invalid(f"{what}s must be a list of {dimension}-dimensional vectors")
    if matrix.shape[1] != dimension:
        raise invalid(
            f"{what} has dimension {matrix.shape[1]}, the collection expects {dimension}",
            expected=dimension,
            got=int(matrix.shape[1]),
        )
    matrix = np.ascontiguousarray(matrix)
    with np.errstate(over="ignore", invalid="ignore"):
        if rows_safe(matrix):
            return matrix
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise invalid(f"{what} {row} contains NaN or infinity (or a value outside float32 range)", row=row)
    big = np.einsum("ij,ij->i", matrix.astype(np.float64), matrix.astype(np.float64)) > MAX_NORM**2
    if big.any():
        row = int(np.argmax(big))
        raise invalid(f"{what} {row} has a norm above {MAX_NORM:g}; distances would overflow float32", row=row)
    return np.ascontiguousarray(matrix)


def norms(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.norm(matrix, axis=1).astype(np.float32)


def distances(queries: np.ndarray, rows: np.ndarray, row_norms: np.ndarray, metric: str) -> np.ndarray:
    """(q, n) distances between raw query vectors and raw row vectors (row_norms = |row|)."""
    dots = queries @ rows.T
    if metric == "ip":
        return 1.0 - dots
    q_norms = norms(queries)
    if metric == "l2":
        return np.maximum(q_norms[:, None] ** 2 + row_norms[None, :] ** 2 - 2.0 * dots, 0.0)
    denom = np.maximum(q_norms[:, None] * row_norms[None, :], np.float32(1e-30))
    return 1.0 - dots / denom


def top_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the k smallest (columns, distances), sorted ascending."""
    n = dist.shape[1]
    k = min(k, n)
    if k == 0:
        empty = np.empty((dist.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if k < n:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n), (dist.shape[0], 1))
    part_d = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(part_d, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_d, order, axis=1)
