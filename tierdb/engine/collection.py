"""A collection: WAL + memtable + immutable segments + versioned manifest.

``Collection`` is a facade: each concern lives in its own module, as a mixin over the shared
state declared in ``collection_state`` (which also states the locking rules):
- ``writes``: validate, commit batches to the WAL (group commit), apply them;
- ``reads``: get by id, query and merge hits;
- ``recovery``: create, open, load segments, replay the WAL;
- ``maintenance``: flush, merge, publish, install, local cleanup.
Mixins rather than separate objects because all four read and write the same few structures
under the same locks (``_where``, memtable, segments, ``_rw``): splitting that state across
objects would add indirection on the hot path without isolating anything.  What stays here is the
wiring to the tier and the workers (policy, DLQ, uploader, RAM cache), status and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from .. import keys
from ..config import Settings
from ..errors import ErrorKind, TierDBError
from ..models import (
    CollectionInfo,
    CollectionSpec,
    CollectionStats,
    DlqEntry,
    Manifest,
    WarmStatus,
)
from ..storage.base import BlobStore
from ..tiering import policy_of
from . import segment as segments
from .attachments import (
    NO_DEAD_LETTERS,
    NO_UPLOADS,
    DeadLetters,
    UploadWorker,
    no_cache_stats,
)
from .group_commit import GroupCommitter
from .maintenance import MaintenanceMixin
from .memtable import Memtable
from .ramcache import ResidentSegments, SegmentCache
from .reads import ReadsMixin
from .recovery import RecoveryMixin
from .rows import RowSource
from .rwlock import RWLock
from .wal import Wal
from .warming import WarmingMixin
from .writes import WriteOp, WritesMixin

__all__ = ["Collection", "WriteOp"]

log = logging.getLogger(__name__)


class Collection(WritesMixin, ReadsMixin, RecoveryMixin, MaintenanceMixin, WarmingMixin):
    def __init__(self, spec: CollectionSpec, store: BlobStore, wal: Wal, settings: Settings, writer_id: str) -> None:
        self.spec = spec
        self.policy = policy_of(spec.tiering_policy)
        self.name = spec.name
        self.store = store
        self.wal = wal
        self.settings = settings
        self.writer_id = writer_id
        self.manifest: Manifest | None = None
        self.memtable = Memtable(spec.metric, spec.dimension)
        self.frozen: list[Memtable] = []
        self.segments: list[segments.Segment] = []
        self._where: dict[str, tuple[RowSource, int]] = {}
        self._rw = RWLock()
        self._commit_lock = threading.Lock()       # WAL append + apply vs. WAL rotation
        self._next_seq = 1
        window = settings.uploader.group_commit_ms / 1000 if self.policy.wal_in_s3 else 0.0
        self._committer: GroupCommitter[WriteOp] = GroupCommitter(self._commit, window_secs=window)
        self._wal_uncertain = False                 # a failed remote WAL write may have landed
        self._maintenance = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # Set at shutdown (also from a signal handler, hence a plain bool, not a lock-based
        # Event): index builds stop between slices; their rows stay in the WAL.
        self._stopping = False
        self.state = "recovering"
        self.error = ""
        self.last_compaction_ts = 0.0
        # Attached by the node per the collection's placement (see attachments.py).
        self.dlq: DeadLetters = NO_DEAD_LETTERS
        self.uploader: UploadWorker = NO_UPLOADS
        self.cache_stats: Callable[[], dict[str, int]] = no_cache_stats   # the disk cache's
        self._ram_cache: SegmentCache = ResidentSegments()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.warm_status = WarmStatus()
        self._warm_task: asyncio.Task[None] | None = None

    # == placement and workers ====================================================================
    def wal_floor(self) -> int:
        """WAL records up to here may be deleted locally: covered by the local manifest and,
        for memory_s3, already in S3."""
        assert self.manifest is not None
        return min(self.manifest.wal_seq, self.uploader.shipped_seq())

    def note_failure(self, exc: TierDBError, during: str) -> None:
        if exc.kind is ErrorKind.FENCED:
            self.state = "fenced"
            self.error = exc.message
        if self.stopping and exc.kind is ErrorKind.UNAVAILABLE:
            log.info(f"{during} abandoned for shutdown", extra={"collection": self.name, "reason": exc.message})
            return
        log.error(f"{during} failed", extra={"collection": self.name, "error": exc.message, "kind": exc.kind.value})

    # == RAM tier ===================================================================================
    def attach_ram_cache(self, cache: SegmentCache, loop: asyncio.AbstractEventLoop) -> None:
        """Bound the RAM of this collection's segments: evicted ones reload from the store."""
        self._ram_cache = cache
        self._loop = loop
        for seg in self.segments:
            self._make_evictable(seg)

    def _make_evictable(self, seg: RowSource) -> None:
        if not isinstance(seg, segments.Segment):
            return  # partitioned: its partitions live in the node's partition cache
        key = keys.segment_key(self.name, seg.id)

        def load() -> segments.Segment:
            assert self._loop is not None  # set with the bounded cache, the only one that evicts
            data = asyncio.run_coroutine_threadsafe(self.store.get(key), self._loop).result()
            return segments.decode(seg.id, data)

        self._ram_cache.adopt(seg, load)

    # == dead-letter queue (empty unless the node attached one) ======================================
    def dlq_entries(self) -> list[DlqEntry]:
        return self.dlq.entries()

    async def dlq_retry(self) -> int:
        """Re-enqueue every failed upload; the uploader tries again on its next run."""
        return await asyncio.to_thread(self.dlq.retry)

    async def dlq_clear(self) -> int:
        """Drop the failed uploads; the next upload is a complete snapshot (flush + manifest)."""
        return await asyncio.to_thread(self.dlq.clear)

    # == status ===================================================================================
    def count(self) -> int:
        return len(self._where) + self._live_partitioned_count()

    async def live_ids(self) -> list[str]:
        """``ids()`` from the event loop (partitions are read in a worker thread)."""
        return await asyncio.to_thread(self.ids)

    def ids(self) -> list[str]:
        """Every live id (a snapshot; reads every partition of a partitioned segment, so from
        a worker thread when there are any: see ``live_ids``)."""
        with self._rw.read():
            found = list(self._where)
            for _, part, live in self._live_partitioned():
                ids = part.ids
                found.extend(ids[i] for i in live.tolist())
            return found

    def info(self) -> CollectionInfo:
        return CollectionInfo(
            name=self.name,
            dimension=self.spec.dimension,
            metric=self.spec.metric,
            tiering_policy=self.spec.tiering_policy,
            hnsw=self.hnsw,
            count=self.count(),
            segments=len(self.segments),
            manifest_version=self.manifest.version if self.manifest else 0,
            created_at=self.spec.created_at,
        )

    def stats(self) -> CollectionStats:
        stats = self._base_stats()
        self.uploader.fill_stats(stats)
        stats.dlq_size = len(self.dlq)
        stats.cache_bytes_disk = int(self.cache_stats().get("bytes", 0))
        return stats

    def _base_stats(self) -> CollectionStats:
        return CollectionStats(
            name=self.name,
            policy=self.spec.tiering_policy,
            count=self.count(),
            segments=len(self.segments),
            manifest_version=self.manifest.version if self.manifest else 0,
            wal_seq=self._next_seq - 1,
            wal_bytes=self.wal.bytes_total,
            memtable_rows=self.memtable.live_count(),
            state=self.state,
            last_snapshot_ts=self.manifest.created_at if self.manifest else 0.0,
            last_compaction_ts=self.last_compaction_ts,
            fenced=self.state == "fenced",
            cache_bytes_ram=sum(s.nbytes() for s in self.segments) + self._partition_cache.resident_bytes_of(self.name),
            error=self.error,
            warm=msgspec.structs.replace(self.warm_status),
        )

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop_maintenance(self) -> None:
        """Shutdown begins: running index builds stop at their next slice, no new flush starts.
        Only sets a flag: safe to call from a signal handler."""
        self._stopping = True

    async def close(self) -> None:
        """Commit queued writes, wait for maintenance (builds abandoned), close the WAL and drop
        every reference to vectors, indexes and caches so their memory can be freed."""
        self.stop_maintenance()
        self.state = "closing" if self.state == "ready" else self.state
        await self._committer.drain()
        async with self._maintenance:
            pass
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self.wal.close)
        self._release_memory()

    def _release_memory(self) -> None:
        with self._rw.write():
            for seg in self.segments:
                self._ram_cache.forget(seg)
                self._partition_cache.forget_segment(self.name, seg.id)
            self.segments = []
            self.frozen = []
            self._where = {}
            self.memtable = Memtable(self.spec.metric, self.spec.dimension)
            self.state = "closed"

