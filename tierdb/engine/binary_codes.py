"""One-bit scan codes for partitioned segments (RaBitQ-style estimates, exact re-rank after).

A row x of a partition with centroid c is kept as the signs of its residual r = x - c (one bit
per dimension) plus two floats.  With b = sign(r) / sqrt(D), RaBitQ's estimator gives, for any
vector v, <r, v> ~= |r| / <b, r/|r|> * <b, v>, so for a query q

    <q, x> = <q, c> + <c, r> + <q - c, r>  ~=  <q, c> + add + factor * <q, b>

where factor = |r| / <b, r/|r|> and add = <c, r> - factor * <c, b> are stored per row.  Distances
(vectors.py conventions) are then ``term(q, c) + A + B * <q, b>`` with A and B per row and
``term`` per (query, partition); see ``encode`` for A and B per metric.

<q, b> costs a few popcounts per row: the query is quantised to 4 bits per dimension and
<q, bits> is summed over its 4 bit planes (plus lo times the row's own popcount, kept with its codes), i.e.
``bitwise_count(codes & plane)`` on 64-bit words.  A row costs D/8 + 8 bytes of RAM instead of
4·D, so a node keeps the codes of a collection ~30x larger than its vectors in memory; the
estimate only picks candidates: the final distances are exact, from the float32 rows.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# 4-bit query quantisation loses almost nothing against a float query (RaBitQ's choice).
QUERY_BITS = 4
# A scan of this many rows or more is split over the cores (a query's CPU time is mostly this).
_SPLIT_ROWS = 32_768
_SCAN_THREADS = min(4, os.cpu_count() or 1)
# Rows per step of a scan: its temporaries (~13 bytes per row and query bit) stay in L2.
_CHUNK_ROWS = 32_768
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _scan_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="tierdb-scan")
        return _pool


def words(dimension: int) -> int:
    """64-bit words per row code (the dimensions padded to a multiple of 64 with zero bits)."""
    return -(-dimension // 64)


def code_bytes(dimension: int) -> int:
    return 8 * words(dimension)


def encode(rows: np.ndarray, centroid: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bits as uint64 (words, n), A float32 (n,), B float32 (n,)) for rows of one partition.

    The bits are stored word-major (word w of every row, then word w + 1): a scan then runs
    a handful of numpy operations over long contiguous arrays, ~4x faster than row-major.

    ``rows`` are the stored float32 vectors; for cosine they are compared unit-length (the
    centroid of a cosine segment is unit-length already)."""
    rows = np.asarray(rows, dtype=np.float32)
    n, dim = rows.shape
    if metric == "cosine":
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.float32(1e-30))
    centroid = np.asarray(centroid, dtype=np.float32)
    residual = rows - centroid[None, :]
    positive = residual > 0
    padded = np.zeros((n, words(dim) * 64), bool)
    padded[:, :dim] = positive
    bits = np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little").view("<u8").T)
    norm = np.linalg.norm(residual, axis=1).astype(np.float64)
    abs_sum = np.abs(residual).sum(axis=1, dtype=np.float64)
    root = np.sqrt(dim)
    # <b, r/|r|> = sum|r_i| / (sqrt(D) |r|), so factor = |r|^2 sqrt(D) / sum|r_i|.
    factor = np.divide(norm * norm * root, abs_sum, out=np.zeros(n), where=abs_sum > 0)
    c_dot_b = (np.where(positive, centroid[None, :], -centroid[None, :]).sum(axis=1, dtype=np.float64)) / root
    add = residual.astype(np.float64) @ centroid.astype(np.float64) - factor * c_dot_b
    if metric == "l2":
        sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        a, b = sq - 2 * add, -2 * factor
    else:  # cosine, ip: 1 - <q, x>
        a, b = -add, -factor
    return bits, a.astype(np.float32), b.astype(np.float32)


def row_ones(bits: np.ndarray) -> np.ndarray:
    """Set bits per row of word-major codes (uint16): the query-independent part of a scan,
    computed once per partition's codes."""
    return np.bitwise_count(bits).sum(axis=0, dtype=np.uint16)


class QueryCode:
    """A query prepared for ``dots``: its 4-bit planes and the weights that turn plane
    popcounts back into <q, b>."""

    def __init__(self, query: np.ndarray, metric: str) -> None:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if metric == "cosine":
            query = query / max(float(np.linalg.norm(query)), 1e-30)
        self.query = query
        self.metric = metric
        dim = len(query)
        self.sq_norm = float(query @ query)
        lo, hi = float(query.min()), float(query.max())
        levels = (1 << QUERY_BITS) - 1
        delta = (hi - lo) / levels if hi > lo else 1.0
        quantised = np.rint((query - lo) / delta).astype(np.uint8)
        planes = np.zeros((QUERY_BITS, words(dim) * 64), bool)
        for j in range(QUERY_BITS):
            planes[j, :dim] = (quantised >> j) & 1
        self.planes = np.packbits(planes, axis=1, bitorder="little").view("<u8")   # (planes, words)
        # <q, bits> ~= sum_j delta 2^j popcount(plane_j & bits) + lo popcount(bits), the last
        # popcount being the rows' own (row_ones);
        # <q, b> = (2 <q, bits> - sum q) / sqrt(D).
        root = np.sqrt(dim)
        plane_weights = np.array([delta * (1 << j) for j in range(QUERY_BITS)] + [lo]) * 2 / root
        self.plane_weights = plane_weights[:QUERY_BITS].astype(np.float32)
        self.ones_weight = np.float32(plane_weights[QUERY_BITS])
        self.offset = np.float32(-float(query.sum(dtype=np.float64)) / root)

    def dots(self, codes: np.ndarray | list[np.ndarray],
             ones: np.ndarray | list[np.ndarray] | None = None) -> np.ndarray:
        """Estimated <q, b> for each row of ``codes`` (uint64 (words, n), word-major), or of
        several such blocks one after the other.  ``ones`` are the rows' ``row_ones`` (per
        block), computed here when not given.  A long scan is split over the scan threads,
        each joining and scanning its share of the blocks (numpy releases the GIL there)."""
        blocks = codes if isinstance(codes, list) else [codes]
        if ones is None:
            counts = [row_ones(block) for block in blocks]
        else:
            counts = ones if isinstance(ones, list) else [ones]
        n = sum(block.shape[1] for block in blocks)
        if n < _SPLIT_ROWS or _SCAN_THREADS < 2 or len(blocks) < 2:
            return self._dots_joined(blocks, counts)
        ends = np.cumsum([block.shape[1] for block in blocks])
        cuts = np.searchsorted(ends, np.linspace(0, n, _SCAN_THREADS + 1)[1:-1]).tolist()
        spans = [(lo, hi) for lo, hi in zip([0, *cuts], [*cuts, len(blocks)]) if hi > lo]
        parts = [_scan_pool().submit(self._dots_joined, blocks[lo:hi], counts[lo:hi]) for lo, hi in spans]
        return np.concatenate([part.result() for part in parts])

    def _dots_joined(self, blocks: list[np.ndarray], counts: list[np.ndarray]) -> np.ndarray:
        if len(blocks) == 1:
            return self._dots(blocks[0], counts[0])
        return self._dots(np.concatenate(blocks, axis=1), np.concatenate(counts))

    def _dots(self, codes: np.ndarray, ones: np.ndarray) -> np.ndarray:
        """Per chunk of rows, the query's bit planes against every code word at once (a few
        large numpy operations instead of one per plane and word, on temporaries that stay
        in the CPU cache); the plane of ones is the rows' precomputed popcount."""
        n = codes.shape[1]
        out = np.empty(n, np.float32)
        planes = self.planes
        for start in range(0, n, _CHUNK_ROWS):
            chunk = codes[:, start : start + _CHUNK_ROWS]
            width = chunk.shape[1]
            totals = np.zeros((QUERY_BITS, width), np.uint16)
            word = np.empty((QUERY_BITS, width), np.uint64)
            count = np.empty((QUERY_BITS, width), np.uint8)
            for w in range(chunk.shape[0]):
                np.bitwise_and(chunk[w][None, :], planes[:, w][:, None], out=word)
                np.bitwise_count(word, out=count)
                totals += count
            np.matmul(self.plane_weights, totals, out=out[start : start + width])
        out += ones * self.ones_weight
        out += self.offset
        return out

    def terms(self, centroids: np.ndarray) -> np.ndarray:
        """The per-partition part of the estimate, for each centroid."""
        dots = centroids @ self.query
        if self.metric == "l2":
            return (self.sq_norm - 2 * dots).astype(np.float32)
        return (1 - dots).astype(np.float32)
