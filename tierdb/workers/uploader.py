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
An idle collection costs no request.  Failures: permanent errors and exhausted retries go to the
collection's dead-letter queue, which pauses its uploads until an operator retries or clears it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import msgspec

from .. import keys, metrics
from ..engine import manifest as manifests
from ..errors import ErrorKind, TierDBError
from ..models import CollectionStats
from ..storage.base import BlobStore
from .dlq import DeadLetterQueue

if TYPE_CHECKING:
    from ..engine.collection import Collection

log = logging.getLogger(__name__)

STATE_FILE = "upload_state.json"


class UploadState(msgspec.Struct):
    s3_version: int = 0            # the newest manifest version this node wrote to S3
    local_version: int = 0         # the local manifest version it was made from
    shipped_seq: int = 0           # every WAL record up to here is in S3 (as WAL or in a manifest)
    segments: list[str] = []       # segment ids in S3
    caught_up_at: float = 0.0      # when S3 last held everything acknowledged


class Uploader:
    def __init__(self, coll: "Collection", local: BlobStore, remote: BlobStore, dlq: DeadLetterQueue, state_path: str) -> None:
        self.coll = coll
        self.local = local
        self.remote = remote
        self.dlq = dlq
        self.state_path = state_path
        self.state = self._load()
        self._lock = asyncio.Lock()

    # -- durable state ----------------------------------------------------------------------------
    def _load(self) -> UploadState:
        try:
            with open(self.state_path, "rb") as f:
                return msgspec.json.decode(f.read(), type=UploadState)
        except FileNotFoundError:
            return UploadState(caught_up_at=time.time())

    def _save(self) -> None:
        save_state(self.state_path, self.state)

    def shipped_seq(self) -> int:
        return self.state.shipped_seq

    # -- the job ----------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Upload what S3 lacks; returns the number of objects uploaded."""
        async with self._lock:
            if self.coll.state != "ready" or len(self.dlq):
                return 0
            if self.dlq.needs_snapshot:
                await self.coll.flush(force=True)
            uploaded = 0
            try:
                uploaded += await self._ship_manifest()
                uploaded += await self._ship_wal()
            except TierDBError as exc:
                self._failed(exc)
                return uploaded
            if self.dlq.needs_snapshot and self.state.local_version == self.coll.manifest.version:
                await asyncio.to_thread(self.dlq.snapshot_done)
            self._forget_shipped_acks()
            if self.state.shipped_seq >= self.coll.last_seq:
                self.state.caught_up_at = time.time()
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
                    raise TierDBError(
                        ErrorKind.FENCED,
                        f"collection {self.coll.name!r}: S3 manifest version {remote.version} was written by "
                        "another writer; this node stops writing the collection",
                        collection=self.coll.name,
                    ) from exc
                # Our own earlier upload whose state save was lost (crash, lost response): adopt it.
                self.state.s3_version = remote.version
        self.state.s3_version = remote.version
        self.state.local_version = current.version
        self.state.shipped_seq = max(self.state.shipped_seq, current.wal_seq)
        self.state.segments = [ref.id for ref in current.segments]
        await asyncio.to_thread(self._save)
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
            await self._put(keys.wal_key(self.coll.name, wal_file.first_seq), data, if_absent=True)
            self.state.shipped_seq = last_seq
            await asyncio.to_thread(self._save)
            uploaded += 1
        return uploaded

    async def _check_not_superseded(self) -> None:
        """A manifest after ours from another writer or incarnation (e.g. a create with
        replace=true elsewhere) fences this node before it ships WAL objects the new owner's
        restores would replay.  One HEAD, only when there is WAL to ship."""
        key = keys.manifest_key(self.coll.name, self.state.s3_version + 1)
        if await self.remote.head(key) is not None and not await self._written_by_this_node(key):
            raise TierDBError(
                ErrorKind.FENCED,
                f"collection {self.coll.name!r}: S3 manifest version {self.state.s3_version + 1} was written by "
                "another writer; this node stops writing the collection",
                collection=self.coll.name,
            )

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

    def _failed(self, exc: TierDBError) -> None:
        if exc.kind is ErrorKind.FENCED:
            self.coll._note_failure(exc, "upload")
            return
        key = str(exc.context.get("key", ""))
        permanent = exc.context.get("retryable") is not True
        self.dlq.add(
            key or "(unknown)",
            exc.message,
            code=str(exc.context.get("code") or exc.context.get("status") or exc.kind.value),
            attempts=int(exc.context.get("attempts", 1)),
            permanent=permanent,
        )
        metrics.S3_PERMANENT_FAILURES.labels(collection=self.coll.name).inc()
        log.error(
            "upload failed; sent to the dead-letter queue",
            extra={"collection": self.coll.name, "key": key, "error": exc.message, "permanent": permanent},
        )

    # -- status -----------------------------------------------------------------------------------
    def fill_stats(self, stats: CollectionStats) -> None:
        pending_wal = [
            (f, last) for f, last in self.coll.wal.sealed_files() if last > self.state.shipped_seq
        ] if isinstance(getattr(self.coll.wal, "directory", None), str) else []
        behind = self.coll.last_seq > self.state.shipped_seq
        manifest_pending = self.coll.manifest is not None and self.coll.manifest.version != self.state.local_version
        stats.upload_queue_size = len(pending_wal) + (1 if behind and not pending_wal else 0) + int(manifest_pending)
        stats.upload_lag_bytes = sum(_size(f.path) for f, _ in pending_wal) + (
            self.coll.wal.active_size() if behind else 0
        )
        stats.upload_lag_secs = round(self.oldest_unshipped_age(), 3) if (behind or manifest_pending) else 0.0

    def _forget_shipped_acks(self) -> None:
        acks = self.coll.ack_times
        while acks and acks[0][0] <= self.state.shipped_seq:
            acks.popleft()

    def oldest_unshipped_age(self) -> float:
        """Seconds since the oldest acknowledged write that S3 does not hold yet was acknowledged."""
        self._forget_shipped_acks()
        acks = self.coll.ack_times
        if acks:
            return max(0.0, time.time() - acks[0][1])
        # Writes replayed at start-up have no ack time: count from the last time S3 was whole.
        return max(0.0, time.time() - self.state.caught_up_at)


def save_state(path: str, state: UploadState) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
