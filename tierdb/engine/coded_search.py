"""Unfiltered search over partitioned segments with scan codes (format 4): estimate, then re-rank.

1. Each query's probed partitions (over every segment) are scored from their one-bit codes
   (binary_codes.py); the ``candidates`` best live rows by estimate are kept.
2. The caller reads those rows' float32 vectors (small range reads) and ``rerank`` keeps the
   exact top k per segment.

No I/O here: the codes and rows are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import binary_codes
from . import vectors as vec
from .partitioned import PartitionCodes, PartitionedSegment
from .rows import SearchResult


def pick_candidates(
    queries: np.ndarray,
    metric: str,
    segments: Sequence[PartitionedSegment],
    routes: Sequence[Sequence[np.ndarray]],
    codes: Sequence[dict[int, PartitionCodes]],
    candidates: int,
) -> list[list[np.ndarray]]:
    """Per segment, per query: the global rows among the query's best ``candidates`` by estimated
    distance.  ``routes[s][q]`` are the partitions query q probes in segment s and ``codes[s]``
    holds their codes; tombstoned rows are never candidates."""
    picked: list[list[np.ndarray]] = [[np.zeros(0, np.int64) for _ in queries] for _ in segments]
    with_dead = [bool(segment.tombstones.any()) for segment in segments]
    any_dead = any(with_dead)   # usually none: no live mask then
    for qi, query in enumerate(queries):
        code = binary_codes.QueryCode(query, metric)
        blocks: list[PartitionCodes] = []
        terms, owner, live = [], [], []
        for s, (segment, per_query) in enumerate(zip(segments, routes)):
            numbers = np.asarray(per_query[qi], dtype=np.int64)
            if not len(numbers):
                continue
            here = [codes[s][p] for p in numbers.tolist()]
            blocks.extend(here)
            terms.append(code.terms(segment.centroids[numbers]))
            owner.extend([s] * len(here))
            if any_dead:
                live.extend(~segment.tombstones[block.start : block.start + len(block)] if with_dead[s]
                            else np.ones(len(block), bool) for block in here)
        if not blocks:
            continue
        sizes = np.fromiter((len(block) for block in blocks), np.int64, count=len(blocks))
        estimate = code.dots([block.bits for block in blocks], [block.ones for block in blocks])
        estimate *= np.concatenate([block.b for block in blocks])
        estimate += np.concatenate([block.a for block in blocks])
        estimate += np.repeat(np.concatenate(terms), sizes)
        if any_dead:
            estimate[~np.concatenate(live)] = np.inf
            alive = int(np.isfinite(estimate).sum())
        else:
            alive = len(estimate)
        take = min(candidates, alive)
        if take == 0:
            continue
        best = np.argpartition(estimate, take - 1)[:take] if take < len(estimate) else np.flatnonzero(np.isfinite(estimate))
        # position in the scan -> (segment, global row)
        ends = np.cumsum(sizes)
        block_of = np.searchsorted(ends, best, side="right")
        first_row = np.fromiter((block.start for block in blocks), np.int64, count=len(blocks))
        global_rows = first_row[block_of] + best - (ends - sizes)[block_of]
        owners = np.asarray(owner, np.int64)[block_of]
        for s in np.unique(owners).tolist():
            picked[s][qi] = np.sort(global_rows[owners == s])
    return picked


def rerank(queries: np.ndarray, metric: str, k: int, picked: Sequence[np.ndarray],
           rows: np.ndarray, vectors: np.ndarray) -> SearchResult:
    """Exact top k of each query among its ``picked`` rows of one segment; ``rows`` (sorted,
    unique) and ``vectors`` are those rows' float32 vectors.  Padded with -1 / inf."""
    out_rows = np.full((len(queries), k), -1, np.int64)
    out_dist = np.full((len(queries), k), np.inf, np.float32)
    norms = vec.norms(vectors) if len(vectors) else np.zeros(0, np.float32)
    for qi, wanted in enumerate(picked):
        if not len(wanted):
            continue
        at = np.searchsorted(rows, wanted)
        dist = vec.distances(queries[qi : qi + 1], vectors[at], norms[at], metric)
        best, best_dist = vec.top_k(dist, k)
        out_rows[qi, : best.shape[1]] = wanted[best[0]]
        out_dist[qi, : best.shape[1]] = best_dist[0]
    return SearchResult(out_rows, out_dist)
