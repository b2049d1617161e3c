"""Maintenance of a collection: flush the memtable to a segment, merge segments, publish the new
manifest, install the result, and delete local files no manifest needs.

Flush and merge build segments without any lock, publish the new manifest, then swap the
in-memory state under the write lock (the only pause a reader or writer can see).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from .. import keys, metrics
from ..crashpoints import crash_point
from ..errors import TierDBError, corrupt, unavailable
from ..models import CompactResult, Manifest, SegmentRef
from ..process_memory import release_freed_memory
from . import compaction, partitioned, partitioned_build
from . import manifest as manifests
from . import segment as segments
from .collection_state import CollectionState
from .memtable import Memtable
from .partitioned_build import Run
from .partitioned_source import PartitionedSource
from .rows import RowSource

log = logging.getLogger(__name__)

# A flush or merge of at least this many rows trims the heap afterwards (malloc_trim).
_TRIM_AFTER_ROWS = 50_000

# crash points (tierdb/crashpoints.py) inside flush and merge
MAINTENANCE_STEPS = ("maintenance:segment_stored", "maintenance:manifest_published")


@dataclass
class _Built:
    segment: RowSource                         # a Segment, or a PartitionedSource (s3_only)
    ref: SegmentRef
    source_rows: list[tuple[RowSource, int]]   # for each new row: where it came from (hnswlib layout)
    data: bytes | None                         # the encoded segment object, in RAM ...
    grown_from: str | None = None              # the segment whose index was grown (it is replaced)
    runs: list[Run] | None = None              # partitioned layout: the rows it was built from ...
    order: np.ndarray | None = None            # ... and, per new row, its position among them
    file: partitioned_build.PartitionedBuild | None = None   # ... or in a scratch file (partitioned)

    def discard(self) -> None:
        """Remove the scratch file, once uploaded or abandoned."""
        if self.file is not None:
            self.file.discard()


class MaintenanceMixin(CollectionState):
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
        replaced = {built.grown_from} if built and built.grown_from else set()
        try:
            await self._publish(wal_seq=frozen_seq, replace=replaced, add=new_refs, built=built)
        finally:
            if built is not None:
                built.discard()
        await asyncio.to_thread(self._install, built, frozen, replaced)
        self._after_publish(built.ref.rows if built else 0)
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
        if self.policy.partitioned_segments:
            with self._rw.read():
                runs: list[Run] = [(mem, mem.live_rows(dead_after_seq=frozen_seq)) for mem in frozen]
            return self._build_partitioned(runs)
        with self._rw.read():
            source_rows: list[tuple[RowSource, int]] = [
                (mem, int(row)) for mem in frozen for row in mem.live_rows(dead_after_seq=frozen_seq)
            ]
            base_id = compaction.flush_growth_base(
                [compaction.SegmentState(s.id, s.size(), s.live_count(), s.indexed) for s in self.segments],
                len(source_rows), self.settings.index.threshold, self.settings.compaction,
            ) if self.policy.grows_on_flush else None
            base = next((seg for seg in self.segments if seg.id == base_id), None)
            if base is not None:  # flush = grow: the base's rows first, numbers kept
                source_rows = [(base, r) for r in range(base.size())] + source_rows
        return self._build(source_rows, base, frozen_seq) if source_rows else None

    def _build(self, source_rows: list[tuple[RowSource, int]], base: segments.Segment | None = None,
               wal_seq: int = 0) -> _Built:
        """A new segment holding ``source_rows`` in order.  With a ``base`` segment (whose rows
        all come first, in order) its index is grown by the other rows instead of built anew;
        the base's rows dead as of ``wal_seq`` stay as tombstones, recorded in the ref."""
        ids = [src.ids[row] for src, row in source_rows]
        raw, metadata = _gather(source_rows)
        index, dead = None, []
        try:
            if base is not None:
                index, dead = self._grow(base, raw[base.size():], wal_seq)
            elif len(ids) >= self.settings.index.threshold:
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
        ref = SegmentRef(id=seg_id, rows=len(ids), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         indexed=index is not None, dead=dead)
        return _Built(seg, ref, source_rows, data, base.id if base is not None else None)

    def _build_partitioned(self, runs: list[Run]) -> _Built | None:
        """A partitioned segment of the runs' rows (no lock held: rows never change, and deaths
        that happen meanwhile are carried over by _install)."""
        runs = [(src, np.asarray(rows, np.int64)) for src, rows in runs if len(rows)]
        if not runs:
            return None
        part = self.settings.partitions
        started = time.perf_counter()
        built = partitioned_build.build(
            runs, self.spec.metric, self.spec.dimension,
            partitioned.PartitionSettings(rows_per_partition=part.rows_per_partition,
                                          build_memory_bytes=part.build_memory_bytes),
            spill_dir=keys.scratch_dir(self.settings.storage.data_dir),
        )
        seg_id = uuid.uuid4().hex
        try:
            source = self._source_of(partitioned.open_header(built.head, seg_id), built.size)
        except BaseException:
            built.discard()
            raise
        ref = SegmentRef(id=seg_id, rows=built.rows, size=built.size, sha256=built.sha256, indexed=False,
                         layout="partitioned")
        log.info("partitioned segment built", extra={"collection": self.name, "segment": seg_id, "rows": built.rows,
                                                     "partitions": source.nlist, "bytes": built.size,
                                                     "secs": round(time.perf_counter() - started, 3)})
        return _Built(source, ref, [], built.data, runs=runs, order=built.order, file=built)

    def _grow(self, base: segments.Segment, new_raw: np.ndarray, wal_seq: int) -> tuple[Any, list[int]]:
        """A clone of ``base``'s index grown by ``new_raw``, and the base rows dead as of
        ``wal_seq`` (tombstones the new segment's manifest entry records)."""
        source = base.index
        if source is None or source.element_count != base.size():
            # labels are row numbers: appended rows must continue the base's numbering exactly
            raise corrupt(f"collection {self.name!r}: segment {base.id} has no index of its {base.size()} rows to grow",
                          collection=self.name, segment=base.id)
        started = time.perf_counter()
        index = segments.clone_index(source, base.size() + len(new_raw))
        with self._rw.read():  # after the clone, so every mark it copied is listed here
            marked = list(base.death_seq)
            dead = base.deaths_up_to(wal_seq)
        # The saved index carries no marks: _install (and recovery, from the ref) re-apply them.
        segments.clear_deletions(index, marked)
        segments.grow_index(index, new_raw, self.hnsw, self.settings.index.build_threads,
                            should_stop=lambda: self._stopping)
        log.info("segment index grown", extra={"collection": self.name, "base": base.id, "base_rows": base.size(),
                                               "added_rows": len(new_raw), "tombstones": len(dead),
                                               "secs": round(time.perf_counter() - started, 3)})
        return index, dead

    async def _publish(self, *, wal_seq: int, replace: set[str], add: list[SegmentRef], built: _Built | None) -> None:
        assert self.manifest is not None
        if built is not None:
            key = keys.segment_key(self.name, built.ref.id)
            if built.file is not None and built.file.path is not None:
                await self.store.put_file(key, built.file.path)   # multipart: never whole in RAM
            else:
                assert built.data is not None
                await self.store.put(key, built.data)
            crash_point("maintenance:segment_stored")
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
        crash_point("maintenance:manifest_published")
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
            if built is not None and built.runs is not None:
                self._adopt_partitioned(built)
                self.segments = [s for s in self.segments if s.id not in replaced] + [built.segment]
            elif built is not None:
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
                self._partition_cache.forget_segment(self.name, old.id)
            self.frozen = [mem for mem in self.frozen if mem not in frozen]

    def _adopt_partitioned(self, built: _Built) -> None:
        """Under the write lock: rows that died since the build die in the new segment too, and
        the live ones leave ``_where`` (a partitioned segment's ids are found by hash)."""
        assert built.runs is not None and built.order is not None
        seg = built.segment
        new_row = np.empty(len(built.order), np.int64)
        new_row[built.order] = np.arange(len(built.order))
        offset = 0
        for src, rows in built.runs:
            positions = new_row[offset : offset + len(rows)]
            for row, died in src.death_seq.items():
                i = int(np.searchsorted(rows, row))
                if i < len(rows) and rows[i] == row:
                    seg.kill(int(positions[i]), died)
            if not isinstance(src, PartitionedSource):
                ids = src.ids
                for row in rows.tolist():
                    doc_id = ids[row]
                    loc = self._where.get(doc_id)
                    if loc is not None and loc[0] is src and loc[1] == row:
                        del self._where[doc_id]
            offset += len(rows)

    def _after_publish(self, rows: int = 0) -> None:
        assert self.manifest is not None
        self.last_compaction_ts = time.time()
        self._spawn(self._delete_unreferenced())
        if rows >= _TRIM_AFTER_ROWS:  # a big build's freed heap back to the OS (not after every small flush)
            self._spawn(asyncio.to_thread(release_freed_memory, False))

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
            states = await asyncio.to_thread(self._merge_states)
            chosen = set(compaction.plan_merge(states, self.settings.compaction, full=full,
                                               max_rows=self._max_segment_rows()))
            if not chosen:
                return 0
            try:
                await self._merge_locked(chosen)
            except TierDBError as exc:
                self.note_failure(exc, "merge")
                raise
            return len(chosen)

    def _merge_states(self) -> list[compaction.SegmentState]:
        """The segments as the merge policy sees them.  A row counts as dead only once a merge
        can purge it (it died by the manifest's WAL position): counting deaths still in the
        memtable made a "too dead" segment that its own rewrite could not shrink, rewritten
        again at every tick, each time a new manifest."""
        assert self.manifest is not None
        wal_seq = self.manifest.wal_seq
        with self._rw.read():
            return [compaction.SegmentState(s.id, s.size(), s.rows_after_purge(wal_seq)) for s in self.segments]

    def _max_segment_rows(self) -> int | None:
        """Partitioned segments: merges stop at this size (a merge holds its rows' ids and metadata
        in RAM, and recall at a given nprobe falls with every extra segment)."""
        return self.settings.partitions.max_segment_rows if self.policy.partitioned_segments else None

    async def _merge_locked(self, chosen: set[str]) -> None:
        assert self.manifest is not None
        wal_seq = self.manifest.wal_seq
        built = await asyncio.to_thread(self._build_from_segments, chosen, wal_seq)
        try:
            await self._publish(wal_seq=wal_seq, replace=chosen, add=[built.ref] if built else [], built=built)
        finally:
            if built is not None:
                built.discard()
        await asyncio.to_thread(self._install, built, [], chosen)
        self._after_publish(built.ref.rows if built else 0)
        metrics.COMPACTIONS.labels(collection=self.name, kind="merge").inc()
        log.info("segments merged", extra={"collection": self.name, "merged": len(chosen),
                                            "rows": built.ref.rows if built else 0})

    def _build_from_segments(self, chosen: set[str], wal_seq: int) -> _Built | None:
        if self.policy.partitioned_segments:
            with self._rw.read():
                runs: list[Run] = []
                for seg in self.segments:
                    if seg.id in chosen:
                        purged = np.array(seg.deaths_up_to(wal_seq), np.int64)
                        runs.append((seg, np.setdiff1d(np.arange(seg.size()), purged, assume_unique=True)))
            return self._build_partitioned(runs)
        with self._rw.read():
            members = [seg for seg in self.segments if seg.id in chosen]
            base_id = compaction.growth_base(
                [compaction.SegmentState(s.id, s.size(), s.live_count(), s.indexed) for s in members],
                self.settings.compaction,
            )
            base = next((seg for seg in members if seg.id == base_id), None)
            source_rows: list[tuple[RowSource, int]] = []
            if base is not None:  # every base row keeps its number; its dead ones become tombstones
                source_rows.extend((base, r) for r in range(base.size()))
            for seg in members:
                if seg is not base:
                    purged = {r for r, s in seg.death_seq.items() if s <= wal_seq}
                    source_rows.extend((seg, r) for r in range(seg.size()) if r not in purged)
        if not source_rows:
            return None
        return self._build(source_rows, base, wal_seq)


def _gather(source_rows: list[tuple[RowSource, int]]) -> tuple[np.ndarray, list[dict | None]]:
    """The vectors (one float32 matrix) and metadata of ``source_rows``, read per run of rows
    from the same source (one ``vectors_of`` call per run, not per row; dead rows of an indexed
    segment included, which a grown base keeps as tombstones)."""
    parts, metadata = [], []
    for src, run in itertools.groupby(source_rows, key=lambda item: item[0]):
        rows = np.fromiter((row for _, row in run), dtype=np.int64)
        parts.append(src.vectors_of(rows))  # indexed segments read them back from their index
        source_metadata = src.metadata
        metadata.extend(source_metadata[row] for row in rows.tolist())
    return np.concatenate(parts).astype(np.float32, copy=False), metadata
