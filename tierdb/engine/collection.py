"""A collection: WAL + memtable + immutable segments + versioned manifest.

Concurrency model
- Writes go through a GroupCommitter: one worker thread at a time frames the batch into the
  WAL, makes it durable, then applies it to the memtable under the write side of ``_rw``.
  A write is visible only once it is durable, and acknowledged only after that.
- Queries and gets run in threads under the read side of ``_rw``; they see a consistent state.
- Flush and merge build segments without any lock, publish the new manifest, then swap the
  in-memory state under the write lock (the only pause a reader or writer can see).
- ``_where`` maps every live id to exactly one (source, row); everything else is dead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import numpy as np

from .. import keys, metrics
from ..config import Settings
from ..errors import ErrorKind, TierDBError, invalid, unavailable
from ..models import (
    MAX_ID_BYTES,
    CollectionInfo,
    CollectionSpec,
    CollectionStats,
    CompactResult,
    DlqEntry,
    Document,
    Hit,
    Manifest,
    SegmentRef,
    check_json_value,
    check_new_ids,
)
from ..service.limits import Limits
from ..storage.base import BlobStore
from ..tiering import policy_of
from . import compaction, manifest as manifests, segment as segments
from .attachments import NO_DEAD_LETTERS, NO_UPLOADS, DeadLetters, UploadWorker, no_cache_stats
from .filters import compile_filter, filter_key
from .group_commit import GroupCommitter
from .memtable import Memtable
from .ramcache import ResidentSegments, SegmentCache
from .rows import RowSource
from .rwlock import RWLock
from .vectors import as_matrix
from .wal import LocalWal, WalRecord, frame

log = logging.getLogger(__name__)



@dataclass
class WriteOp:
    kind: str                                   # "upsert" | "delete" | "delete_filter"
    ids: list[str]
    matrix: np.ndarray | None = None
    metadata: list[dict | None] = field(default_factory=list)
    filter: dict | None = None


@dataclass
class _Built:
    segment: segments.Segment
    ref: SegmentRef
    source_rows: list[tuple[RowSource, int]]   # for each new row: where it came from
    data: bytes                                # the encoded segment object


class Collection:
    def __init__(self, spec: CollectionSpec, store: BlobStore, wal: LocalWal, settings: Settings, writer_id: str) -> None:
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

    # == opening ==================================================================================
    @classmethod
    async def create(cls, spec: CollectionSpec, store: BlobStore, wal: LocalWal, settings: Settings, writer_id: str) -> "Collection":
        coll = cls(spec, store, wal, settings, writer_id)
        first = Manifest(version=1, spec=spec, segments=[], wal_seq=0, created_at=time.time(), writer_id=writer_id)
        try:
            await manifests.publish(store, first)
        except TierDBError as exc:
            if exc.kind is ErrorKind.FENCED:
                raise TierDBError(ErrorKind.CONFLICT, f"collection {spec.name!r} already exists", collection=spec.name) from exc
            raise
        coll.manifest = first
        await asyncio.to_thread(coll.wal.open_for_append, 1)
        coll.state = "ready"
        return coll

    @classmethod
    async def open(cls, store: BlobStore, wal: LocalWal, settings: Settings, name: str, writer_id: str) -> "Collection":
        current = await manifests.load_latest(store, name)
        if current is None:
            raise TierDBError(ErrorKind.NOT_FOUND, f"collection {name!r} has no manifest", collection=name)
        coll = cls(current.spec, store, wal, settings, writer_id)
        coll.manifest = current
        loaded = await asyncio.gather(*(coll._load_segment(ref) for ref in current.segments))
        await asyncio.to_thread(coll._recover, loaded)
        coll.state = "ready"
        return coll

    async def _load_segment(self, ref: SegmentRef) -> segments.Segment:
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

    def _recover(self, loaded: list[segments.Segment]) -> None:
        assert self.manifest is not None
        for ref, seg in zip(self.manifest.segments, loaded):
            for row in ref.dead:
                seg.kill(row, self.manifest.wal_seq)
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
                   "manifest_version": self.manifest.version, "count": len(self._where)},
        )

    def _record_matrix(self, record: WalRecord) -> np.ndarray | None:
        if record.op != "upsert":
            return None
        return np.frombuffer(record.vectors, dtype=np.float32).reshape(len(record.ids), self.spec.dimension)

    # == writes ===================================================================================
    async def upsert(self, ids: list[str], vectors: Any, metadata: list[dict | None] | None = None) -> int:
        self._check_writable()
        _check_ids(ids)
        check_new_ids(ids)
        matrix = as_matrix(vectors, self.spec.dimension)
        if len(matrix) != len(ids):
            raise invalid(f"got {len(ids)} ids but {len(matrix)} vectors")
        if metadata is None:
            metadata = [None] * len(ids)
        elif len(metadata) != len(ids):
            raise invalid(f"got {len(ids)} ids but {len(metadata)} metadata entries")
        _check_metadata(ids, metadata, self.settings.server.max_nesting_depth)
        started = time.perf_counter()
        result = await self._committer.submit(WriteOp("upsert", list(ids), matrix, list(metadata)))
        metrics.INSERTS.labels(collection=self.name).inc(len(ids))
        metrics.OPERATION_SECONDS.labels(collection=self.name, op="upsert").observe(time.perf_counter() - started)
        self._flush_if_due()
        return result

    async def delete(self, ids: list[str] | None = None, filter: dict | None = None) -> int:
        self._check_writable()
        if ids is None and filter is None:
            raise invalid("delete needs ids, a filter, or both")
        if ids is not None:
            _check_ids(ids)
        if filter is None:
            op = WriteOp("delete", list(ids or []))
        else:
            compile_filter(filter, self.settings.server.max_nesting_depth)  # validate before anything is written
            op = WriteOp("delete_filter", list(ids) if ids is not None else [], filter=filter)
        results = await self._committer.submit(op)
        metrics.DELETES.labels(collection=self.name).inc(results)
        self._flush_if_due()
        return results

    def _check_open(self) -> None:
        if self.state == "closed":
            raise unavailable(f"collection {self.name!r} is closed", collection=self.name)

    def _check_writable(self) -> None:
        if self.state == "fenced":
            raise TierDBError(ErrorKind.FENCED, f"collection {self.name!r} is fenced: {self.error}", collection=self.name)
        if self.state not in ("ready",):
            raise unavailable(f"collection {self.name!r} is {self.state}", collection=self.name)

    def _commit(self, ops: list[WriteOp]) -> list[Any]:
        """Runs in a worker thread, one batch at a time (GroupCommitter guarantees it)."""
        if self._wal_uncertain:
            with self._commit_lock:  # a write reported as failed may have landed: apply it first
                self._resync_wal()
        results: list[Any] = []
        batch: list[WriteOp] = []
        for op in ops:
            if op.kind == "delete_filter":
                # Resolve against a state that includes every earlier op of this batch.
                results.extend(self._write_and_apply(batch))
                batch = []
                op = WriteOp("delete", self._ids_matching(op.filter or {}, op.ids or None))
            batch.append(op)
        results.extend(self._write_and_apply(batch))
        return results

    def _write_and_apply(self, ops: list[WriteOp]) -> list[Any]:
        if not ops:
            return []
        records = [
            WalRecord(
                seq=self._next_seq + i,
                op=op.kind,
                ids=op.ids,
                vectors=op.matrix.tobytes() if op.matrix is not None else b"",
                metadata=op.metadata,
            )
            for i, op in enumerate(ops)
        ]
        with self._commit_lock:
            if self._wal_uncertain:
                self._resync_wal()
                records = [msgspec.structs.replace(r, seq=self._next_seq + i) for i, r in enumerate(records)]
            try:
                self.wal.append([frame(r) for r in records], records[0].seq)
            except TierDBError as exc:
                return [self._wal_failure(exc)] * len(ops)
            self._next_seq += len(records)
            self.uploader.note_commit(records[-1].seq, time.time())
            with self._rw.write():
                return [self._apply(record, op.matrix) for record, op in zip(records, ops)]

    def _wal_failure(self, exc: TierDBError) -> TierDBError:
        if exc.kind is ErrorKind.PRECONDITION:
            fenced = TierDBError(
                ErrorKind.FENCED,
                f"collection {self.name!r}: WAL record {self._next_seq} was written by another writer; "
                "this node stops writing the collection",
                collection=self.name,
            )
            self.note_failure(fenced, "write")
            return fenced
        if self.policy.wal_in_s3:
            self._wal_uncertain = True  # the PUT may have landed although we saw an error
        return exc

    def _resync_wal(self) -> None:
        """Apply records that a write reported as failed but that did reach the WAL."""
        for record in self.wal.scan(after_seq=self._next_seq - 1):
            with self._rw.write():
                self._apply(record, self._record_matrix(record))
            self._next_seq = record.seq + 1
        self._wal_uncertain = False

    def seal_wal(self) -> None:
        """Close the active WAL file so the uploader can ship it (memory_s3)."""
        with self._commit_lock:
            self.wal.rotate(self._next_seq)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def _apply(self, record: WalRecord, matrix: np.ndarray | None) -> int:
        mem = self.memtable
        if record.op == "upsert":
            assert matrix is not None
            start = mem.append(record.ids, matrix, record.metadata)
            for i, doc_id in enumerate(record.ids):
                old = self._where.get(doc_id)
                if old is not None:
                    old[0].kill(old[1], record.seq)
                self._where[doc_id] = (mem, start + i)
            mem.note_op(record.seq, len(record.ids), 0)
            return len(record.ids)
        deleted = 0
        for doc_id in record.ids:
            old = self._where.pop(doc_id, None)
            if old is not None:
                old[0].kill(old[1], record.seq)
                deleted += 1
        mem.note_op(record.seq, len(record.ids), 64 * len(record.ids))
        return deleted

    def _ids_matching(self, spec: dict, among: list[str] | None) -> list[str]:
        """Live ids whose metadata matches; only those listed in ``among`` when given."""
        predicate = compile_filter(spec, self.settings.server.max_nesting_depth)
        with self._rw.read():
            if among is None:
                candidates = self._where.items()
            else:
                candidates = ((i, self._where[i]) for i in among if i in self._where)
            return [doc_id for doc_id, (src, row) in candidates if predicate(src.metadata[row])]

    # == reads ====================================================================================
    async def get(self, ids: list[str]) -> list[Document]:
        self._check_open()
        _check_ids(ids, allow_duplicates=True)
        return await asyncio.to_thread(self._get_sync, ids)

    def _get_sync(self, ids: list[str]) -> list[Document]:
        found = []
        with self._rw.read():
            for doc_id in ids:
                loc = self._where.get(doc_id)
                if loc is not None:
                    src, row = loc
                    found.append(Document(doc_id, src.raw_vectors()[row].tolist(), src.metadata[row]))
        return found

    async def query(
        self,
        vectors: Any,
        k: int,
        filter: dict | None = None,
        include_metadata: bool = False,
        include_vector: bool = False,
        ef: int | None = None,
    ) -> list[list[Hit]]:
        self._check_open()
        limits = Limits.of(self.settings)
        limits.check_k(k)
        limits.check_ef(ef)
        matrix = as_matrix(vectors, self.spec.dimension, what="query vector")
        predicate = compile_filter(filter, self.settings.server.max_nesting_depth) if filter is not None else None
        started = time.perf_counter()
        hits = await asyncio.to_thread(
            self._query_sync, matrix, k, predicate, filter_key(filter) if filter is not None else "",
            include_metadata, include_vector, ef or self.hnsw.ef_search,
        )
        metrics.QUERIES.labels(collection=self.name).inc(len(matrix))
        metrics.OPERATION_SECONDS.labels(collection=self.name, op="query").observe(time.perf_counter() - started)
        return hits

    def _query_sync(self, queries, k, predicate, fkey, include_metadata, include_vector, ef) -> list[list[Hit]]:
        with self._rw.read():
            found: list[tuple[RowSource, Any]] = []
            for src in (self.memtable, *self.frozen, *self.segments):
                allowed = None
                if predicate is not None:
                    allowed = src.matching_mask(predicate, fkey, cacheable=isinstance(src, segments.Segment))
                    allowed = allowed & src.alive_mask()
                result = src.search(queries, k, ef, allowed)
                if result.rows.shape[1]:
                    found.append((src, result))
            return [self._merge_hits(found, qi, k, include_metadata, include_vector) for qi in range(len(queries))]

    def _merge_hits(self, found, qi: int, k: int, include_metadata: bool, include_vector: bool) -> list[Hit]:
        if not found:
            return []
        if len(found) == 1:  # the common steady state: one segment, already sorted
            src, res = found[0]
            candidates = [(src, row, d) for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist())]
        else:
            candidates = sorted(
                ((src, row, d) for src, res in found for row, d in zip(res.rows[qi].tolist(), res.distances[qi].tolist())),
                key=lambda c: c[2],
            )
        clamp = self.spec.metric != "ip"
        return [
            Hit(
                id=src.ids[row],
                distance=max(d, 0.0) if clamp else d,
                metadata=src.metadata[row] if include_metadata else None,
                vector=src.raw_vectors()[row].tolist() if include_vector else None,
            )
            for src, row, d in candidates[:k]
        ]

    # == flush and merge ==========================================================================
    @property
    def hnsw(self):
        assert self.spec.hnsw is not None
        return self.spec.hnsw

    def _flush_if_due(self) -> None:
        if self._maintenance.locked() or self.flush_reason() is None:
            return
        self._spawn(self.flush())

    def flush_reason(self) -> str | None:
        mem = self.memtable
        return compaction.should_flush(
            compaction.MemtableState(mem.ops, mem.approx_bytes, time.monotonic() - mem.created_monotonic),
            self.settings.compaction,
        )

    async def maybe_compact(self) -> None:
        """The scheduler's periodic check: flush when due, then merge if the policy says so."""
        if self.state != "ready" or self._maintenance.locked() or self.stopping:
            return  # a flush or merge is already running; the next tick looks again
        try:
            if self.flush_reason() is not None:
                await self.flush()
            await self.merge(full=False)
        except TierDBError:
            if self.stopping:
                return  # abandoned for shutdown (logged at INFO); the WAL holds the rows
            raise

    async def compact(self, full: bool = False) -> CompactResult:
        """Flush the memtable and merge segments (all of them when full)."""
        self._check_writable()
        started = time.perf_counter()
        flushed = await self.flush(force=True)
        merged = await self.merge(full=full)
        return CompactResult(
            flushed_rows=flushed,
            merged_segments=merged,
            segments=len(self.segments),
            manifest_version=self.manifest.version if self.manifest else 0,
            duration_secs=round(time.perf_counter() - started, 3),
        )

    async def flush(self, force: bool = False) -> int:
        """Turn the memtable into a segment. Returns the number of rows written."""
        async with self._maintenance:
            if self.state != "ready" or (not force and self.flush_reason() is None) or self.memtable.ops == 0:
                return 0
            try:
                return await self._flush_locked()
            except TierDBError as exc:
                self.note_failure(exc, "flush")
                raise

    async def _flush_locked(self) -> int:
        frozen, frozen_seq = await asyncio.to_thread(self._freeze)
        built = await asyncio.to_thread(self._build_from_memtables, frozen, frozen_seq)
        new_refs = [built.ref] if built else []
        await self._publish(wal_seq=frozen_seq, replace=set(), add=new_refs, built=built)
        await asyncio.to_thread(self._install, built, frozen, set())
        self._after_publish()
        metrics.COMPACTIONS.labels(collection=self.name, kind="flush").inc()
        log.info("memtable flushed", extra={"collection": self.name, "rows": built.ref.rows if built else 0,
                                             "wal_seq": frozen_seq})
        return built.ref.rows if built else 0

    def _freeze(self) -> tuple[list[Memtable], int]:
        """Seal the WAL and set the memtable aside. Earlier frozen memtables whose flush failed
        are flushed again together with it."""
        with self._commit_lock:
            frozen_seq = self._next_seq - 1
            self.wal.rotate(self._next_seq)
            with self._rw.write():
                if self.memtable.ops:
                    self.frozen.append(self.memtable)
                    self.memtable = Memtable(self.spec.metric, self.spec.dimension)
                return list(self.frozen), frozen_seq

    def _build_from_memtables(self, frozen: list[Memtable], frozen_seq: int) -> _Built | None:
        with self._rw.read():
            source_rows = [
                (mem, int(row)) for mem in frozen for row in mem.live_rows(dead_after_seq=frozen_seq)
            ]
        return self._build(source_rows) if source_rows else None

    def _build(self, source_rows: list[tuple[RowSource, int]]) -> _Built:
        ids = [src.ids[row] for src, row in source_rows]
        raw = np.stack([src.raw_vectors()[row] for src, row in source_rows]).astype(np.float32, copy=False)
        metadata = [src.metadata[row] for src, row in source_rows]
        index = None
        if len(ids) >= self.settings.index.threshold:
            try:
                index = segments.build_index(raw, self.spec.metric, self.hnsw, self.settings.index.build_threads,
                                             should_stop=lambda: self._stopping)
            except segments.BuildAbandoned as exc:
                raise unavailable(
                    f"collection {self.name!r} is closing: index build of {len(ids)} rows abandoned ({exc}); "
                    "the rows stay in the WAL and the next start replays them",
                    collection=self.name,
                ) from None
        data = segments.encode(raw, ids, metadata, self.spec.metric, self.hnsw, index)
        seg_id = uuid.uuid4().hex
        seg = segments.Segment(seg_id, self.spec.metric, ids, raw, metadata, index, self.hnsw.ef_search)
        ref = SegmentRef(id=seg_id, rows=len(ids), size=len(data), sha256=_sha256(data), indexed=index is not None)
        return _Built(seg, ref, source_rows, data)

    async def _publish(self, *, wal_seq: int, replace: set[str], add: list[SegmentRef], built: _Built | None) -> None:
        assert self.manifest is not None
        if built is not None:
            await self.store.put(keys.segment_key(self.name, built.ref.id), built.data)
        refs = await asyncio.to_thread(self._refs_as_of, wal_seq, replace)
        new = Manifest(
            version=self.manifest.version + 1,
            spec=self.spec,
            segments=refs + add,
            wal_seq=wal_seq,
            created_at=time.time(),
            writer_id=self.writer_id,
        )
        await manifests.publish(self.store, new)
        self.manifest = new

    def _refs_as_of(self, wal_seq: int, replace: set[str]) -> list[SegmentRef]:
        assert self.manifest is not None
        by_id = {seg.id: seg for seg in self.segments}
        with self._rw.read():
            return [
                msgspec.structs.replace(ref, dead=by_id[ref.id].deaths_up_to(wal_seq))
                for ref in self.manifest.segments
                if ref.id not in replace
            ]

    def _install(self, built: _Built | None, frozen: list[Memtable], replaced: set[str]) -> None:
        """Swap the new segment in for its sources (the only step readers wait for)."""
        gone = [s for s in self.segments if s.id in replaced]
        with self._rw.write():
            if built is not None:
                seg = built.segment
                for new_row, (src, old_row) in enumerate(built.source_rows):
                    died = src.death_seq.get(old_row)
                    if died is not None:
                        seg.kill(new_row, died)
                    else:
                        self._where[seg.ids[new_row]] = (seg, new_row)
                self.segments = [s for s in self.segments if s.id not in replaced] + [seg]
                self._make_evictable(seg)
            else:
                self.segments = [s for s in self.segments if s.id not in replaced]
            for old in gone:
                self._ram_cache.forget(old)
            self.frozen = [mem for mem in self.frozen if mem not in frozen]

    def _after_publish(self) -> None:
        assert self.manifest is not None
        self.last_compaction_ts = time.time()
        self._spawn(self._delete_unreferenced())

    def _spawn(self, coro: Any) -> None:
        """Run maintenance in the background; close() waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never logs "exception never retrieved"
        if isinstance(exc, TierDBError):
            return  # flush and merge log their own failures (note_failure)
        if exc is not None:
            log.error("background maintenance crashed", exc_info=exc, extra={"collection": self.name})

    async def _delete_unreferenced(self) -> None:
        """Local files no longer needed once the manifest is published: covered WAL, old
        manifests, segments the latest manifest does not reference."""
        if not self.policy.local_cleanup:
            return  # objects in S3 are removed by the GC worker after its grace period
        async with self._maintenance:  # no segment is being written while we look for orphans
            await self._delete_unreferenced_locked()

    async def _delete_unreferenced_locked(self) -> None:
        assert self.manifest is not None
        current = self.manifest
        await asyncio.to_thread(self.wal.remove_covered, self.wal_floor())
        live = {ref.id for ref in current.segments}
        for info in await self.store.list(keys.segment_prefix(self.name)):
            seg_id = keys.segment_id_of(info.key)
            if seg_id not in live:
                await self.store.delete(info.key)
        for version in await manifests.versions(self.store, self.name):
            if version < current.version:
                await self.store.delete(keys.manifest_key(self.name, version))

    async def merge(self, full: bool = False) -> int:
        """Merge segments chosen by the size-tiered policy (all when full). Returns how many."""
        async with self._maintenance:
            if self.state != "ready":
                return 0
            states = [compaction.SegmentState(s.id, s.size(), s.live_count()) for s in self.segments]
            chosen = set(compaction.plan_merge(states, self.settings.compaction, full=full))
            if not chosen:
                return 0
            try:
                await self._merge_locked(chosen)
            except TierDBError as exc:
                self.note_failure(exc, "merge")
                raise
            return len(chosen)

    async def _merge_locked(self, chosen: set[str]) -> None:
        assert self.manifest is not None
        wal_seq = self.manifest.wal_seq
        built = await asyncio.to_thread(self._build_from_segments, chosen, wal_seq)
        await self._publish(wal_seq=wal_seq, replace=chosen, add=[built.ref] if built else [], built=built)
        await asyncio.to_thread(self._install, built, [], chosen)
        self._after_publish()
        metrics.COMPACTIONS.labels(collection=self.name, kind="merge").inc()
        log.info("segments merged", extra={"collection": self.name, "merged": len(chosen),
                                            "rows": built.ref.rows if built else 0})

    def _build_from_segments(self, chosen: set[str], wal_seq: int) -> _Built | None:
        source_rows: list[tuple[RowSource, int]] = []
        with self._rw.read():
            for seg in self.segments:
                if seg.id in chosen:
                    purged = {r for r, s in seg.death_seq.items() if s <= wal_seq}
                    source_rows.extend((seg, r) for r in range(seg.size()) if r not in purged)
        if not source_rows:
            return None
        return self._build(source_rows)

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

    # == RAM tier ===========================================================================
    def attach_ram_cache(self, cache: SegmentCache, loop: asyncio.AbstractEventLoop) -> None:
        """Bound the RAM of this collection's segments: evicted ones reload from the store."""
        self._ram_cache = cache
        self._loop = loop
        for seg in self.segments:
            self._make_evictable(seg)

    def _make_evictable(self, seg: segments.Segment) -> None:
        key = keys.segment_key(self.name, seg.id)

        def load() -> segments.Segment:
            assert self._loop is not None  # set with the bounded cache, the only one that evicts
            data = asyncio.run_coroutine_threadsafe(self.store.get(key), self._loop).result()
            return segments.decode(seg.id, data)

        self._ram_cache.adopt(seg, load)

    # == dead-letter queue (empty unless the node attached one) =============================================================
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
        return len(self._where)

    def ids(self) -> list[str]:
        """Every live id (a snapshot)."""
        with self._rw.read():
            return list(self._where)

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
            cache_bytes_ram=sum(s.nbytes() for s in self.segments),
            error=self.error,
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
            self.segments = []
            self.frozen = []
            self._where = {}
            self.memtable = Memtable(self.spec.metric, self.spec.dimension)
            self.state = "closed"


def _check_ids(ids: list[str], *, allow_duplicates: bool = False) -> None:
    if not isinstance(ids, list) or not ids:
        raise invalid("ids must be a non-empty list of strings", field="ids")
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise invalid(f"id at position {i} is empty or not a string", field="ids")
        if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise invalid(f"id at position {i} is longer than {MAX_ID_BYTES} bytes", field="ids")
        if not allow_duplicates:
            if doc_id in seen:
                raise invalid(f"duplicate id {doc_id!r} in one batch", field="ids")
            seen.add(doc_id)


_metadata_encoder = msgspec.msgpack.Encoder()


def _check_metadata(ids: list[str], metadata: list[dict | None], max_depth: int) -> None:
    for i, md in enumerate(metadata):
        if md is None:
            continue
        if not isinstance(md, dict):
            raise invalid(f"metadata of document {i} ({ids[i]!r}) must be a JSON object or null")
        check_json_value(md, f"documents[{i}].metadata", max_depth)
        try:
            _metadata_encoder.encode(md)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. a lone surrogate in a str
            raise invalid(f"metadata of document {i} ({ids[i]!r}) cannot be stored: {exc}") from exc


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
