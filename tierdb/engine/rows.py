"""RowSource: what the memtable and segments share — rows of (id, vector, metadata), a live
mask, and exact or indexed k-NN over the live rows that match an optional filter.

Rows never change after they are written; a row only dies (deleted, or shadowed by a newer
version of its id).  ``death_seq`` remembers the WAL sequence number that killed each row so a
manifest can record exactly the deaths it covers.  The owning collection serialises mutation
(``kill``, appends) against searches with its read/write lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice

import numpy as np

from . import vectors as vec
from .filters import Predicate

# At or below this many matching rows a filtered query is answered exactly by brute force.
BRUTE_FORCE_MATCHES = 4096
_MASK_CACHE_ENTRIES = 16


class SearchResult:
    __slots__ = ("rows", "distances")

    def __init__(self, rows: np.ndarray, distances: np.ndarray) -> None:
        self.rows = rows
        self.distances = distances


def _empty(n_queries: int) -> SearchResult:
    return SearchResult(np.empty((n_queries, 0), np.int64), np.empty((n_queries, 0), np.float32))


class RowSource:
    def __init__(self, metric: str, dimension: int) -> None:
        self.metric = metric
        self.dimension = dimension
        self.ids: list[str] = []
        self.death_seq: dict[int, int] = {}
        self._mask_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._mask_lock = threading.Lock()

    # -- provided by subclasses ---------------------------------------------------------------
    metadata: Sequence[dict | None]  # indexable by row and iterable in row order

    def size(self) -> int:
        raise NotImplementedError

    def alive_mask(self) -> np.ndarray:
        raise NotImplementedError

    def raw_vectors(self) -> np.ndarray:
        raise NotImplementedError

    def row_norms(self) -> np.ndarray:
        raise NotImplementedError

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """Raw vectors of ``rows``, shape (len(rows), dimension); dead rows included."""
        return self.raw_vectors()[rows]

    def _kill_row(self, row: int) -> None:
        raise NotImplementedError

    def _index_search(self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None) -> SearchResult | None:
        """Approximate search; None when there is no index or it cannot return k rows."""
        return None

    # -- shared -------------------------------------------------------------------------------
    def kill(self, row: int, seq: int) -> None:
        if row not in self.death_seq:
            self.death_seq[row] = seq
            self._kill_row(row)

    def live_count(self) -> int:
        return self.size() - len(self.death_seq)

    def deaths_up_to(self, seq: int) -> list[int]:
        return sorted(r for r, s in self.death_seq.items() if s <= seq)

    def rows_after_purge(self, seq: int) -> int:
        """Rows a rewrite as of WAL position ``seq`` keeps: a death after ``seq`` (its delete
        is not in a published segment yet) must stay a row until the next flush."""
        return self.size() - sum(1 for s in self.death_seq.values() if s <= seq)

    def matching_mask(self, predicate: Predicate, key: str, cacheable: bool) -> np.ndarray:
        """Rows whose metadata satisfies the filter (dead rows included; callers AND with alive)."""
        if cacheable:
            with self._mask_lock:
                cached = self._mask_cache.get(key)
                if cached is not None:
                    self._mask_cache.move_to_end(key)
                    return cached
        n = self.size()
        mask = np.fromiter((predicate(md) for md in islice(self.metadata, n)), dtype=bool, count=n)
        if cacheable:
            with self._mask_lock:
                self._mask_cache[key] = mask
                while len(self._mask_cache) > _MASK_CACHE_ENTRIES:
                    self._mask_cache.popitem(last=False)
        return mask

    def search(self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None) -> SearchResult:
        """The k nearest live rows (only rows in ``allowed`` when given) for each query."""
        n_candidates = self.live_count() if allowed is None else int(np.count_nonzero(allowed))
        if n_candidates == 0 or k <= 0:
            return _empty(len(queries))
        k = min(k, n_candidates)
        if allowed is None or n_candidates > BRUTE_FORCE_MATCHES:
            found = self._index_search(queries, k, ef, allowed)
            if found is not None:
                return found
        return self.brute_force(queries, k, allowed)

    def brute_force(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> SearchResult:
        rows = np.flatnonzero(allowed if allowed is not None else self.alive_mask())
        if len(rows) == self.size():
            candidates, cand_norms = self.raw_vectors(), self.row_norms()
        else:
            candidates, cand_norms = self.vectors_of(rows), self.row_norms()[rows]
        dist = vec.distances(queries, candidates, cand_norms, self.metric)
        cols, d = vec.top_k(dist, k)
        return SearchResult(rows[cols], d.astype(np.float32, copy=False))
