"""The engine: every collection of this node, their placement, recovery and workers.

The composition root (see ``tierdb/node/__init__.py``): the only module that knows both the
core (``tierdb.engine``) and the workers (``tierdb.workers``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable

from .. import keys, metrics
from ..config import Settings
from ..engine import localdirs, manifest as manifests
from ..engine.collection import Collection
from ..engine.dirlock import DataDirLock
from ..engine.partition_cache import PartitionLru
from ..engine.ramcache import SegmentRamCache
from ..engine.restore import last_wal_seq, remote_collection_names, restore_collection
from ..engine.wal import LocalWal, S3Wal
from ..errors import ErrorKind, TierDBError, not_found, unavailable
from ..models import (
    COLLECTION_NAME,
    CollectionInfo,
    CollectionSpec,
    CollectionStats,
    Manifest,
)
from ..service.spec import complete_spec
from ..storage.base import BlobStore
from ..storage.cache import DiskCachedStore
from ..storage.factory import open_s3_store, with_disk_cache
from ..storage.local import LocalStore
from ..storage.wrapper import BorrowedStore, without_retries
from ..tiering import Placement, Stores, WalKind, normalize_policy, placement, policy_of
from ..workers.compactor import run_compaction
from ..workers.dlq import DeadLetterQueue
from ..workers.gc import RemoteGc
from ..workers.scheduler import build_scheduler
from ..workers.uploader import Uploader
from . import takeover
from ..process_memory import release_freed_memory, return_large_buffers_to_the_os
from .datadir import prepare_data_dir

log = logging.getLogger(__name__)


class Engine:
    role = "writer"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = os.path.abspath(settings.storage.data_dir)
        self.collections_dir = keys.collections_dir(self.data_dir)
        self.default_policy = normalize_policy(settings.storage.tiering_policy)
        self.writer_id = ""
        self.store: BlobStore = LocalStore(self.data_dir)
        self.remote: BlobStore | None = None
        self._caches: dict[str, DiskCachedStore] = {}
        self.partition_cache = node_partition_cache(settings)
        self._gcs: dict[str, RemoteGc] = {}
        self.remote_error = ""
        self._dir_lock = DataDirLock(self.data_dir)
        self._collections: dict[str, Collection] = {}
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._scheduler = None
        self.ready = False
        self.started_at = time.time()
        self.read_only_reason = ""   # set at start when the data directory takes no writes

    # == lifecycle ================================================================================
    async def start(self) -> None:
        return_large_buffers_to_the_os()
        await asyncio.to_thread(self._prepare_data_dir)
        if self.settings.s3.bucket:
            self.remote = open_s3_store(self.settings, on_retry=_count_retry)
        local_names = await asyncio.to_thread(self._local_collection_names)
        unfinished: set[str] = set()
        for name in local_names:
            if not await self._open(name):
                unfinished.add(name)
        if self.remote is not None:
            await self._open_remote_only(set(local_names) - unfinished, unfinished)
        else:
            for name in sorted(unfinished):
                await asyncio.to_thread(self._keep_unfinished, name, "S3 is not configured")
        jobs = [("compaction", self._compaction_job, self.settings.compaction.interval_secs)]
        if self.remote is not None:
            jobs += [
                ("uploader", self._upload_job, self.settings.uploader.interval_secs),
                ("gc", self._gc_job, self.settings.gc.interval_secs),
            ]
        self._scheduler = build_scheduler(jobs)
        self._scheduler.start()
        self.ready = True
        log.info(
            "engine ready",
            extra={"data_dir": self.data_dir, "collections": len(self._collections), "failed": len(self._failed)},
        )

    async def _compaction_job(self) -> None:
        await run_compaction(self.open_collections())

    async def _upload_job(self) -> None:
        for coll in self.open_collections():  # a collection that ships nothing returns at once
            try:
                await coll.uploader.run_once()
            except TierDBError as exc:
                level = logging.INFO if coll.stopping else logging.WARNING
                log.log(level, "upload run failed", extra={"collection": coll.name, "error": exc.message})
            except Exception:
                log.exception("upload run crashed", extra={"collection": coll.name})

    async def _gc_job(self) -> None:
        for coll in self.open_collections():
            gc = self._gcs.get(coll.name)
            if gc is None or coll.state != "ready":
                continue
            assert coll.manifest is not None
            newest = coll.uploader.newest_s3_version(coll.manifest.version)
            try:
                await gc.run_once(newest)
            except TierDBError as exc:
                log.warning("gc failed", extra={"collection": coll.name, "error": exc.message})
            except Exception:
                log.exception("gc crashed", extra={"collection": coll.name})

    def _prepare_data_dir(self) -> None:
        prepared = prepare_data_dir(self.data_dir, self._dir_lock)
        self.writer_id = prepared.writer_id
        self.read_only_reason = prepared.read_only_reason

    def _local_collection_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.collections_dir) if COLLECTION_NAME.fullmatch(n))

    async def _open(self, name: str, *, remote_policy: str | None = None) -> bool:
        """Open a collection (errors are recorded in ``_failed``); False if it has no manifest.
        Without ``remote_policy`` it is a local directory, whose manifest names its policy."""
        started = time.perf_counter()
        try:
            policy = remote_policy
            if policy is None:
                local = await manifests.load_latest(self.store, name)
                if local is None:
                    return False
                policy = local.spec.tiering_policy
            place = self._place(policy, name)
            coll = await Collection.open(place.segment_store, self._wal(place, name), self.settings, name, self.writer_id)
            if self.settings.node.takeover and place.wal is WalKind.S3:
                coll = await self._claim(coll, place)
            self._attach_workers(coll, place)
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return False
            self._failed[name] = exc.message
            log.error("collection failed to open", extra={"collection": name, "error": exc.message})
            return True
        self._collections[name] = coll
        metrics.init_collection(name)
        log.info("collection opened", extra={"collection": name, "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
        return True

    async def _claim(self, coll: Collection, place: Placement) -> Collection:
        """Handover: claim the collection from the previous writer before it takes writes
        (``takeover.claim``).  A failed claim closes it: it is reported failed, never writable."""
        assert self.remote is not None

        async def reopen(old: Collection) -> Collection:
            await old.close()
            return await Collection.open(place.segment_store, self._wal(place, old.name), self.settings, old.name,
                                         self.writer_id)

        try:
            return await takeover.claim(coll, self.remote, reopen)
        except BaseException:
            await coll.close()
            raise

    async def _open_remote_only(self, local_names: set[str], unfinished: set[str]) -> None:
        """Collections that exist only in S3: s3_only ones open from S3; memory_s3 ones are
        restored to the local data directory first (disaster recovery).  ``unfinished`` are
        local directories without a manifest (an interrupted restore or create): they are
        restored again if S3 holds the collection."""
        assert self.remote is not None
        try:
            names = await remote_collection_names(self.remote)
        except TierDBError as exc:
            # Local collections still serve; collections that live only in S3 stay unknown
            # until S3 answers and the node restarts. /health reports the S3 error.
            self.remote_error = exc.message
            log.error("cannot list collections in S3", extra={"error": exc.message})
            for name in sorted(unfinished):
                await asyncio.to_thread(self._keep_unfinished, name, f"S3 could not be listed: {exc.message}")
            return
        for name in names:
            if name in local_names:
                continue
            try:
                latest = await manifests.load_latest(self.remote, name)
                if latest is None:
                    continue
                if name in unfinished:
                    log.warning("unfinished restore or create found; restoring the collection from S3 again",
                                extra={"collection": name, "manifest_version": latest.version})
                    unfinished.discard(name)
                await self._open_from_s3(name, latest.spec.tiering_policy)
            except TierDBError as exc:
                self._failed[name] = exc.message
                log.error("collection in S3 failed to open", extra={"collection": name, "error": exc.message})
        for name in sorted(unfinished - self._failed.keys()):  # a failed restore already says why
            await asyncio.to_thread(self._keep_unfinished, name, "S3 does not hold the collection")

    async def _open_from_s3(self, name: str, policy: str) -> None:
        """memory_s3: restore the latest S3 manifest atomically, then open it; s3_only: open it
        through the disk cache.  A restore error raises; an open error ends up in ``_failed``."""
        if policy_of(policy).restores_to_disk:
            assert self.remote is not None
            claim_for = self.writer_id if self.settings.node.takeover else ""
            await restore_collection(self.remote, self.data_dir, name, claim_for=claim_for)
            await self._open(name)
            if name in self._collections:
                await asyncio.to_thread(self._collections[name].seal_wal)
        else:
            # A local directory of this name (the remains of an earlier memory_s3 copy) is stale.
            await asyncio.to_thread(localdirs.retire, self.data_dir, name)
            await self._open(name, remote_policy=policy)

    def _keep_unfinished(self, name: str, why: str) -> None:
        """A directory without a manifest that cannot be restored now.  Empty of data, it is
        the remains of an interrupted create (nothing was acknowledged) and is removed; with
        data it is kept for an operator and reported as failed (503, /health degraded)."""
        path = localdirs.collection_dir(self.data_dir, name)
        if not localdirs.holds_files(path):
            localdirs.retire(self.data_dir, name)
            log.warning("empty collection directory without a manifest removed (an interrupted create)",
                        extra={"collection": name, "path": path})
            return
        self._failed[name] = (
            f"local directory {path} has no manifest (an interrupted restore or create) and cannot be "
            f"restored: {why}. Run `tierdb restore --collection {name}` once S3 holds it, or drop the collection"
        )
        log.error("collection directory without a manifest kept for an operator",
                  extra={"collection": name, "path": path, "reason": why})

    # == placement: what tiering.placement names, built and wired ==================================
    def _place(self, policy: str, name: str) -> Placement:
        stores = Stores(local=self.store, remote=self.remote, disk_cached=self._cache_for)
        return placement(policy_of(policy), stores, self.settings, name)

    def _wal(self, place: Placement, name: str) -> LocalWal | S3Wal:
        if place.wal is WalKind.S3:
            assert self.remote is not None
            return S3Wal(self.remote, name, asyncio.get_running_loop())
        return LocalWal(keys.wal_dir(self.data_dir, name), fsync=self.settings.storage.fsync)

    def _cache_for(self, name: str) -> DiskCachedStore:
        """A per-collection LRU disk cache in front of S3.  It borrows the node's S3 client:
        closing the cache (drop) never closes the client the other collections use."""
        assert self.remote is not None
        if name not in self._caches:
            self._caches[name] = with_disk_cache(
                BorrowedStore(self.remote), self.settings, name, on_event=lambda kind, n: _count_cache(name, kind, n)
            )
        return self._caches[name]

    def _attach_workers(self, coll: Collection, place: Placement) -> None:
        """Uploader with its dead-letter queue, the caches' statistics and bounds, the GC."""
        if place.uploader:
            assert self.remote is not None
            fsync = self.settings.storage.fsync
            dlq = DeadLetterQueue(keys.dlq_path(self.data_dir, coll.name), fsync=fsync)
            coll.dlq = dlq
            coll.uploader = Uploader(coll, self.store, self.remote, dlq, keys.upload_state_path(self.data_dir, coll.name),
                                     settings=self.settings.uploader, fsync=fsync)
        if place.disk_cache is not None:
            coll.cache_stats = place.disk_cache.stats
        if place.ram_cache_bytes is not None:
            coll.attach_ram_cache(
                SegmentRamCache(place.ram_cache_bytes, on_event=lambda kind, n: _count_cache(coll.name, kind, n, "ram")),
                asyncio.get_running_loop(),
            )
            coll.attach_partition_cache(self.partition_cache)
        if place.remote_gc:
            assert self.remote is not None
            self._gcs[coll.name] = RemoteGc(self.remote, coll.name, self.settings.gc.keep_manifests, self.settings.gc.grace_secs)

    def begin_shutdown(self) -> None:
        """SIGTERM arrived: stop index builds now, before the in-flight requests are drained
        (a build would otherwise hold up the shutdown for as long as it takes).  Only sets
        flags: safe to call from a signal handler."""
        for coll in list(self._collections.values()):
            coll.stop_maintenance()

    async def close(self) -> None:
        """Stop the workers, finish in-flight writes, abandon index builds (the WAL holds their
        rows; the next start replays it), give uploads a bounded time, release every resource
        and hand the memory back to the OS."""
        self.ready = False
        started = time.perf_counter()
        collections = list(self._collections.values())
        self.begin_shutdown()
        if self._scheduler is not None:
            await self._scheduler.stop(self.settings.server.shutdown_timeout_secs)
            self._scheduler = None
        await self._drain_uploads()
        for coll in collections:
            try:
                await coll.close()
            except Exception:
                log.exception("closing collection failed", extra={"collection": coll.name})
        self._collections.clear()
        self._gcs.clear()
        await self.store.close()
        for cache in self._caches.values():
            await cache.close()
        self._caches.clear()
        if self.remote is not None:
            await self.remote.close()
        self._dir_lock.release()
        await asyncio.to_thread(release_freed_memory)
        log.info("engine closed", extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)})

    async def _drain_uploads(self) -> None:
        """Give memory_s3 uploaders a bounded time to ship what is acknowledged (and to finish a
        run in progress, so their state file is never left behind the uploads)."""
        uploaders = [c.uploader for c in self._collections.values()]  # ones with nothing to ship return at once
        if not uploaders:
            return
        budget = self.settings.server.shutdown_timeout_secs
        try:
            await asyncio.wait_for(asyncio.gather(*(u.run_once() for u in uploaders), return_exceptions=True), budget)
        except asyncio.TimeoutError:
            log.warning("uploads not drained before shutdown; they resume at the next start",
                        extra={"timeout_secs": budget})

    # == collections ==============================================================================
    def open_collections(self) -> list[Collection]:
        return list(self._collections.values())

    def list_collections(self) -> list[CollectionInfo]:
        return [c.info() for _, c in sorted(self._collections.items())]

    def get_collection(self, name: str) -> Collection:
        coll = self._collections.get(name)
        if coll is not None:
            return coll
        if name in self._failed:
            raise unavailable(f"collection {name!r} failed to open: {self._failed[name]}", collection=name)
        if not self.ready:
            raise unavailable("the server is still recovering; try again shortly")
        raise not_found(f"collection {name!r} does not exist", collection=name)

    async def catch_up(self, name: str) -> None:
        """A strong read on the writer: its state already holds every acknowledged write."""
        self.get_collection(name)

    async def create_collection(self, spec: CollectionSpec, *, replace: bool = False) -> CollectionInfo:
        """Create a collection.  For the S3 policies S3 is asked first: if it already holds a
        collection of that name, this is a 409 unless ``replace`` (the new collection then takes
        over with a manifest version after S3's latest; see ``_create_in_s3``)."""
        spec = self._complete_spec(spec)
        async with self._lock:
            if spec.name in self._collections or spec.name in self._failed:
                raise TierDBError(ErrorKind.CONFLICT, f"collection {spec.name!r} already exists", collection=spec.name)
            if policy_of(spec.tiering_policy).needs_s3:
                coll = await self._create_in_s3(spec, replace)
            else:
                place = self._place(spec.tiering_policy, spec.name)
                coll = await Collection.create(spec, place.segment_store, self._wal(place, spec.name), self.settings, self.writer_id)
                try:
                    self._attach_workers(coll, place)
                except TierDBError:
                    await coll.close()
                    await asyncio.to_thread(localdirs.retire, self.data_dir, spec.name)
                    raise
                self._collections[spec.name] = coll
        metrics.init_collection(spec.name)
        log.info("collection created", extra={"collection": spec.name, "dimension": spec.dimension, "replace": replace,
                                               "metric": spec.metric, "policy": spec.tiering_policy})
        return coll.info()

    async def _create_in_s3(self, spec: CollectionSpec, replace: bool) -> Collection:
        """Publish the new collection's first manifest to S3, then open it from there like a
        collection found in S3 at start (memory_s3: atomic restore into the data directory).

        The first manifest is version (S3's latest + 1), written put-if-absent: a node never
        publishes a manifest older than S3's, and the previous incarnation's writer is fenced
        at its next manifest.  Its ``wal_seq`` is the last record of any WAL object already in
        S3, so the new WAL continues after them and restores never replay them.  The previous
        incarnation's objects are left to the GC, which deletes what no kept manifest needs
        after its grace period (a fresh node restoring the old version meanwhile still works).
        A crash after the publish leaves the new collection in S3; the next start opens it."""
        assert self.remote is not None
        name = spec.name
        try:
            versions = await manifests.versions(self.remote, name)
            wal_floor = await last_wal_seq(self.remote, name)
        except TierDBError as exc:
            raise unavailable(
                f"cannot create collection {name!r}: S3 must be asked whether it already holds it, and it "
                f"did not answer: {exc.message}",
                collection=name,
            ) from exc
        if versions and not replace:
            raise TierDBError(
                ErrorKind.CONFLICT,
                f"S3 already holds collection {name!r} at manifest version {versions[-1]}; "
                "pass replace=true to overwrite it",
                collection=name, manifest_version=versions[-1],
            )
        first = Manifest(
            version=(versions[-1] if versions else 0) + 1,
            spec=spec,
            segments=[],
            wal_seq=wal_floor,
            created_at=time.time(),
            writer_id=self.writer_id,
        )
        try:
            await manifests.publish(self.remote, first)
        except TierDBError as exc:
            if exc.kind is ErrorKind.FENCED:
                raise TierDBError(
                    ErrorKind.CONFLICT,
                    f"collection {name!r} was created in S3 by another writer meanwhile (manifest version "
                    f"{first.version})",
                    collection=name,
                ) from exc
            raise
        if versions:
            log.warning("collection in S3 replaced", extra={"collection": name, "replaced_version": versions[-1],
                                                            "manifest_version": first.version})
        await self._open_from_s3(name, spec.tiering_policy)
        coll = self._collections.get(name)
        if coll is None:
            raise unavailable(
                f"collection {name!r} was created in S3 but failed to open: {self._failed.get(name, 'unknown error')}",
                collection=name,
            )
        return coll

    def _complete_spec(self, spec: CollectionSpec) -> CollectionSpec:
        return complete_spec(spec, self.settings)

    async def drop_collection(self, name: str) -> None:
        async with self._lock:
            coll = self._collections.pop(name, None)
            if coll is None and name not in self._failed:
                raise not_found(f"collection {name!r} does not exist", collection=name)
            self._failed.pop(name, None)
            if coll is not None:
                await coll.close()
            await asyncio.to_thread(localdirs.retire, self.data_dir, name)
            if self.remote is not None and (coll is None or coll.policy.needs_s3):
                # manifests first (the listing is sorted): the collection leaves S3 at once and a
                # crash part-way leaves only unreferenced objects, which a later create skips
                for info in await self.remote.list(keys.collection_prefix(name)):
                    await self.remote.delete(info.key)
            self._gcs.pop(name, None)
            cache = self._caches.pop(name, None)
            if cache is not None:
                await cache.close()
        metrics.forget_collection(name)
        log.info("collection dropped", extra={"collection": name})

    # == status ===================================================================================
    @property
    def scheduler_running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    async def probe_s3(self, timeout_secs: float = 5.0) -> dict | None:
        """One HEAD request (no retries): reachable, latency; None when S3 is not configured."""
        if self.remote is None:
            return None
        store = without_retries(self.remote)  # one attempt
        started = time.perf_counter()
        try:
            await asyncio.wait_for(store.head("health-probe"), timeout_secs)
            error = ""
        except TierDBError as exc:
            error = exc.message
        except asyncio.TimeoutError:
            error = f"no answer within {timeout_secs} s"
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return {"reachable": not error, "latency_ms": latency_ms, "error": error or self.remote_error}

    def collection_stats(self) -> list[CollectionStats]:
        report_cache_residency(self.partition_cache, self._caches.values())
        stats = [c.stats() for _, c in sorted(self._collections.items())]
        stats += [
            CollectionStats(name=name, policy="", state="failed", error=error)
            for name, error in sorted(self._failed.items())
        ]
        return stats

    def collection_states(self) -> dict[str, str]:
        return {s.name: s.state for s in self.collection_stats()}


def _count_retry(op: str, attempt: int, delay: float, error: TierDBError) -> None:
    metrics.S3_RETRIES.labels(collection=keys.collection_of(str(error.context.get("key", "")))).inc()


def node_partition_cache(settings: Settings) -> PartitionLru:
    """The node's RAM tier for partitioned segments: ``cache.ram_bytes`` shared by all collections."""
    return PartitionLru(settings.cache.ram_bytes, on_event=lambda name, kind, n: _count_cache(name, kind, n, "ram"))


def report_cache_residency(partition_cache: PartitionLru, disk_caches: Iterable[DiskCachedStore]) -> None:
    """The node's resident bytes per cache tier against its budget.  RAM: one node-wide budget;
    disk: ``cache.disk_bytes`` per s3_only collection, so the node's budget is their sum."""
    disk = [c.stats() for c in disk_caches]
    metrics.CACHE_RESIDENT_BYTES.labels(tier="ram").set(partition_cache.resident_bytes)
    metrics.CACHE_RESIDENT_BYTES.labels(tier="disk").set(sum(int(st.get("bytes", 0)) for st in disk))
    if disk:
        metrics.CACHE_BUDGET_BYTES.labels(tier="disk").set(sum(int(st.get("size_limit", 0)) for st in disk))


def _count_cache(name: str, kind: str, n: int, tier: str = "disk") -> None:
    counter = {"hit": metrics.CACHE_HITS, "miss": metrics.CACHE_MISSES, "eviction": metrics.CACHE_EVICTIONS}.get(kind)
    if counter is not None:
        counter.labels(collection=name, tier=tier).inc(n)
