"""A read replica of one collection: opened from S3, following the writer, refusing writes.

``Replica`` is a ``Collection`` (same open, same WAL replay, same reads) that never writes:
- every write path (upsert, delete, flush, merge, compaction, DLQ) raises ``read_only`` — the
  one place a reader refuses mutations (the node's S3 store is also read-only underneath);
- ``follow_wal`` applies the next WAL object of the writer, named by the seq it starts with
  (``keys.wal_key(name, last_applied + 1)``): the writer's objects are contiguous (s3_only: one
  per commit batch; memory_s3: one per shipped WAL file), so the next key is known and one GET
  answers "anything new?" without a LIST.  A missing object means "wait": never skip;
- ``newer_manifest`` asks by HEAD whether the writer published the next manifest version.  A
  newer manifest is taken by opening a fresh ``Replica`` from it (the node swaps them), which
  loads its segments through the disk cache and replays the WAL after its position: the same
  recovery rules as the writer's start.

Applying an object is atomic for queries: its records are checked first (a damaged object or
one that does not continue the applied position applies nothing and is retried), then applied
together under the write side of ``_rw``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import keys
from ..errors import ErrorKind, TierDBError, corrupt, read_only
from ..models import CollectionStats, CompactResult
from .collection import Collection
from .wal import decode_records

log = logging.getLogger(__name__)


class Replica(Collection):
    # == writes: refused, here and nowhere else ====================================================
    def _refuse(self, what: str) -> TierDBError:
        return read_only(f"{what} on collection {self.name!r}", self.settings.node.writer_url, collection=self.name)

    def _check_writable(self) -> None:          # upsert and delete call this before anything else
        raise self._refuse("write")

    async def compact(self, full: bool = False) -> CompactResult:
        raise self._refuse("compact")

    async def flush(self, force: bool = False) -> int:
        raise self._refuse("flush")

    async def merge(self, full: bool = False) -> int:
        raise self._refuse("merge")

    async def maybe_compact(self) -> None:
        return None                              # the writer compacts; readers take its manifests

    async def dlq_retry(self) -> int:
        raise self._refuse("dead-letter queue retry")

    async def dlq_clear(self) -> int:
        raise self._refuse("dead-letter queue clear")

    # == status =====================================================================================
    def stats(self) -> CollectionStats:
        stats = super().stats()
        stats.role = "reader"
        self.describe_following(stats)
        return stats

    @staticmethod
    def describe_following(stats: CollectionStats) -> None:
        """Replaced by the node's follower: adds the lag and poll interval it knows."""

    # == following =================================================================================
    @property
    def applied_seq(self) -> int:
        return self._next_seq - 1

    async def follow_wal(self) -> int:
        """Apply the next WAL object if the writer wrote it; the number of records applied
        (0: not there yet).  A damaged object raises CORRUPT and applies nothing."""
        key = keys.wal_key(self.name, self._next_seq)
        try:
            data = await self.wal_store.get(key)
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return 0
            raise
        return await asyncio.to_thread(self._apply_object, key, data)

    def _apply_object(self, key: str, data: bytes) -> int:
        records, valid_end = decode_records(data, source=key)
        if valid_end != len(data) or not records:
            raise corrupt(f"WAL object {key} is damaged (objects are written whole); waiting for it", key=key)
        for offset, record in enumerate(records):
            if record.seq != self._next_seq + offset:
                raise corrupt(f"WAL object {key}: expected seq {self._next_seq + offset}, found {record.seq}", key=key)
        matrices = [self._record_matrix(record) for record in records]
        with self._rw.write():
            for record, matrix in zip(records, matrices):
                self._apply(record, matrix)
            self._next_seq = records[-1].seq + 1
        return len(records)

    async def newer_manifest(self, known_newest: int = 0) -> int | None:
        """The newest manifest version after ours, or None.  One HEAD of the next version; when it
        exists, HEADs step on to the newest.  ``known_newest`` (from a listing) covers a reader
        so far behind that the writer's GC already deleted the next version."""
        assert self.manifest is not None
        current = self.manifest.version
        newest = None
        probe = current + 1
        while await self.store_for_manifests.head(keys.manifest_key(self.name, probe)) is not None:
            newest = probe
            probe += 1
        if newest is None and known_newest > current:
            newest = known_newest
        return newest

    # The stores a replica reads with (set by ``open_replica``): WAL objects are read uncached
    # (each is read once; a damaged one must be read again, not served from the cache), segments
    # through the disk cache, manifests uncached (they are not immutable).
    wal_store: Any
    store_for_manifests: Any


async def open_replica(segment_store: Any, remote: Any, wal: Any, settings: Any, name: str) -> Replica:
    """Open the collection's newest manifest from S3 and replay the WAL objects after it."""
    replica = await Replica.open(segment_store, wal, settings, name, writer_id="")
    replica.wal_store = remote
    replica.store_for_manifests = remote
    return replica
