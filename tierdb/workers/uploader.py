"""memory_s3: ship a collection's local state to S3 so that S3 always holds a consistent,
restorable state.

Each run, for one collection:
1. If the local manifest changed since the last upload: upload the segments it references that
   S3 lacks, then the manifest as the next S3 version (put-if-absent: a 412 from another
   writer fences this node).
2. Seal the active WAL file if it holds records S3 lacks, and upload every sealed WAL file with
   such records, oldest first.
S3 after any prefix of these steps: a manifest whose objects all exist + WAL objects that
continue it.  What to upload is derived from durable local state (WAL files, segment files,
manifest, and ``upload_state.json`` written after each success), so a restart resumes the queue.
An idle collection costs no request.

Failures never stop the uploader for good:
- transient ones (connection refused, timeouts, 5xx, throttling; what RetryingStore gave up on)
  keep the work queued; the next run waits a capped exponential backoff with full jitter
  (``uploader.backoff_base_secs`` .. ``backoff_max_secs``) and tries again, for as long as it
  takes, while the upload lag grows (and ``S3UploadLagHigh`` fires);
- permanent ones (access denied, no such bucket, checksum mismatch, ...) also go to the
  collection's dead-letter queue for a human to see; runs continue on the same backoff as
  re-probes, and the first run that succeeds empties the DLQ by itself.  ``dlq retry`` skips
  the wait;
- FENCED (another writer owns the collection) stops the collection for good.

The upload lag survives restarts: ``oldest_unshipped_at`` in the state file is the ack time
of the oldest write S3 lacks, which records replayed at start-up (no ack time in memory) use.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from .. import keys, metrics
from ..config import RetrySettings, UploaderSettings
from ..engine import manifest as manifests
from ..engine.upload_state import UploadState, load_state, save_state
from ..engine.wal import LocalWal
from ..errors import ErrorKind, TierDBError, fenced
from ..models import CollectionSpec, CollectionStats, Manifest
from ..storage.base import BlobStore
from ..storage.retry import backoff_delay, is_retryable
from .dlq import DeadLetterQueue

log = logging.getLogger(__name__)


class UploadSource(Protocol):
    """What the uploader needs of a collection (``engine.collection.Collection`` is one)."""

    name: str
    spec: CollectionSpec
    writer_id: str
    state: str
    manifest: Manifest | None
    wal: LocalWal

    @property
    def last_seq(self) -> int: ...

    async def flush(self, force: bool = False) -> int: ...

    def seal_wal(self) -> None: ...

    def wal_floor(self) -> int: ...

    def note_failure(self, exc: TierDBError, during: str) -> None: ...


class Uploader:
    def __init__(
        self,
        coll: UploadSource,
        local: BlobStore,
        remote: BlobStore,
        dlq: DeadLetterQueue,
        state_path: str,
        *,
        settings: UploaderSettings | None = None,
        fsync: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.coll = coll
        self.local = local
        self.remote = remote
        self.dlq = dlq
        self.state_path = state_path
        self.fsync = fsync
        settings = settings or UploaderSettings()
        self._backoff = RetrySettings(
            max_retries=0, base_backoff_secs=settings.backoff_base_secs, max_backoff_secs=settings.backoff_max_secs
        )
        self._clock = clock
        self._rng = rng
        self.state = self._load()
        # (last seq of a commit, wall time) of the writes S3 may lack: the age of the oldest
        # unshipped write.  Appended by the collection's commit thread (note_commit).
        self._acks: collections.deque[tuple[int, float]] = collections.deque()
        # Records recovered at start-up have no ack time in memory; up to here the lag comes
        # from the persisted ``oldest_unshipped_at``.
        self._replayed_through = coll.last_seq
        self.failures = 0                     # consecutive failed runs
        self.last_error = ""
        self._next_attempt_at = 0.0           # clock() time before which runs wait (backoff)
        self._operator_requests = dlq.operator_requests
        self._lock = asyncio.Lock()

    # -- durable state ----------------------------------------------------------------------------
    def _load(self) -> UploadState:
        state = load_state(self.state_path)
        # Never uploaded: S3 has lacked this collection since it was created.
        return state if state is not None else UploadState(caught_up_at=self.coll.spec.created_at or time.time())

    def _save(self) -> None:
        save_state(self.state_path, self.state, fsync=self.fsync)

    async def _persist(self) -> None:
        self._refresh_oldest_unshipped()
        await asyncio.to_thread(self._save)

    def shipped_seq(self) -> int:
        return self.state.shipped_seq

    def note_commit(self, last_seq: int, acked_at: float) -> None:
        self._acks.append((last_seq, acked_at))

    def newest_s3_version(self, published: int) -> int:
        return self.state.s3_version

    # -- the job ----------------------------------------------------------------------------------
    async def run_once(self, *, force: bool = False) -> int:
        """Upload what S3 lacks; returns the number of objects uploaded.  After a failure, runs
        within the backoff return 0 at once unless ``force`` (or an operator's DLQ retry)."""
        async with self._lock:
            if self.coll.state != "ready":
                return 0
            if self._refresh_oldest_unshipped():
                await asyncio.to_thread(self._save)   # the lag must survive a restart
            if self.dlq.operator_requests != self._operator_requests:
                self._operator_requests = self.dlq.operator_requests
                force = True
            if not force and self._clock() < self._next_attempt_at:
                return 0
            if self.dlq.needs_snapshot:
                await self.coll.flush(force=True)
            uploaded = 0
            try:
                uploaded += await self._ship_manifest()
                uploaded += await self._ship_wal()
            except TierDBError as exc:
                await self._failed(exc)
                return uploaded
            await self._succeeded()
            if self.dlq.needs_snapshot and self.state.local_version == self.coll.manifest.version:
                await asyncio.to_thread(self.dlq.snapshot_done)
            self._forget_shipped_acks()
            if self.state.shipped_seq >= self.coll.last_seq:
                self.state.caught_up_at = time.time()
            if self._refresh_oldest_unshipped():
                await asyncio.to_thread(self._save)
            if uploaded:
                await asyncio.to_thread(self.coll.wal.remove_covered, self.coll.wal_floor())
            return uploaded

    async def _ship_manifest(self) -> int:
        current = self.coll.manifest
        assert current is not None
        if current.version == self.state.local_version:
            return 0
        uploaded = 0
        in_s3 = set(self.state.segments)
        for ref in current.segments:
            if ref.id in in_s3:
                continue
            key = keys.segment_key(self.coll.name, ref.id)
            try:
                data = await self.local.get(key)
            except TierDBError as exc:
                if exc.kind is ErrorKind.NOT_FOUND:
                    return uploaded  # a merge replaced it meanwhile; the next run ships the new manifest
                raise
            await self._put(key, data)
            self.state.segments.append(ref.id)
            uploaded += 1
        while True:
            remote = msgspec.structs.replace(current, version=self.state.s3_version + 1)
            key = keys.manifest_key(self.coll.name, remote.version)
            try:
                await self._put(key, manifests.encode(remote), if_absent=True)
                break
            except TierDBError as exc:
                if exc.kind is not ErrorKind.PRECONDITION:
                    raise
                if not await self._written_by_this_node(key):
                    raise fenced(self.coll.name, f"S3 manifest version {remote.version}") from exc
                # Our own earlier upload whose state save was lost (crash, lost response): adopt it.
                self.state.s3_version = remote.version
        self.state.s3_version = remote.version
        self.state.local_version = current.version
        self.state.shipped_seq = max(self.state.shipped_seq, current.wal_seq)
        self.state.segments = [ref.id for ref in current.segments]
        await self._persist()
        return uploaded + 1

    async def _ship_wal(self) -> int:
        if self.coll.last_seq <= self.state.shipped_seq:
            return 0
        await self._check_not_superseded()
        await asyncio.to_thread(self.coll.seal_wal)
        uploaded = 0
        for wal_file, last_seq in await asyncio.to_thread(self.coll.wal.sealed_files):
            if last_seq <= self.state.shipped_seq:
                continue
            data = await asyncio.to_thread(_read, wal_file.path)
            key = keys.wal_key(self.coll.name, wal_file.first_seq)
            try:
                await self._put(key, data, if_absent=True)
            except TierDBError as exc:
                if exc.kind is ErrorKind.PRECONDITION:  # other bytes at our next WAL position: another writer's
                    raise fenced(self.coll.name, f"S3 WAL object {key}", key=key) from exc
                raise
            self.state.shipped_seq = last_seq
            await self._persist()
            uploaded += 1
        return uploaded

    async def _check_not_superseded(self) -> None:
        """A manifest after ours from another writer or incarnation (e.g. a create with
        replace=true elsewhere) fences this node before it ships WAL objects the new owner's
        restores would replay.  One HEAD, only when there is WAL to ship."""
        key = keys.manifest_key(self.coll.name, self.state.s3_version + 1)
        if await self.remote.head(key) is not None and not await self._written_by_this_node(key):
            raise fenced(self.coll.name, f"S3 manifest version {self.state.s3_version + 1}")

    async def _written_by_this_node(self, key: str) -> bool:
        existing = manifests.decode(await self.remote.get(key), source=key)
        return (
            bool(existing.writer_id)
            and existing.writer_id == self.coll.writer_id
            and existing.spec.incarnation == self.coll.spec.incarnation  # not a dropped/replaced predecessor
        )

    async def _put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        try:
            await self.remote.put(key, data, if_absent=if_absent)
        except TierDBError as exc:
            # After a crash between an upload and saving the state, the object is already there
            # with exactly these bytes: that is success, not another writer.
            if exc.kind is not ErrorKind.PRECONDITION or await self.remote.get(key) != data:
                raise
        metrics.S3_UPLOADS.labels(collection=self.coll.name).inc()

    async def _succeeded(self) -> None:
        if self.failures or len(self.dlq):
            resolved = await asyncio.to_thread(self.dlq.resolved)
            log.info(
                "uploads to S3 resumed",
                extra={"collection": self.coll.name, "failed_runs": self.failures, "dlq_resolved": resolved},
            )
        self.failures = 0
        self.last_error = ""
        self._next_attempt_at = 0.0

    async def _failed(self, exc: TierDBError) -> None:
        if exc.kind is ErrorKind.FENCED:
            self.coll.note_failure(exc, "upload")
            return
        self.failures += 1
        self.last_error = exc.message
        delay = backoff_delay(self.failures - 1, self._backoff, self._rng)
        self._next_attempt_at = self._clock() + delay
        key = str(exc.context.get("key", ""))
        code = str(exc.context.get("code") or exc.context.get("status") or exc.kind.value)
        context = {"collection": self.coll.name, "key": key, "code": code, "error": exc.message,
                   "failed_runs": self.failures, "retry_in_secs": round(delay, 3)}
        if is_retryable(exc):
            # S3 is unreachable or overloaded: nothing for a human to do, so no DLQ entry.
            log.warning("upload failed transiently; retrying after a backoff", extra=context)
            return
        await asyncio.to_thread(
            self.dlq.add, key or "(unknown)", exc.message,
            code=code, attempts=int(exc.context.get("attempts", 1)), permanent=True,
        )
        metrics.S3_PERMANENT_FAILURES.labels(collection=self.coll.name).inc()
        log.error("upload failed permanently; in the dead-letter queue, re-probed after a backoff", extra=context)

    # -- status -----------------------------------------------------------------------------------
    def fill_stats(self, stats: CollectionStats) -> None:
        pending_wal = [(f, last) for f, last in self.coll.wal.sealed_files() if last > self.state.shipped_seq]
        behind = self.coll.last_seq > self.state.shipped_seq
        manifest_pending = self._manifest_pending()
        stats.upload_queue_size = len(pending_wal) + (1 if behind and not pending_wal else 0) + int(manifest_pending)
        stats.upload_lag_bytes = sum(_size(f.path) for f, _ in pending_wal) + (
            self.coll.wal.active_size() if behind else 0
        )
        stats.upload_lag_secs = round(self.oldest_unshipped_age(), 3)
        stats.upload_failures = self.failures
        stats.upload_error = self.last_error
        stats.upload_retry_in_secs = round(max(0.0, self._next_attempt_at - self._clock()), 3) if self.failures else 0.0

    def _manifest_pending(self) -> bool:
        return self.coll.manifest is not None and self.coll.manifest.version != self.state.local_version

    def _forget_shipped_acks(self) -> None:
        acks = self._acks
        while acks and acks[0][0] <= self.state.shipped_seq:
            acks.popleft()

    def _oldest_unshipped_write(self) -> float:
        """Ack time of the oldest acknowledged write S3 lacks; 0.0 when S3 holds every write."""
        if self.coll.last_seq <= self.state.shipped_seq:
            return 0.0
        self._forget_shipped_acks()
        acks = self._acks
        if self.state.shipped_seq >= self._replayed_through and acks:
            return acks[0][1]
        # Replayed at start-up (no ack time in memory): the persisted time, else the last time
        # S3 was whole (an upper bound of the age).
        return self.state.oldest_unshipped_at or self.state.caught_up_at

    def _refresh_oldest_unshipped(self) -> bool:
        """Update ``state.oldest_unshipped_at``; True when it became non-zero or zero, i.e. when
        the file must be written now (a move between two non-zero times waits for the next save:
        the older time on disk only overstates the lag)."""
        oldest = self._oldest_unshipped_write()
        changed = bool(oldest) != bool(self.state.oldest_unshipped_at)
        self.state.oldest_unshipped_at = oldest
        return changed

    def oldest_unshipped_age(self) -> float:
        """Seconds since the oldest acknowledged write that S3 does not hold yet was acknowledged
        (or, with only a newer local manifest pending, since S3 was last whole); 0 when none."""
        oldest = self._oldest_unshipped_write()
        if not oldest and self._manifest_pending():
            oldest = self.state.caught_up_at
        return max(0.0, time.time() - oldest) if oldest else 0.0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
