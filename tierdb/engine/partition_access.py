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
from . import partitioned
from .collection_state import CollectionState
from .partition_cache import NoPartitionCache, PartitionCache
from .partitioned import Load, Partition, PartitionedSegment
from .partitioned_source import PartitionedSource
from .rows import RowSource

T = TypeVar("T")


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
        return PartitionedSource(segment, self._partition_load(segment, cached=True),
                                 self._partition_load(segment, cached=False), size)

    # -- reading partitions ----------------------------------------------------------------------
    def _partition_load(self, segment: PartitionedSegment, cached: bool) -> Load:
        def load(numbers: Sequence[int]) -> list[Partition]:
            return self._load_partitions([(segment, numbers)], cached)[0]

        return load

    def _load_partitions(self, wanted: list[tuple[PartitionedSegment, Sequence[int]]],
                         cached: bool = True) -> list[list[Partition]]:
        """The partitions each segment needs, the missing ones of every segment fetched in one
        round of concurrent range GETs (a cold query waits for one round, not one per segment)."""
        found: list[list[Partition | None]] = []
        missing: list[tuple[int, int, PartitionedSegment, int]] = []    # (request, position, segment, partition)
        for n, (segment, numbers) in enumerate(wanted):
            row: list[Partition | None] = []
            for i, p in enumerate(numbers):
                part = self._partition_cache.get((self.name, segment.id, int(p))) if cached else None
                if part is None:
                    missing.append((n, i, segment, int(p)))
                row.append(part)
            found.append(row)
        if missing:
            decoded = self._fetch_partitions([(segment, p) for _, _, segment, p in missing])
            for (n, i, segment, p), part in zip(missing, decoded):
                if cached:
                    self._partition_cache.put((self.name, segment.id, p), part)
                found[n][i] = part
        return found  # type: ignore[return-value]

    def _fetch_partitions(self, wanted: list[tuple[PartitionedSegment, int]]) -> list[Partition]:
        """Partitions read and decoded concurrently: one range GET each, and each checksum and
        decode in the loop's thread pool as its bytes arrive (zlib releases the GIL, so the
        cores share the checksums).  From a worker thread only."""

        async def one(segment: PartitionedSegment, p: int, data: bytes | None) -> Partition:
            ((offset, length),) = segment.partition_ranges([p])
            if data is None:
                data = await self.store.get_range(keys.segment_key(self.name, segment.id), offset, offset + length)
            if segment.verified(p):
                return segment.decode_partition(p, data)   # views over the bytes: no checksum to compute
            return await asyncio.to_thread(segment.decode_partition, p, data)

        async def fetch() -> list[Partition]:
            cached = await asyncio.gather(*(self._disk_cached(segment, [p for s, p in wanted if s is segment])
                                            for segment in {id(s): s for s, _ in wanted}.values()))
            held = {(segment.id, p): data for by_segment in cached for (segment, p), data in by_segment}
            return list(await asyncio.gather(*(one(segment, p, held.get((segment.id, p))) for segment, p in wanted)))

        return self._on_loop(fetch)

    async def _disk_cached(self, segment: PartitionedSegment, numbers: list[int]
                           ) -> list[tuple[tuple[PartitionedSegment, int], bytes | None]]:
        """The partitions the node's disk cache holds, in one lookup (None: not cached)."""
        cached_ranges = getattr(self.store, "cached_ranges", None)   # the s3_only disk cache
        if cached_ranges is None:
            return [((segment, p), None) for p in numbers]
        ranges = [(offset, offset + length) for offset, length in segment.partition_ranges(numbers)]
        found = await cached_ranges(keys.segment_key(self.name, segment.id), ranges)
        return [((segment, p), data) for p, data in zip(numbers, found)]

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
