"""The reader role (``node.role = "reader"``): a read replica of every collection under the prefix.

A second composition root beside ``Engine``, with the same surface for the API.  It builds
collections from S3 only: no local WAL, no uploader, no GC, no compaction, and its S3 store is
wrapped in ``ReadOnlyStore`` so a write can never reach S3.  Local disk is only the segment
cache.  For each collection a ``Follower`` polls the writer's next WAL object and next manifest
(see ``engine/follow.py``), fast while objects arrive and backing off while idle; a LIST of the
prefix every ``node.discover_interval_secs`` opens new collections and closes dropped ones.

Freshness: ``replica_lag_seconds`` of a collection is the time since the start of the last poll
that found nothing new (everything acknowledged before that instant is applied), so it is ~0
while caught up and polled often, grows while behind or while S3 does not answer, and is at most
one poll interval while idle.  ``catch_up`` (a strong read) polls until nothing is new.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from .. import keys, metrics
from ..config import Settings
from ..engine.follow import Replica, open_replica
from ..engine.ramcache import SegmentRamCache
from ..engine.wal import S3Wal
from ..errors import ErrorKind, TierDBError, not_found, read_only, unavailable
from ..models import COLLECTION_NAME, CollectionInfo, CollectionSpec, CollectionStats
from ..storage.base import BlobStore
from ..storage.cache import DiskCachedStore
from ..storage.factory import open_s3_store, with_disk_cache
from ..storage.readonly import ReadOnlyStore
from ..storage.wrapper import BorrowedStore
from ..tiering import policy_of
from ..process_memory import return_large_buffers_to_the_os
from .engine import Engine, node_partition_cache, report_cache_residency

log = logging.getLogger(__name__)

STRONG_READ_TIMEOUT_SECS = 10.0
RETIRED_REPLICA_GRACE_SECS = 30.0   # longer than any read takes


class Follower:
    """Keeps one collection's replica up to date; its ``replica`` is swapped on a new manifest."""

    def __init__(self, node: "ReaderEngine", replica: Replica) -> None:
        self.node = node
        self.name = replica.name
        self.replica = replica
        replica.describe_following = self.describe
        self.settings = node.settings.node
        self.lock = asyncio.Lock()            # one poll at a time: background loop vs. strong reads
        self.caught_up_at = time.time()       # open replayed everything there was
        self.last_progress = time.monotonic()
        self.interval = self.settings.poll_min_secs
        self.newest_listed = 0                # newest manifest version seen by discovery
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self._retiring: dict[asyncio.Task[None], Replica] = {}   # replaced replicas, closed after a grace
        # A newer manifest being opened in the background: the current replica keeps serving and
        # applying WAL objects meanwhile (decoding segments must not stall following).
        self._opening: asyncio.Task[Replica] | None = None

    @property
    def lag_secs(self) -> float:
        return max(0.0, time.time() - self.caught_up_at)

    async def poll(self) -> bool:
        """One poll: apply the next WAL object, or take a newer manifest; True if anything new.

        A newer manifest is opened in the background while the current replica keeps applying
        WAL objects (the WAL alone keeps its contents current); once open, the fresh replica
        replays the WAL objects that arrived meanwhile and is swapped in."""
        async with self.lock:
            started = time.time()
            if self._opening is not None and self._opening.done():
                opening, self._opening = self._opening, None
                await self._swap(opening.result())   # an open that failed raises here; retried later
                return True
            applied = await self.replica.follow_wal()
            metrics.REPLICA_POLL_REQUESTS.labels(collection=self.name, kind="wal").inc()
            if applied:
                return True
            if self._opening is None:
                newer = await self.replica.newer_manifest(self.newest_listed)
                metrics.REPLICA_POLL_REQUESTS.labels(collection=self.name, kind="manifest").inc()
                if newer is not None:
                    self._opening = asyncio.create_task(self.node.open_replica(self.name),
                                                        name=f"tierdb-open-{self.name}-{newer}")
            self.caught_up_at = started
            return False

    async def _swap(self, fresh: Replica) -> None:
        """Serve ``fresh`` (opened from a newer manifest) once it has replayed every WAL object
        the writer added while it was opening; the old replica is closed after a grace period."""
        fresh.describe_following = self.describe
        while await fresh.follow_wal():
            pass
        old = self.replica
        self.replica = fresh
        log.info("replica switched to a newer manifest",
                 extra={"collection": self.name, "from_version": old.manifest.version if old.manifest else 0,
                        "to_version": fresh.manifest.version if fresh.manifest else 0,
                        "applied_seq": fresh.applied_seq})
        # Requests that took the old replica just before the swap finish on it (a consistent,
        # slightly older state); it is closed once they are surely done.
        self._retiring[asyncio.create_task(self._close_later(old), name=f"tierdb-retire-{self.name}")] = old

    async def _close_later(self, old: Replica) -> None:
        try:
            await asyncio.sleep(RETIRED_REPLICA_GRACE_SECS)
        finally:
            await old.close()
            self._retiring.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self._opening is not None:
            self._opening.cancel()
            opened = (await asyncio.gather(self._opening, return_exceptions=True))[0]
            if isinstance(opened, Replica):
                await opened.close()
            self._opening = None
        retiring = dict(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        # a retiring task cancelled before it ever ran never reached its close
        for old in retiring.values():
            if old.state != "closed":
                await old.close()
        await self.replica.close()

    async def catch_up(self) -> None:
        """Poll until nothing is new (a strong read): everything acknowledged before the call is
        applied afterwards."""
        # The deadline also bounds a poll stuck in S3 retries (or waiting for the lock behind
        # one): a strong read answers 503 in time instead of hanging while S3 is down.  Cancelling
        # a poll is safe: a WAL object is applied whole in its thread or not at all.
        try:
            async with asyncio.timeout(STRONG_READ_TIMEOUT_SECS):
                while True:
                    while await self.poll():
                        pass
                    if self._opening is None:
                        break
                    # A newer manifest is opening: its WAL may continue where the current
                    # replica cannot (objects the writer's GC removed), so wait and swap it in.
                    await asyncio.wait({self._opening})
        except TimeoutError:
            raise unavailable(f"collection {self.name!r}: could not catch up with the writer within "
                              f"{STRONG_READ_TIMEOUT_SECS:g} s for a strong read", collection=self.name) from None

    async def run(self) -> None:
        while True:
            try:
                progressed = await self.poll()
                self.error = ""
            except asyncio.CancelledError:
                raise
            except TierDBError as exc:
                progressed = False
                if exc.message != self.error:
                    log.warning("replica poll failed; serving the state applied so far",
                                extra={"collection": self.name, "error": exc.message, "kind": exc.kind.value})
                self.error = exc.message
            except Exception:
                progressed = False
                self.error = "replica poll crashed (see the log)"
                log.exception("replica poll crashed", extra={"collection": self.name})
            await asyncio.sleep(self._next_interval(progressed))

    def _next_interval(self, progressed: bool) -> float:
        """At once after progress (more objects may be waiting: a backlog is applied back to back,
        not one object per interval), every ``poll_min_secs`` for ``busy_window_secs`` after the
        last one, then doubling to the max."""
        now = time.monotonic()
        if progressed:
            self.last_progress = now
            self.interval = self.settings.poll_min_secs
            return 0.0
        if self.error == "" and now - self.last_progress < self.settings.busy_window_secs:
            self.interval = self.settings.poll_min_secs
        else:
            self.interval = min(self.interval * 2, self.settings.poll_max_secs)
        return self.interval

    def stats(self) -> CollectionStats:
        return self.replica.stats()

    def describe(self, stats: CollectionStats) -> None:
        stats.replica_lag_secs = round(self.lag_secs, 3)
        stats.replica_poll_interval_secs = self.interval
        if self.error:
            stats.error = self.error


class ReaderEngine(Engine):
    """The reader node.  A subclass of ``Engine`` only so the API's dependency type accepts it:
    it does not call ``Engine.__init__`` and overrides every method the API and the lifespan
    call, so none of the writer's machinery (data-dir lock, WAL, workers) ever runs here."""

    role = "reader"

    def __init__(self, settings: Settings) -> None:  # noqa: super().__init__ deliberately not called
        self.settings = settings
        self.data_dir = os.path.abspath(settings.storage.data_dir)
        self.writer_id = ""
        self.read_only_reason = ""
        self.remote: BlobStore | None = None
        self.remote_error = ""
        self._followers: dict[str, Follower] = {}
        self._failed: dict[str, str] = {}
        self._caches: dict[str, DiskCachedStore] = {}
        self.partition_cache = node_partition_cache(settings)
        self._discovery: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.ready = False
        self.started_at = time.time()

    # == lifecycle ================================================================================
    async def start(self) -> None:
        return_large_buffers_to_the_os()
        await asyncio.to_thread(os.makedirs, self.data_dir, exist_ok=True)
        self.remote = ReadOnlyStore(open_s3_store(self.settings))
        await self.discover()
        self._discovery = asyncio.create_task(self._discover_forever(), name="tierdb-reader-discovery")
        self.ready = True
        log.info("reader ready", extra={"collections": len(self._followers), "failed": len(self._failed)})

    def begin_shutdown(self) -> None:
        for follower in list(self._followers.values()):
            follower.replica.stop_maintenance()

    async def close(self) -> None:
        self.ready = False
        if self._discovery is not None:
            self._discovery.cancel()
            await asyncio.gather(self._discovery, return_exceptions=True)
        for follower in list(self._followers.values()):
            await follower.close()
        self._followers.clear()
        for cache in self._caches.values():
            await cache.close()
        self._caches.clear()
        if self.remote is not None:
            await self.remote.close()
        log.info("reader closed")

    # == discovery ================================================================================
    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node.discover_interval_secs)
            try:
                await self.discover()
                self.remote_error = ""
            except asyncio.CancelledError:
                raise
            except TierDBError as exc:
                self.remote_error = exc.message
                log.warning("reader cannot list collections in S3", extra={"error": exc.message})
            except Exception:
                log.exception("reader discovery crashed")

    async def discover(self) -> None:
        """One LIST of the prefix: open new collections, close dropped ones (no manifest left)."""
        assert self.remote is not None
        newest = await newest_manifest_versions(self.remote)
        metrics.REPLICA_POLL_REQUESTS.labels(collection="", kind="list").inc()
        async with self._lock:
            for name in sorted(set(self._followers) - set(newest)):
                await self._forget(name)
            for name in sorted(set(self._failed) - set(newest)):
                self._failed.pop(name, None)
            for name, version in sorted(newest.items()):
                follower = self._followers.get(name)
                if follower is not None:
                    follower.newest_listed = version
                    continue
                try:
                    replica = await self.open_replica(name)
                except TierDBError as exc:
                    if exc.kind is ErrorKind.NOT_FOUND:   # dropped between the LIST and the open
                        continue
                    if self._failed.get(name) != exc.message:
                        log.error("replica failed to open", extra={"collection": name, "error": exc.message})
                    self._failed[name] = exc.message
                    continue
                self._failed.pop(name, None)
                follower = Follower(self, replica)
                follower.newest_listed = version
                self._followers[name] = follower
                metrics.init_collection(name)
                follower.task = asyncio.create_task(follower.run(), name=f"tierdb-follow-{name}")
                log.info("replica opened", extra={"collection": name, "manifest_version": replica.manifest.version
                                                  if replica.manifest else 0, "applied_seq": replica.applied_seq})

    async def _forget(self, name: str) -> None:
        follower = self._followers.pop(name)
        await follower.close()
        cache = self._caches.pop(name, None)
        if cache is not None:
            await cache.close()
        metrics.forget_collection(name)
        log.info("replica closed: the collection was dropped", extra={"collection": name})

    async def open_replica(self, name: str) -> Replica:
        assert self.remote is not None
        segment_store = self._cache_for(name)
        wal = S3Wal(self.remote, name, asyncio.get_running_loop())
        replica = await open_replica(segment_store, self.remote, wal, self.settings, name)
        replica.cache_stats = segment_store.stats
        if policy_of(replica.spec.tiering_policy).segments_in_s3:
            replica.attach_ram_cache(SegmentRamCache(self.settings.cache.ram_bytes), asyncio.get_running_loop())
            replica.attach_partition_cache(self.partition_cache)
        return replica

    def _cache_for(self, name: str) -> DiskCachedStore:
        assert self.remote is not None
        if name not in self._caches:
            self._caches[name] = with_disk_cache(BorrowedStore(self.remote), self.settings, name)
        return self._caches[name]

    # == the API's surface ========================================================================
    def open_collections(self) -> list[Replica]:
        return [f.replica for f in self._followers.values()]

    def list_collections(self) -> list[CollectionInfo]:
        return [f.replica.info() for _, f in sorted(self._followers.items())]

    def get_collection(self, name: str) -> Replica:
        follower = self._followers.get(name)
        if follower is not None:
            return follower.replica
        if name in self._failed:
            raise unavailable(f"collection {name!r} failed to open on this reader: {self._failed[name]}",
                              collection=name)
        if not self.ready:
            raise unavailable("the reader is still opening collections; try again shortly")
        raise not_found(f"collection {name!r} does not exist (or this reader has not discovered it yet)",
                        collection=name)

    async def catch_up(self, name: str) -> None:
        """Strong read: apply everything the writer acknowledged before this call."""
        self.get_collection(name)       # 404/503 as for any read
        await self._followers[name].catch_up()

    async def create_collection(self, spec: CollectionSpec, *, replace: bool = False) -> CollectionInfo:
        raise read_only(f"create collection {spec.name!r}", self.settings.node.writer_url, collection=spec.name)

    async def drop_collection(self, name: str) -> None:
        raise read_only(f"drop collection {name!r}", self.settings.node.writer_url, collection=name)

    @property
    def scheduler_running(self) -> bool:
        return self._discovery is not None and not self._discovery.done()

    # probe_s3: Engine's (one HEAD through the read-only store, without retries)

    def collection_stats(self) -> list[CollectionStats]:
        report_cache_residency(self.partition_cache, self._caches.values())
        stats = [f.stats() for _, f in sorted(self._followers.items())]
        stats += [CollectionStats(name=name, policy="", state="failed", error=error, role="reader")
                  for name, error in sorted(self._failed.items())]
        return stats

    def collection_states(self) -> dict[str, str]:
        return {s.name: s.state for s in self.collection_stats()}


async def newest_manifest_versions(remote: BlobStore) -> dict[str, int]:
    """Collection name -> newest manifest version, from one listing of the prefix."""
    newest: dict[str, int] = {}
    for info in await remote.list(keys.COLLECTIONS_PREFIX):
        version = keys.parse_manifest_key(info.key)
        name = keys.collection_of(info.key)
        if version is not None and COLLECTION_NAME.fullmatch(name):
            newest[name] = max(version, newest.get(name, 0))
    return newest
