"""How a collection reaches its partitioned segments: opening one by its header, reading
partitions (node RAM cache -> disk cache -> S3 range GETs), and finding live ids in them.

Partition reads run in worker threads (queries, writes, maintenance) and hop onto the event
loop for the store's async range GETs; all partitions one call needs are fetched concurrently,
one range GET each (stable ranges, so the disk cache can serve them again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from .. import keys
from ..errors import ErrorKind, TierDBError, corrupt
from ..models import SegmentRef
from . import coded_search, partitioned
from .collection_state import CollectionState
from .partition_cache import NoPartitionCache, PartitionCache
from .partitioned import Load, Partition, PartitionCodes, PartitionedSegment
from .partitioned_source import PartitionedSource
from .rows import RowSource, SearchResult

T = TypeVar("T")

# What _load_sections reads: whole partitions, their scan codes, or their ids + metadata.
PARTITION, CODES, DOCS = "partition", "codes", "docs"
_SECTIONS: dict[str, tuple[Callable[[PartitionedSegment, Sequence[int]], list[tuple[int, int]]],
                           Callable[[PartitionedSegment, int, Any], Any]]] = {
    PARTITION: (PartitionedSegment.partition_ranges, PartitionedSegment.decode_partition),
    CODES: (PartitionedSegment.codes_ranges, PartitionedSegment.decode_codes),
    DOCS: (PartitionedSegment.docs_ranges, PartitionedSegment.decode_docs),
}
# Sections smaller than this are checked and decoded on the loop (a thread hop costs more).
_DECODE_INLINE_BYTES = 256 * 1024


def _spans(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) pairs as the (start, end) pairs the disk cache takes."""
    return [(offset, offset + length) for offset, length in ranges]


_PendingRow = tuple[int, int, PartitionedSegment, int, PartitionCodes]   # (request, position, segment, row, codes)


def _by_segment(pending: list[_PendingRow]) -> list[tuple[PartitionedSegment, list[_PendingRow],
                                                         list[tuple[int, int]], list[tuple[int, int]]]]:
    """Pending row reads grouped by segment, with each row's byte range and its partition's."""
    groups = []
    for segment in {id(item[2]): item[2] for item in pending}.values():
        mine = [item for item in pending if item[2] is segment]
        rows = [item[3] for item in mine]
        groups.append((segment, mine, segment.row_ranges(rows),
                       segment.partition_ranges(segment.partition_of(np.asarray(rows, np.int64)).tolist())))
    return groups


def _section_of(whole: Partition | None, kind: str) -> Any:
    """The codes or documents of a whole partition held in RAM (None if it has no codes)."""
    if whole is None:
        return None
    return whole.codes if kind == CODES else whole


class PartitionAccessMixin(CollectionState):
    _loop: asyncio.AbstractEventLoop | None
    _partition_cache: PartitionCache = NoPartitionCache()

    def attach_partition_cache(self, cache: PartitionCache) -> None:
        self._partition_cache = cache

    @property
    def partitioned_sources(self) -> list[PartitionedSource]:
        return [s for s in self.segments if isinstance(s, PartitionedSource)]

    # -- opening ---------------------------------------------------------------------------------
    async def _open_partitioned(self, ref: SegmentRef) -> PartitionedSource:
        """Header only: one range GET (two for a header past HEADER_PREFIX_BYTES)."""
        key = keys.segment_key(self.name, ref.id)
        try:
            head = await self.store.get_range(key, 0, min(ref.size, partitioned.HEADER_PREFIX_BYTES))
            need = partitioned.header_length(head, ref.id)
            if need > len(head):
                head += await self.store.get_range(key, len(head), need)
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                raise corrupt(f"collection {self.name!r}: segment {ref.id} referenced by the manifest is missing",
                              collection=self.name, key=key) from exc
            raise
        segment = await asyncio.to_thread(partitioned.open_header, head, ref.id)
        if segment.rows != ref.rows:
            raise corrupt(f"collection {self.name!r}: segment {ref.id} holds {segment.rows} rows, the manifest says {ref.rows}",
                          collection=self.name, segment=ref.id)
        return self._source_of(segment, ref.size)

    def _source_of(self, segment: PartitionedSegment, size: int) -> PartitionedSource:
        coded = segment.has_codes
        return PartitionedSource(segment, self._partition_load(segment, cached=True),
                                 self._partition_load(segment, cached=False), size,
                                 load_docs=self._section_load(segment, DOCS) if coded else None,
                                 load_vectors=self._vectors_load(segment) if coded else None)

    def _vectors_load(self, segment: PartitionedSegment) -> Callable[[np.ndarray], np.ndarray]:
        def load(rows: np.ndarray) -> np.ndarray:
            numbers = sorted(set(segment.partition_of(rows).tolist()))
            codes = dict(zip(numbers, self._load_sections(CODES, [(segment, numbers)])[0]))
            return self._load_rows([(segment, rows, codes)])[0]

        return load

    # -- searching -------------------------------------------------------------------------------
    def _search_coded(self, queries: np.ndarray, k: int, routed: list[tuple[PartitionedSource, list[np.ndarray]]]
                      ) -> list[tuple[RowSource, SearchResult]]:
        """Unfiltered search of the segments with scan codes: the probed partitions' codes in one
        round, the best candidates' exact rows in a second (coded_search.py)."""
        wanted = [(src.segment, np.unique(np.concatenate(per_query)).tolist()) for src, per_query in routed]
        codes = [dict(zip(numbers, blocks)) for (_, numbers), blocks in zip(wanted, self._load_sections(CODES, wanted))]
        picked = coded_search.pick_candidates(
            queries, self.spec.metric, [src.segment for src, _ in routed], [per_query for _, per_query in routed],
            codes, max(self.settings.partitions.rerank, k))
        rows = [np.unique(np.concatenate(per_query)) for per_query in picked]
        vectors = self._load_rows([(src.segment, r, c) for (src, _), r, c in zip(routed, rows, codes)])
        found: list[tuple[RowSource, SearchResult]] = []
        for (src, _), per_query, r, v in zip(routed, picked, rows, vectors):
            if len(r):
                found.append((src, coded_search.rerank(queries, self.spec.metric, k, per_query, r, v)))
        return found

    # -- reading partitions ----------------------------------------------------------------------
    def _partition_load(self, segment: PartitionedSegment, cached: bool) -> Load:
        def load(numbers: Sequence[int]) -> list[Partition]:
            return self._load_partitions([(segment, numbers)], cached)[0]

        return load

    def _section_load(self, segment: PartitionedSegment, kind: str) -> Callable[[Sequence[int]], list[Any]]:
        def load(numbers: Sequence[int]) -> list[Any]:
            return self._load_sections(kind, [(segment, numbers)])[0]

        return load

    def _load_partitions(self, wanted: list[tuple[PartitionedSegment, Sequence[int]]],
                         cached: bool = True) -> list[list[Partition]]:
        """The partitions each segment needs, the missing ones of every segment fetched in one
        round of concurrent range GETs (a cold query waits for one round, not one per segment)."""
        return self._load_sections(PARTITION, wanted, cached)

    def _load_sections(self, kind: str, wanted: list[tuple[PartitionedSegment, Sequence[int]]],
                       cached: bool = True) -> list[list[Any]]:
        """``kind`` (PARTITION, CODES or DOCS) of the partitions each segment needs: from the node's
        RAM cache (a whole partition there serves its codes and documents too), else read in one
        round (disk cache, then concurrent range GETs) and put in the RAM cache."""
        found: list[list[Any]] = []
        missing: list[tuple[int, int, PartitionedSegment, int]] = []    # (request, position, segment, partition)
        lru = self._partition_cache
        for n, (segment, numbers) in enumerate(wanted):
            numbers = [int(p) for p in numbers]
            row: list[Any] = [None] * len(numbers)
            if cached and kind == PARTITION:
                row = lru.get_many([(self.name, segment.id, p) for p in numbers])
            elif cached:   # a whole partition in RAM serves its sections
                row = [_section_of(whole, kind) for whole in
                       lru.get_many([(self.name, segment.id, p) for p in numbers], count=False)]
                absent = [i for i, part in enumerate(row) if part is None]
                for i, part in zip(absent, lru.get_many([(self.name, segment.id, numbers[i], kind) for i in absent])):
                    row[i] = part
            missing.extend((n, i, segment, p) for i, (p, part) in enumerate(zip(numbers, row)) if part is None)
            found.append(row)
        if missing:
            decoded = self._fetch_sections(kind, [(segment, p) for _, _, segment, p in missing])
            for (n, i, segment, p), part in zip(missing, decoded):
                if cached:
                    lru.put((self.name, segment.id, p) if kind == PARTITION else (self.name, segment.id, p, kind), part)
                found[n][i] = part
        return found

    def _fetch_sections(self, kind: str, wanted: list[tuple[PartitionedSegment, int]]) -> list[Any]:
        """Sections read and decoded concurrently: one range GET each, and each checksum and
        decode in the loop's thread pool as its bytes arrive (zlib releases the GIL, so the
        cores share the checksums).  From a worker thread only."""
        ranges, decode = _SECTIONS[kind]

        async def one(segment: PartitionedSegment, p: int, data: bytes | None) -> Any:
            ((offset, length),) = ranges(segment, [p])
            if data is None:
                data = await self.store.get_range(keys.segment_key(self.name, segment.id), offset, offset + length)
            if length < _DECODE_INLINE_BYTES or (kind == PARTITION and segment.verified(p)):
                return decode(segment, p, data)
            return await asyncio.to_thread(decode, segment, p, data)

        async def fetch() -> list[Any]:
            by_segment = [(segment, [p for s, p in wanted if s is segment])
                          for segment in {id(s): s for s, _ in wanted}.values()]
            cached = await asyncio.gather(*(
                self._disk_cached(segment, ranges(segment, numbers), segment.partition_ranges(numbers))
                for segment, numbers in by_segment))
            held: dict[tuple[str, int], bytes | None] = {}
            for (segment, numbers), datas in zip(by_segment, cached):
                held.update(zip(((segment.id, p) for p in numbers), datas))
            return list(await asyncio.gather(*(one(segment, p, held.get((segment.id, p))) for segment, p in wanted)))

        return self._on_loop(fetch)

    def _load_rows(self, wanted: list[tuple[PartitionedSegment, np.ndarray, dict[int, PartitionCodes]]]) -> list[np.ndarray]:
        """The float32 vectors of the given global rows of each segment (a query's candidates for
        the exact re-rank), each checked against its crc32 in ``codes`` (partition -> codes):
        from whole partitions in the RAM cache, else the disk cache, else one range GET per row,
        all in one round."""
        out = [np.empty((len(rows), segment.dimension), np.float32) for segment, rows, _ in wanted]
        pending: list[_PendingRow] = []
        for n, (segment, rows, codes) in enumerate(wanted):
            owners = segment.partition_of(rows)
            wholes = self._partition_cache.get_many([(self.name, segment.id, p) for p in owners.tolist()], count=False)
            for i, (row, p, whole) in enumerate(zip(rows.tolist(), owners.tolist(), wholes)):
                if whole is not None:
                    out[n][i] = whole.vectors[row - whole.start]
                else:
                    pending.append((n, i, segment, row, codes[p]))
        by_segment = _by_segment(pending)
        read_files = getattr(self.store, "read_known_files", None)   # the s3_only disk cache
        if read_files is not None:   # straight from cached files, in this thread
            rest = []
            for segment, mine, ranges, containers in by_segment:
                datas = read_files(keys.segment_key(self.name, segment.id), _spans(ranges), _spans(containers))
                for item, data in zip(mine, datas):
                    if data is None:
                        rest.append(item)
                    else:
                        out[item[0]][item[1]] = segment.decode_row(item[3], data, item[4])
            pending = rest
            by_segment = _by_segment(pending)
        if not pending:
            return out

        async def fetch() -> list[np.ndarray]:
            reads = []
            for segment, mine, ranges, containers in by_segment:
                datas = await self._disk_cached(segment, ranges, containers)
                reads.extend((segment, item[3], item[4], rng, data) for item, rng, data in zip(mine, ranges, datas))

            async def one(segment: PartitionedSegment, row: int, codes: PartitionCodes,
                          rng: tuple[int, int], data: bytes | None) -> np.ndarray:
                if data is None:
                    offset, length = rng
                    data = await self.store.get_range(keys.segment_key(self.name, segment.id), offset, offset + length)
                return segment.decode_row(row, data, codes)

            return list(await asyncio.gather(*(one(*read) for read in reads)))

        # fetch() answers in by_segment order: put each vector back where its row was asked for
        ordered = [item for _, mine, _, _ in by_segment for item in mine]
        for (n, i, _, _, _), vector in zip(ordered, self._on_loop(fetch)):
            out[n][i] = vector
        return out

    async def _disk_cached(self, segment: PartitionedSegment, ranges: list[tuple[int, int]],
                           containers: list[tuple[int, int]]) -> list[bytes | None]:
        """The ranges (offset, length) the node's disk cache holds, itself or within the cached
        whole partition ``containers[i]``, in one lookup (None: not cached)."""
        cached_ranges = getattr(self.store, "cached_ranges", None)   # the s3_only disk cache
        if cached_ranges is None:
            return [None] * len(ranges)
        return await cached_ranges(keys.segment_key(self.name, segment.id), _spans(ranges), _spans(containers))

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the collection's event loop from a worker thread; its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"collection {self.name!r}: partitions read before the collection has an event loop")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("partitions must be read from a worker thread, never on the event loop")
        return asyncio.run_coroutine_threadsafe(make(), loop).result()

    # -- ids ---------------------------------------------------------------------------------------
    def _locate_partitioned(self, ids: Sequence[str]) -> dict[str, tuple[RowSource, int]]:
        """Where each of ``ids`` is live in a partitioned segment (ids found nowhere are absent).
        An id is live in at most one place, so the newest segment holding it is the one."""
        found: dict[str, tuple[RowSource, int]] = {}
        pending = list(dict.fromkeys(ids))
        for source in reversed(self.partitioned_sources):
            if not pending:
                break
            rows = source.locate_live(pending)
            rest = []
            for doc_id, row in zip(pending, rows.tolist()):
                if row >= 0:
                    found[doc_id] = (source, row)
                else:
                    rest.append(doc_id)
            pending = rest
        return found

    def _live_partitioned_count(self) -> int:
        return sum(source.live_count() for source in self.partitioned_sources)

    def _live_partitioned(self) -> Iterator[tuple[PartitionedSource, Partition, np.ndarray]]:
        """Each partition of each partitioned segment with its live rows' offsets in it."""
        for source in self.partitioned_sources:
            for part in source.walk(uncached=True):
                alive = ~source.segment.tombstones[part.start : part.start + len(part.vectors)]
                yield source, part, np.flatnonzero(alive)
