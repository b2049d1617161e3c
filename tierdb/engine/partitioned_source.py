"""A partitioned (IVF) segment as one of a collection's row sources (s3_only).

Only the header stays in RAM (centroids, partition table, id hashes) plus a tombstone bitmap
and the deaths the manifest records; partitions are read on demand through ``load`` (the
node's partition cache, then the disk cache, then S3 by range).  Unlike a memtable or an
hnswlib segment, its live ids are not in the collection's ``_where`` map: the collection finds
them with ``locate`` (a hash lookup; a partition is read only to confirm a match).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import vectors as vec
from .filters import Predicate
from .partitioned import Load, Partition, PartitionDocs, PartitionedSegment, hash_ids
from .rows import RowSource, SearchResult

DocsLoad = Callable[[Sequence[int]], list[PartitionDocs]]
VectorsLoad = Callable[[np.ndarray], np.ndarray]

# Rows read per step when a flush, merge or export walks a whole segment.
WALK_ROWS = 16_384


class _Column(Sequence):
    """``ids`` or ``metadata`` of a partitioned source, read from its partitions on access."""

    def __init__(self, source: PartitionedSource, field: str) -> None:
        self._source, self._field = source, field

    def __len__(self) -> int:
        return self._source.size()

    def __getitem__(self, row):  # type: ignore[override]
        ids, metadata = self._source.documents([int(row)])
        return ids[0] if self._field == "ids" else metadata[0]

    def __iter__(self) -> Iterator:
        for part in self._source.walk():
            yield from (part.ids if self._field == "ids" else part.metadata)


class PartitionedSource(RowSource):
    indexed = False           # no hnswlib graph: compaction never grows it
    loader = None             # not a whole-segment RAM-cache member
    on_access = None
    resident = False

    def __init__(self, segment: PartitionedSegment, load: Load, load_uncached: Load, size_bytes: int,
                 load_docs: DocsLoad | None = None, load_vectors: VectorsLoad | None = None) -> None:
        super().__init__(segment.metric, segment.dimension)
        self.id = segment.id
        self.segment = segment
        self._load = load
        self._load_uncached = load_uncached
        # Format 4: documents and single rows are sections of their own (no whole partitions).
        self._load_docs = load_docs
        self._load_vectors = load_vectors
        self.size_bytes = size_bytes
        self.ids = _Column(self, "ids")  # type: ignore[assignment]
        self.metadata = _Column(self, "metadata")

    # -- RowSource ---------------------------------------------------------------------------
    def size(self) -> int:
        return self.segment.rows

    def alive_mask(self) -> np.ndarray:
        return ~self.segment.tombstones

    def _kill_row(self, row: int) -> None:
        self.segment.tombstones[row] = True

    def nbytes(self) -> int:
        return self.segment.nbytes()

    @property
    def nlist(self) -> int:
        return self.segment.nlist

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dimension), np.float32)
        if len(rows) == 0:
            return out
        if self._load_vectors is not None and len(rows) <= WALK_ROWS:
            return self._load_vectors(rows)
        owners = self.segment.partition_of(rows)
        needed = sorted(set(owners.tolist()))
        parts = dict(zip(needed, self._load(needed)))
        for i, (row, p) in enumerate(zip(rows.tolist(), owners.tolist())):
            part = parts[p]
            out[i] = part.vectors[row - part.start]
        return out

    def raw_vectors(self) -> np.ndarray:
        return self.vectors_of(np.arange(self.size()))

    def row_norms(self) -> np.ndarray:
        raise NotImplementedError("a partitioned segment keeps norms per partition")

    def documents(self, rows: Sequence[int], preloaded: dict[int, Partition] | None = None,
                  include_metadata: bool = True) -> tuple[list[str], list[dict | None]]:
        """(ids, metadata) of rows; partitions in ``preloaded`` (a query's) are not read again."""
        if self._load_docs is not None and not preloaded:
            return self.segment.documents(rows, self._load_docs, include_metadata)
        return self.segment.documents(rows, self._with(preloaded), include_metadata)

    def _with(self, preloaded: dict[int, Partition] | None) -> Load:
        if not preloaded:
            return self._load

        def load(numbers: Sequence[int]) -> list[Partition]:
            absent = [p for p in numbers if p not in preloaded]
            fetched = dict(zip(absent, self._load(absent))) if absent else {}
            return [preloaded[p] if p in preloaded else fetched[p] for p in numbers]

        return load

    def search(self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None,
               nprobe: int | None = None, preloaded: dict[int, Partition] | None = None) -> SearchResult:
        """The k nearest live rows among the ``nprobe`` partitions nearest each query (those in
        ``preloaded`` are not read again).  Rows of -1 (distance inf) pad a query whose probed
        partitions hold fewer than k."""
        rows, dist = self.segment.search_partitions(queries, k, nprobe or 1, self._with(preloaded), allowed)
        return SearchResult(rows, dist)

    def search_routed(self, queries: np.ndarray, k: int, routed: list[np.ndarray],
                      preloaded: dict[int, Partition]) -> SearchResult:
        """Top-k of each query over the partitions routed to it (all of them in ``preloaded``)."""
        rows, dist = self.segment.search_routed(queries, k, routed, lambda numbers: [preloaded[p] for p in numbers])
        return SearchResult(rows, dist)

    def search_matching(self, queries: np.ndarray, k: int, nprobe: int, predicate: Predicate) -> SearchResult:
        """Filtered search: the filter is evaluated on the probed partitions' metadata; while
        they hold fewer than k live matches the probe widens (x4) up to every partition."""
        while True:
            routed = self.segment.route(queries, nprobe)
            wanted = np.unique(routed).tolist()
            parts = dict(zip(wanted, self._load(wanted)))
            allowed = np.zeros(self.size(), bool)
            for part in parts.values():
                allowed[part.start : part.start + len(part.vectors)] = [predicate(md) for md in part.metadata]
            allowed &= ~self.segment.tombstones
            if np.count_nonzero(allowed) >= k or nprobe >= self.nlist:
                return self.search(queries, k, 0, allowed, nprobe, preloaded=parts)  # read once
            nprobe = min(self.nlist, nprobe * 4)

    # -- ids ------------------------------------------------------------------------------------
    def locate_live(self, ids: Sequence[str]) -> np.ndarray:
        """The live row of each id in this segment, or -1.  No I/O unless an id's 64-bit hash
        matches a live row (then that row's partition is read to compare the id itself).  A
        segment may hold an id twice (a row that died while a merge copied it): only live
        rows count."""
        result = np.full(len(ids), -1, np.int64)
        segment = self.segment
        if not ids or segment.rows == 0:
            return result
        hashes = hash_ids(ids)
        lo = np.searchsorted(segment.id_hashes, hashes, side="left")
        hi = np.searchsorted(segment.id_hashes, hashes, side="right")
        candidates: dict[int, list[int]] = {}
        for n in np.flatnonzero(hi > lo).tolist():
            rows = segment.id_rows[lo[n] : hi[n]].astype(np.int64)
            rows = rows[~segment.tombstones[rows]]
            if len(rows):
                candidates[n] = rows.tolist()
        if not candidates:
            return result
        every = np.array([r for rows in candidates.values() for r in rows], np.int64)
        needed = sorted(set(segment.partition_of(every).tolist()))
        parts = dict(zip(needed, (self._load_docs or self._load)(needed)))
        for n, rows in candidates.items():
            for row in rows:
                part = parts[int(segment.partition_of(np.array([row]))[0])]
                if part.ids[row - part.start] == ids[n]:
                    result[n] = row
                    break
        return result

    def walk(self, uncached: bool = False) -> Iterator[Partition]:
        """Every partition in row order, a few at a time (flush, merge, export, filter deletes)."""
        load = self._load_uncached if uncached else self._load
        step = max(1, WALK_ROWS // max(1, int(self.segment.table["rows"].max(initial=1))))
        for first in range(0, self.nlist, step):
            yield from load(list(range(first, min(first + step, self.nlist))))

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.segment.tombstones)


class CentroidTable:
    """The centroids of every partitioned segment of a collection, stacked: a query routes to
    its ``nprobe`` nearest partitions over the whole collection, wherever they are, as one
    IVF index over all segments would (a fixed share per segment loses recall: the nearest
    clusters of a query are not spread evenly over the segments)."""

    def __init__(self, sources: list[PartitionedSource]) -> None:
        self.sources = sources
        self.key = tuple(s.id for s in sources)
        parts = [s.segment.centroids for s in sources]
        self.centroids = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        self.norms = vec.norms(self.centroids) if len(self.centroids) else np.zeros(0, np.float32)
        self.owner = np.concatenate([np.full(s.nlist, i, np.int64) for i, s in enumerate(sources)]) \
            if sources else np.zeros(0, np.int64)
        self.local = np.concatenate([np.arange(s.nlist) for s in sources]) if sources else np.zeros(0, np.int64)

    def route(self, queries: np.ndarray, nprobe: int, metric: str) -> list[list[np.ndarray]]:
        """Per source, per query: the partitions (local numbers) that query probes there."""
        nearest = vec.top_k(vec.distances(queries, self.centroids, self.norms, metric), nprobe)[0]
        owners, local = self.owner[nearest], self.local[nearest]
        return [[local[qi][owners[qi] == i] for qi in range(len(queries))] for i in range(len(self.sources))]


def nprobe_share(nprobe: int, nlist: int, total_nlist: int) -> int:
    """A segment's share of a query's ``nprobe`` partitions, in proportion to its partitions
    (every segment probes at least one; a share never exceeds the segment's partitions)."""
    if total_nlist <= 0:
        return 1
    return max(1, min(nlist, -(-nprobe * nlist // total_nlist)))


# Recall at a given nprobe falls as segments multiply (each is clustered on its own): on 1M
# synthetic docstring embeddings, 96 probes reach recall@10 0.957 in one segment, and four
# segments of 250k need 256 for 0.96 (benchmarks/bench_large.py).  256 / 96 = 4 ** 0.71.
SEGMENTS_EXPONENT = 0.71


def default_nprobe(nprobe: int, segment_rows: list[int]) -> int:
    """The configured ``partitions.nprobe`` (set for a collection in one segment) scaled to
    the collection's segments: by their effective count (rows / the largest segment's rows,
    so small fresh segments beside a big one add little) to the power SEGMENTS_EXPONENT."""
    largest = max(segment_rows, default=0)
    if largest <= 0:
        return nprobe
    effective = sum(segment_rows) / largest
    return max(nprobe, round(nprobe * effective ** SEGMENTS_EXPONENT))

