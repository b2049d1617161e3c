"""Warming: pre-fetch every segment of a collection through its store (the disk cache in front
of S3), so the first queries after a node starts are served from local disk.

One warm at a time per collection; a second request while one runs returns its progress.  The
progress lives in ``warm_status`` (shown in the status endpoint).  Warming reads each segment
in ranges of ``WARM_RANGE_BYTES`` so a large segment never sits whole in RAM.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from .. import keys
from ..errors import TierDBError, unavailable
from ..models import SegmentRef, WarmStatus
from . import partitioned
from .collection_state import CollectionState
from .partitioned_source import PartitionedSource

log = logging.getLogger(__name__)

WARM_CONCURRENCY = 16


class WarmingMixin(CollectionState):
    warm_status: WarmStatus
    _warm_task: asyncio.Task[None] | None

    def start_warm(self) -> WarmStatus:
        """Begin warming in the background (unless it is running); the progress so far."""
        if self.state == "closed":
            raise unavailable(f"collection {self.name!r} is closed", collection=self.name)
        if self._warm_task is None or self._warm_task.done():
            assert self.manifest is not None
            refs = list(self.manifest.segments)
            self.warm_status = WarmStatus(
                state="running", segments_total=len(refs), bytes_total=sum(r.size for r in refs), started_at=time.time()
            )
            self._warm_task = asyncio.get_running_loop().create_task(self._warm(refs))
            self._background.add(self._warm_task)
            self._warm_task.add_done_callback(self._background.discard)
        return msgspec.structs.replace(self.warm_status)

    def _warm_ranges(self, ref: SegmentRef) -> list[tuple[int, int]]:
        """The byte ranges queries read, so the disk cache answers them: a partitioned segment's
        header prefix and each partition; an hnswlib segment whole."""
        source = next((s for s in self.segments if s.id == ref.id), None)
        if ref.layout != "partitioned" or not isinstance(source, PartitionedSource):
            return [(0, ref.size)]
        ranges = [(0, min(ref.size, partitioned.HEADER_PREFIX_BYTES))]
        ranges += [(off, off + length) for off, length in source.segment.partition_ranges(range(source.nlist))]
        return ranges

    async def _warm_range(self, key: str, ref: SegmentRef, start: int, end: int) -> None:
        if (start, end) == (0, ref.size) and ref.layout != "partitioned":
            await self.store.get(key)   # whole: how an hnswlib segment is read
        else:
            await self.store.get_range(key, start, end)

    async def warm(self) -> WarmStatus:
        """Warm and wait until done (the embedded API and tests)."""
        self.start_warm()
        assert self._warm_task is not None
        await asyncio.shield(self._warm_task)
        return msgspec.structs.replace(self.warm_status)

    async def _warm(self, refs: list) -> None:
        status = self.warm_status
        try:
            plans = [(ref, self._warm_ranges(ref)) for ref in refs]
            status.bytes_total = sum(end - start for _, ranges in plans for start, end in ranges)
            for ref, ranges in plans:
                key = keys.segment_key(self.name, ref.id)
                for first in range(0, len(ranges), WARM_CONCURRENCY):
                    if self.stopping:
                        raise asyncio.CancelledError
                    group = ranges[first : first + WARM_CONCURRENCY]
                    await asyncio.gather(*(self._warm_range(key, ref, start, end) for start, end in group))
                    status.bytes_fetched += sum(end - start for start, end in group)
                status.segments_done += 1
            status.state = "done"
            log.info("collection warmed", extra={"collection": self.name, "segments": status.segments_done,
                                                  "bytes": status.bytes_fetched,
                                                  "secs": round(time.time() - status.started_at, 3)})
        except asyncio.CancelledError:
            status.state, status.error = "failed", "abandoned: the collection is closing"
        except TierDBError as exc:
            status.state, status.error = "failed", exc.message
            log.warning("warming failed", extra={"collection": self.name, "error": exc.message})
        finally:
            status.finished_at = time.time()
