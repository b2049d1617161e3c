"""The read path of a collection: get by id, and k-NN queries merged over memtable and segments.

Queries and gets run in threads under the read side of ``_rw``; they see a consistent state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import metrics
from ..errors import unavailable
from ..models import Document, Hit
from ..service.limits import Limits
from . import segment as segments
from .collection_state import CollectionState
from .filters import compile_filter, filter_key
from .rows import RowSource
from .validation import check_ids
from .vectors import as_matrix


class ReadsMixin(CollectionState):
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
            for doc_id in ids:
                loc = self._where.get(doc_id)
                if loc is not None:
                    src, row = loc
                    found.append(Document(doc_id, src.raw_vectors()[row].tolist(), src.metadata[row]))
        return found

    async def query(
        self,
        vectors: Any,
        k: int,
        filter: dict | None = None,
        include_metadata: bool = False,
        include_vector: bool = False,
        ef: int | None = None,
    ) -> list[list[Hit]]:
        self._check_open()
        limits = Limits.of(self.settings)
        limits.check_k(k)
        limits.check_ef(ef)
        matrix = as_matrix(vectors, self.spec.dimension, what="query vector")
        predicate = compile_filter(filter, self.settings.server.max_nesting_depth) if filter is not None else None
        started = time.perf_counter()
        hits = await asyncio.to_thread(
            self._query_sync, matrix, k, predicate, filter_key(filter) if filter is not None else "",
            include_metadata, include_vector, ef or self.hnsw.ef_search,
        )
        metrics.QUERIES.labels(collection=self.name).inc(len(matrix))
        metrics.OPERATION_SECONDS.labels(collection=self.name, op="query").observe(time.perf_counter() - started)
        return hits

    def _query_sync(self, queries, k, predicate, fkey, include_metadata, include_vector, ef) -> list[list[Hit]]:
        with self._rw.read():
            found: list[tuple[RowSource, Any]] = []
            for src in (self.memtable, *self.frozen, *self.segments):
                allowed = None
                if predicate is not None:
                    allowed = src.matching_mask(predicate, fkey, cacheable=isinstance(src, segments.Segment))
                    allowed = allowed & src.alive_mask()
                result = src.search(queries, k, ef, allowed)
                if result.rows.shape[1]:
                    found.append((src, result))
            return [self._merge_hits(found, qi, k, include_metadata, include_vector) for qi in range(len(queries))]

    def _merge_hits(self, found, qi: int, k: int, include_metadata: bool, include_vector: bool) -> list[Hit]:
        if not found:
            return []
        if len(found) == 1:  # the common steady state: one segment, already sorted
            src, res = found[0]
            candidates = [(src, row, d) for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist())]
        else:
            candidates = sorted(
                ((src, row, d) for src, res in found for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist())),
                key=lambda c: c[2],
            )
        clamp = self.spec.metric != "ip"
        return [
            Hit(
                id=src.ids[row],
                distance=max(d, 0.0) if clamp else d,
                metadata=src.metadata[row] if include_metadata else None,
                vector=src.raw_vectors()[row].tolist() if include_vector else None,
            )
            for src, row, d in candidates[:k]
        ]
