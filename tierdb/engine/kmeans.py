"""K-means for partitioning a segment's rows (numpy / BLAS only, bounded memory).

Training runs Lloyd's algorithm on a sample; assignment of the full collection is done by the
caller in chunks with ``assign``.  ``spherical=True`` (cosine collections) keeps the centroids
unit-length and assigns by the largest dot product, which is the nearest centroid by cosine.
Every distance matrix is computed in row chunks of at most ``chunk_rows`` rows so the memory
used is ``chunk_rows × k × 4`` bytes, whatever the sample size.
"""

from __future__ import annotations

import numpy as np


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    lengths = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(lengths, np.float32(1e-30))).astype(np.float32, copy=False)


def assign(rows: np.ndarray, centroids: np.ndarray, *, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid per row, a score where lower is nearer) for one chunk of rows."""
    dots = rows @ centroids.T
    if spherical:
        best = np.argmax(dots, axis=1)
        return best, -np.take_along_axis(dots, best[:, None], axis=1)[:, 0]
    # argmin |x - c|^2 = argmin |c|^2 - 2 x.c (|x|^2 is the same for every centroid)
    scores = np.einsum("ij,ij->i", centroids, centroids)[None, :] - 2.0 * dots
    best = np.argmin(scores, axis=1)
    return best, np.take_along_axis(scores, best[:, None], axis=1)[:, 0]


def train(
    sample: np.ndarray,
    k: int,
    *,
    spherical: bool,
    iterations: int = 20,
    seed: int = 0,
    chunk_rows: int = 8192,
) -> np.ndarray:
    """k centroids (k × d float32) trained on ``sample`` (float32 rows).

    Initialised from k distinct random sample rows; a centroid that loses all its rows is
    moved onto the sample row farthest from its own centroid, so no cluster stays empty while
    the sample has at least k distinct rows.
    """
    n, dim = sample.shape
    if n == 0 or k <= 0:
        return np.zeros((0, dim), np.float32)
    k = min(k, n)
    data = unit_rows(sample) if spherical else np.ascontiguousarray(sample, dtype=np.float32)
    rng = np.random.default_rng(seed)
    centroids = data[np.sort(rng.choice(n, size=k, replace=False))].copy()
    labels = np.full(n, -1, np.int64)
    scores = np.empty(n, np.float32)
    for _ in range(max(iterations, 1)):
        previous = labels.copy()
        sums = np.zeros((k, dim), np.float32)
        for start in range(0, n, chunk_rows):
            chunk = data[start : start + chunk_rows]
            chunk_labels, scores[start : start + chunk_rows] = assign(chunk, centroids, spherical=spherical)
            labels[start : start + chunk_rows] = chunk_labels
            # Per-cluster sums as one BLAS product with the chunk's one-hot membership matrix.
            membership = np.zeros((len(chunk), k), np.float32)
            membership[np.arange(len(chunk)), chunk_labels] = 1.0
            sums += membership.T @ chunk
        counts = np.bincount(labels, minlength=k)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):
            # Reseed empty clusters on the rows worst served by their current centroid.
            farthest = np.argsort(scores)[::-1][: len(empty)]
            centroids[empty] = data[farthest]
            labels[farthest] = empty
        if spherical:
            centroids = unit_rows(centroids)
        if np.array_equal(labels, previous):
            break
    return np.ascontiguousarray(centroids, dtype=np.float32)
