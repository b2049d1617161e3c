"""The read path of a collection: get by id, and k-NN queries merged over memtable and segments.

Queries and gets run in threads under the read side of ``_rw``; they see a consistent state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from .. import metrics
from ..errors import unavailable
from ..models import Document, Hit
from ..service.limits import Limits
from . import segment as segments
from .filters import compile_filter, filter_key
from .memtable import Memtable
from .partition_access import PartitionAccessMixin
from .partitioned_source import CentroidTable, PartitionedSource, default_nprobe, nprobe_share
from .rows import RowSource
from .validation import check_ids
from .vectors import as_matrix


def _in_ram_segment(src: RowSource, indexed: bool) -> bool:
    """A plain segment that is always resident (never evicted, so never loaded on access)."""
    return (
        type(src) is segments.Segment and src.indexed is indexed and src.loader is None
        and src.on_access is None and src.resident
    )


class ReadsMixin(PartitionAccessMixin):
    def _check_open(self) -> None:
        if self.state == "closed":
            raise unavailable(f"collection {self.name!r} is closed", collection=self.name)

    async def get(self, ids: list[str]) -> list[Document]:
        self._check_open()
        check_ids(ids, allow_duplicates=True)
        return await asyncio.to_thread(self._get_sync, ids)

    def _get_sync(self, ids: list[str]) -> list[Document]:
        found = []
        with self._rw.read():
            in_partitions = self._locate_partitioned([i for i in ids if i not in self._where]) \
                if self.partitioned_sources else {}
            for doc_id in ids:
                loc = self._where.get(doc_id) or in_partitions.get(doc_id)
                if loc is not None:
                    src, row = loc
                    found.append(Document(doc_id, src.vectors_of(np.array([row]))[0].tolist(), src.metadata[row]))
        return found

    async def query(
        self,
        vectors: Any,
        k: int,
        filter: dict | None = None,
        include_metadata: bool = False,
        include_vector: bool = False,
        ef: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """k-NN for each query vector.  Runs in a worker thread, or right here on the event loop
        when it is one small unfiltered search that needs no waiting (``_query_now``)."""
        started = time.perf_counter()
        matrix, predicate, fkey, ef_used = self._plan_query(vectors, k, filter, ef, nprobe)
        hits = None
        if predicate is None and len(matrix) == 1 and not self._threaded_queries:
            hits = self._query_now(matrix, k, include_metadata, include_vector, ef_used)
        if hits is None:
            self._threaded_queries += 1
            try:
                hits = await asyncio.to_thread(
                    self._query_sync, matrix, k, predicate, fkey, include_metadata, include_vector, ef_used, nprobe
                )
            finally:
                self._threaded_queries -= 1
        self._observe_query(len(matrix), started)
        return hits

    def query_blocking(
        self,
        vectors: Any,
        k: int,
        filter: dict | None = None,
        include_metadata: bool = False,
        include_vector: bool = False,
        ef: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """``query`` in the calling thread, for callers that are not on the event loop (the
        embedded API): no thread hop at all.  Thread-safe like the threaded part of ``query``."""
        started = time.perf_counter()
        matrix, predicate, fkey, ef_used = self._plan_query(vectors, k, filter, ef, nprobe)
        hits = self._query_sync(matrix, k, predicate, fkey, include_metadata, include_vector, ef_used, nprobe)
        self._observe_query(len(matrix), started)
        return hits

    # Running a search on the event loop saves the thread hop: ~70 us p50 / ~130 us p99 for a
    # no-op asyncio.to_thread on the 2-core benchmark machine, ~25% of a 50k x 384 search at
    # ef 128 (~0.25 ms).  It is allowed only while its cost stays bounded and small: one query
    # vector, no filter, nothing searched by brute force beyond _INLINE_BRUTE_ROWS rows (a few
    # tens of microseconds of numpy), at most one index of at most _INLINE_INDEX_ROWS rows at the
    # default ef (<= 512; hnswlib's cost grows with ef and only logarithmically with rows, about
    # 0.3 ms here at 50k and 0.35 ms at 500k, ef 128), no lock to wait for and no I/O.  While a
    # query of the collection runs in a thread, queries go to threads too, so concurrent load
    # still spreads over the cores.  (At 200k the hop made a 500k query 1.9x raw hnswlib.)
    _INLINE_INDEX_ROWS = 1_000_000
    _INLINE_BRUTE_ROWS = 2_048
    _INLINE_MAX_EF = 512
    _threaded_queries = 0  # queries of this collection now in worker threads (event loop only)

    def _plan_query(
        self, vectors: Any, k: int, filter: dict | None, ef: int | None, nprobe: int | None
    ) -> tuple[Any, Any, str, int]:
        """Checks and compiles a query: (matrix, predicate, filter key, ef)."""
        self._check_open()
        limits = Limits.of(self.settings)
        limits.check_k(k)
        limits.check_ef(ef)
        limits.check_nprobe(nprobe)
        matrix = as_matrix(vectors, self.spec.dimension, what="query vector")
        if filter is None:
            return matrix, None, "", ef or self.hnsw.ef_search
        predicate = compile_filter(filter, self.settings.server.max_nesting_depth)
        return matrix, predicate, filter_key(filter), ef or self.hnsw.ef_search

    _centroids: CentroidTable | None = None

    def _centroid_table(self, partitioned: list[PartitionedSource]) -> CentroidTable:
        """Rebuilt when the set of partitioned segments changes (a flush or merge installed)."""
        table = self._centroids
        if table is None or table.key != tuple(s.id for s in partitioned):
            table = self._centroids = CentroidTable(partitioned)
        return table

    _query_series: tuple[Any, Any] | None = None  # (queries counter, query latency) children, bound once

    def _observe_query(self, n_vectors: int, started: float) -> None:
        series = self._query_series
        if series is None:  # labels() validates and hashes per call; a dropped collection is closed first
            series = self._query_series = (metrics.QUERIES.labels(collection=self.name),
                                           metrics.OPERATION_SECONDS.labels(collection=self.name, op="query"))
        series[0].inc(n_vectors)
        series[1].observe(time.perf_counter() - started)

    def _query_now(self, queries, k, include_metadata, include_vector, ef) -> list[list[Hit]] | None:
        """The unfiltered single-vector query answered in this thread without waiting, or None
        when it is not small enough or would have to wait (see _INLINE_INDEX_ROWS)."""
        if ef > self._INLINE_MAX_EF or not self._rw.try_acquire_read():
            return None
        try:
            found: list[tuple[RowSource, Any]] = []
            indexed = brute = 0
            for src in (self.memtable, *self.frozen, *self.segments):
                if isinstance(src, Memtable) or _in_ram_segment(src, indexed=False):
                    brute += src.size()
                    if brute > self._INLINE_BRUTE_ROWS:
                        return None
                    result = src.search(queries, k, ef, None)
                elif _in_ram_segment(src, indexed=True):
                    indexed += 1
                    if indexed > 1 or src.size() > self._INLINE_INDEX_ROWS or ef != src.default_ef:
                        return None
                    result = src.search_without_waiting(queries, k)
                    if result is None:
                        return None
                else:  # partitioned, evictable or anything else that may do I/O
                    return None
                if result.rows.shape[1]:
                    found.append((src, result))
            return [self._merge_hits(found, 0, k, include_metadata, include_vector)]
        finally:
            self._rw.release_read()

    def _query_sync(self, queries, k, predicate, fkey, include_metadata, include_vector, ef, nprobe=None) -> list[list[Hit]]:
        with self._rw.read():
            found: list[tuple[RowSource, Any]] = []
            partitioned = self.partitioned_sources
            total_nlist = sum(src.nlist for src in partitioned)
            probe = nprobe or default_nprobe(self.settings.partitions.nprobe, [src.size() for src in partitioned])
            probed = 0
            scanned: dict[int, dict] = {}   # partitions this query read, by source: hits' ids come from them
            if partitioned and predicate is None:
                # the nprobe nearest partitions over every segment, read in one round of GETs
                routes = self._centroid_table(partitioned).route(queries, probe, self.spec.metric)
                probed = min(probe, total_nlist)
                coded = [(src, per_query) for src, per_query in zip(partitioned, routes) if src.segment.has_codes]
                if coded:
                    found.extend(self._search_coded(queries, k, coded))
                legacy = [(src, per_query) for src, per_query in zip(partitioned, routes) if not src.segment.has_codes]
                wanted = [(src.segment, np.unique(np.concatenate(per_query)).tolist()) for src, per_query in legacy]
                for (src, per_query), (_, numbers), parts in zip(legacy, wanted, self._load_partitions(wanted) if wanted else []):
                    if numbers:
                        scanned[id(src)] = dict(zip(numbers, parts))
                        found.append((src, src.search_routed(queries, k, per_query, scanned[id(src)])))
            for src in partitioned if predicate is not None else ():
                share = nprobe_share(probe, src.nlist, total_nlist)
                probed += share
                result = src.search_matching(queries, k, share, predicate)
                if result.rows.shape[1]:
                    found.append((src, result))
            if partitioned:
                metrics.PARTITIONS_PROBED.labels(collection=self.name).observe(probed)
            for src in (self.memtable, *self.frozen, *self.segments):
                if isinstance(src, PartitionedSource):
                    continue
                allowed = None
                if predicate is not None:
                    allowed = src.matching_mask(predicate, fkey, cacheable=isinstance(src, segments.Segment))
                    allowed = allowed & src.alive_mask()
                result = src.search(queries, k, ef, allowed)
                if result.rows.shape[1]:
                    found.append((src, result))
            return [self._merge_hits(found, qi, k, include_metadata, include_vector, scanned) for qi in range(len(queries))]

    def _merge_hits(self, found, qi: int, k: int, include_metadata: bool, include_vector: bool,
                    scanned: dict[int, dict] | None = None) -> list[Hit]:
        if not found:
            return []
        if len(found) == 1:  # the common steady state: one segment, already sorted
            src, res = found[0]
            candidates = [(src, row, d) for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist()) if row >= 0]
        else:
            candidates = sorted(
                ((src, row, d) for src, res in found
                 for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist()) if row >= 0),
                key=lambda c: c[2],
            )
        clamp = self.spec.metric != "ip"
        top = candidates[:k]
        vectors = _hit_vectors(top) if include_vector else [None] * len(top)
        if any(type(src) is PartitionedSource for src, _, _ in top):
            documents = _hit_documents(top, include_metadata, scanned or {})
            return [
                Hit(id=doc_id, distance=max(d, 0.0) if clamp else d, metadata=metadata, vector=vector)
                for (_, _, d), (doc_id, metadata), vector in zip(top, documents, vectors)
            ]
        return [  # the memory tiers' hot path: ids and metadata straight from the rows
            Hit(
                id=src.ids[row],
                distance=max(d, 0.0) if clamp else d,
                metadata=src.metadata[row] if include_metadata else None,
                vector=vector,
            )
            for (src, row, d), vector in zip(top, vectors)
        ]


def _hit_documents(hits: list[tuple[RowSource, int, float]], include_metadata: bool,
                   scanned: dict[int, dict]) -> list[tuple[str, dict | None]]:
    """(id, metadata or None) of each hit; a partitioned source reads its hits' partitions once."""
    out: list[tuple[str, dict | None]] = []
    batched: dict[int, tuple[PartitionedSource, list[int]]] = {}
    for i, (src, row, _) in enumerate(hits):
        if isinstance(src, PartitionedSource):
            batched.setdefault(id(src), (src, []))[1].append(i)
            out.append(("", None))
        else:
            out.append((src.ids[row], src.metadata[row] if include_metadata else None))
    for src, positions in batched.values():
        ids, metadata = src.documents([hits[i][1] for i in positions], scanned.get(id(src)), include_metadata)
        for i, doc_id, md in zip(positions, ids, metadata):
            out[i] = (doc_id, md if include_metadata else None)
    return out


def _hit_vectors(hits: list[tuple[RowSource, int, float]]) -> list[list[float]]:
    """The hits' raw vectors as lists, read with one ``vectors_of`` call per source."""
    by_source: dict[int, tuple[RowSource, list[int]]] = {}
    for i, (src, _, _) in enumerate(hits):
        by_source.setdefault(id(src), (src, []))[1].append(i)
    out: list[list[float]] = [[] for _ in hits]
    for src, positions in by_source.values():
        rows = np.array([hits[i][1] for i in positions], dtype=np.int64)
        for i, vector in zip(positions, src.vectors_of(rows).tolist()):
            out[i] = vector
    return out
