"""The engine: every collection of this node, their placement, recovery and workers."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid

import msgspec

from .. import keys, metrics
from ..config import Settings
from ..errors import ErrorKind, TierDBError, invalid, not_found, unavailable
from ..models import (
    COLLECTION_NAME,
    CollectionInfo,
    CollectionSpec,
    CollectionStats,
    HnswParams,
    normalize_policy,
)
from ..storage.base import BlobStore
from ..storage.local import LocalStore
from ..workers.compactor import run_compaction
from ..workers.scheduler import build_scheduler
from .collection import Collection
from .wal import LocalWal

log = logging.getLogger(__name__)

_DROPPED_PREFIX = ".dropped-"
SUPPORTED_POLICIES = ("memory",)


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = os.path.abspath(settings.storage.data_dir)
        self.collections_dir = os.path.join(self.data_dir, "collections")
        self.default_policy = normalize_policy(settings.storage.tiering_policy)
        self.writer_id = uuid.uuid4().hex
        self.store: BlobStore = LocalStore(self.data_dir)
        self._collections: dict[str, Collection] = {}
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._scheduler = None
        self.ready = False
        self.started_at = time.time()

    # == lifecycle ================================================================================
    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_data_dir)
        for name in await asyncio.to_thread(self._local_collection_names):
            await self._open(name)
        self._scheduler = build_scheduler(
            [("compaction", self._compaction_job, self.settings.compaction.interval_secs)]
        )
        self._scheduler.start()
        self.ready = True
        log.info(
            "engine ready",
            extra={"data_dir": self.data_dir, "collections": len(self._collections), "failed": len(self._failed)},
        )

    async def _compaction_job(self) -> None:
        await run_compaction(self)

    def _prepare_data_dir(self) -> None:
        os.makedirs(self.collections_dir, exist_ok=True)
        for entry in os.listdir(self.collections_dir):
            if entry.startswith(_DROPPED_PREFIX):
                shutil.rmtree(os.path.join(self.collections_dir, entry), ignore_errors=True)

    def _local_collection_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.collections_dir) if COLLECTION_NAME.match(n))

    async def _open(self, name: str) -> None:
        started = time.perf_counter()
        try:
            coll = await Collection.open(self.store, self._wal_for(name), self.settings, name, self.writer_id)
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                log.warning("directory without a manifest ignored", extra={"collection": name})
                return
            self._failed[name] = exc.message
            log.error("collection failed to open", extra={"collection": name, "error": exc.message})
            return
        self._collections[name] = coll
        metrics.init_collection(name)
        log.info("collection opened", extra={"collection": name, "duration_ms": round((time.perf_counter() - started) * 1000, 1)})

    def _wal_for(self, name: str) -> LocalWal:
        return LocalWal(os.path.join(self.data_dir, keys.wal_prefix(name)), fsync=self.settings.storage.fsync)

    async def close(self) -> None:
        self.ready = False
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for coll in list(self._collections.values()):
            try:
                await coll.close()
            except Exception:
                log.exception("closing collection failed", extra={"collection": coll.name})
        await self.store.close()
        log.info("engine closed")

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

    async def create_collection(self, spec: CollectionSpec) -> CollectionInfo:
        spec = self._complete_spec(spec)
        async with self._lock:
            if spec.name in self._collections or spec.name in self._failed:
                raise TierDBError(ErrorKind.CONFLICT, f"collection {spec.name!r} already exists", collection=spec.name)
            coll = await Collection.create(spec, self.store, self._wal_for(spec.name), self.settings, self.writer_id)
            self._collections[spec.name] = coll
        metrics.init_collection(spec.name)
        log.info("collection created", extra={"collection": spec.name, "dimension": spec.dimension,
                                               "metric": spec.metric, "policy": spec.tiering_policy})
        return coll.info()

    def _complete_spec(self, spec: CollectionSpec) -> CollectionSpec:
        spec.validate()
        policy = normalize_policy(spec.tiering_policy) if spec.tiering_policy else self.default_policy
        if policy not in SUPPORTED_POLICIES:
            raise invalid(
                f"tiering_policy {policy!r} is not available on this server; supported: {', '.join(SUPPORTED_POLICIES)}",
                field="tiering_policy",
            )
        index = self.settings.index
        hnsw = spec.hnsw or HnswParams(m=index.m, ef_construction=index.ef_construction, ef_search=index.ef_search).validate()
        return msgspec.structs.replace(spec, tiering_policy=policy, hnsw=hnsw, created_at=time.time())

    async def drop_collection(self, name: str) -> None:
        async with self._lock:
            coll = self._collections.pop(name, None)
            if coll is None and name not in self._failed:
                raise not_found(f"collection {name!r} does not exist", collection=name)
            self._failed.pop(name, None)
            if coll is not None:
                await coll.close()
            await asyncio.to_thread(self._remove_local, name)
        metrics.forget_collection(name)
        log.info("collection dropped", extra={"collection": name})

    def _remove_local(self, name: str) -> None:
        path = os.path.join(self.collections_dir, name)
        if not os.path.exists(path):
            return
        # Renaming first makes the drop atomic: a crash leaves a .dropped- directory that the
        # next start removes, never a half-deleted collection.
        tomb = os.path.join(self.collections_dir, f"{_DROPPED_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
        os.rename(path, tomb)
        shutil.rmtree(tomb, ignore_errors=True)

    # == status ===================================================================================
    def collection_stats(self) -> list[CollectionStats]:
        stats = [c.stats() for _, c in sorted(self._collections.items())]
        stats += [
            CollectionStats(name=name, policy="", state="failed", error=error)
            for name, error in sorted(self._failed.items())
        ]
        return stats

    def collection_states(self) -> dict[str, str]:
        return {s.name: s.state for s in self.collection_stats()}
