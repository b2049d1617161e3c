"""Opening a collection: create it (manifest v1), or load its latest manifest, its segments and
replay the WAL after the manifest's position."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Self

import numpy as np

from .. import keys
from ..config import Settings
from ..errors import ErrorKind, TierDBError
from ..models import CollectionSpec, Manifest, SegmentRef
from ..storage.base import BlobStore
from . import manifest as manifests
from . import segment as segments
from .partition_access import PartitionAccessMixin
from .partitioned_source import PartitionedSource
from .rows import RowSource
from .wal import Wal

log = logging.getLogger(__name__)


class RecoveryMixin(PartitionAccessMixin):
    @classmethod
    async def create(cls, spec: CollectionSpec, store: BlobStore, wal: Wal, settings: Settings, writer_id: str) -> Self:
        coll = cls(spec, store, wal, settings, writer_id)
        first = Manifest(version=1, spec=spec, segments=[], wal_seq=0, created_at=time.time(), writer_id=writer_id)
        try:
            await manifests.publish(store, first)
        except TierDBError as exc:
            if exc.kind is ErrorKind.FENCED:
                raise TierDBError(ErrorKind.CONFLICT, f"collection {spec.name!r} already exists", collection=spec.name) from exc
            raise
        coll.manifest = first
        coll._loop = asyncio.get_running_loop()
        await asyncio.to_thread(coll.wal.open_for_append, 1)
        coll.state = "ready"
        return coll

    @classmethod
    async def open(cls, store: BlobStore, wal: Wal, settings: Settings, name: str, writer_id: str) -> Self:
        current = await manifests.load_latest(store, name)
        if current is None:
            raise TierDBError(ErrorKind.NOT_FOUND, f"collection {name!r} has no manifest", collection=name)
        coll = cls(current.spec, store, wal, settings, writer_id)
        coll.manifest = current
        coll._loop = asyncio.get_running_loop()  # partition reads from worker threads hop onto it
        loaded = await asyncio.gather(*(coll._load_segment(ref) for ref in current.segments))
        await asyncio.to_thread(coll._recover, loaded)
        coll.state = "ready"
        return coll

    async def _load_segment(self, ref: SegmentRef) -> RowSource:
        if ref.layout == "partitioned":
            return await self._open_partitioned(ref)
        key = keys.segment_key(self.name, ref.id)
        try:
            data = await self.store.get(key)
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                raise TierDBError(
                    ErrorKind.CORRUPT,
                    f"collection {self.name!r}: segment {ref.id} referenced by the manifest is missing",
                    collection=self.name,
                    key=key,
                ) from exc
            raise
        return await asyncio.to_thread(segments.decode, ref.id, data)

    def _recover(self, loaded: list[RowSource]) -> None:
        assert self.manifest is not None
        for ref, seg in zip(self.manifest.segments, loaded):
            for row in ref.dead:
                seg.kill(row, self.manifest.wal_seq)
            if isinstance(seg, PartitionedSource):
                continue  # found by id hash (partition_access), not through _where
            for row in np.flatnonzero(seg.alive_mask()):
                doc_id = seg.ids[row]
                if doc_id in self._where:
                    raise TierDBError(
                        ErrorKind.CORRUPT,
                        f"collection {self.name!r}: id {doc_id!r} is live in two segments",
                        collection=self.name,
                    )
                self._where[doc_id] = (seg, int(row))
        self.segments = list(loaded)
        last = self.manifest.wal_seq
        replayed = 0
        for record in self.wal.scan(after_seq=self.manifest.wal_seq):
            self._apply(record, self._record_matrix(record))
            last = record.seq
            replayed += 1
        self._next_seq = last + 1
        self.wal.open_for_append(self._next_seq)
        log.info(
            "collection recovered",
            extra={"collection": self.name, "segments": len(loaded), "wal_records_replayed": replayed,
                   "manifest_version": self.manifest.version, "count": self.count()},
        )
