"""The write path of a collection: validate, commit a batch to the WAL, apply it to the memtable.

Writes go through a GroupCommitter: one worker thread at a time frames the batch into the WAL,
makes it durable, then applies it under the write side of ``_rw``.  A write is visible only once
it is durable, and acknowledged only after that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from .. import metrics
from ..errors import ErrorKind, TierDBError, fenced, invalid, still_fenced, unavailable
from ..models import check_new_ids
from .filters import compile_filter
from .partition_access import PartitionAccessMixin
from .rows import RowSource
from .validation import check_ids, check_metadata
from .vectors import as_matrix
from .wal import WalRecord, claim_record, claimed_by, frame


@dataclass
class WriteOp:
    kind: str                                   # "upsert" | "delete" | "delete_filter"
    ids: list[str]
    matrix: np.ndarray | None = None
    metadata: list[dict | None] = field(default_factory=list)
    filter: dict | None = None


class WritesMixin(PartitionAccessMixin):
    async def upsert(self, ids: list[str], vectors: Any, metadata: list[dict | None] | None = None) -> int:
        self._check_writable()
        check_ids(ids)
        check_new_ids(ids)
        matrix = as_matrix(vectors, self.spec.dimension)
        if len(matrix) != len(ids):
            raise invalid(f"got {len(ids)} ids but {len(matrix)} vectors")
        if metadata is None:
            metadata = [None] * len(ids)
        elif len(metadata) != len(ids):
            raise invalid(f"got {len(ids)} ids but {len(metadata)} metadata entries")
        check_metadata(ids, metadata, self.settings.server.max_nesting_depth)
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
            check_ids(ids)
        if filter is None:
            op = WriteOp("delete", list(ids or []))
        else:
            compile_filter(filter, self.settings.server.max_nesting_depth)  # validate before anything is written
            op = WriteOp("delete_filter", list(ids) if ids is not None else [], filter=filter)
        results = await self._committer.submit(op)
        metrics.DELETES.labels(collection=self.name).inc(results)
        self._flush_if_due()
        return results

    def _check_writable(self) -> None:
        if self.state == "fenced":
            raise still_fenced(self.name, self.error)
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
            lost = fenced(self.name, f"WAL record {self._next_seq}")
            self.note_failure(lost, "write")
            return lost
        if self.policy.wal_in_s3:
            self._wal_uncertain = True  # the PUT may have landed although we saw an error
        return exc

    def _resync_wal(self) -> None:
        """Apply records that a write reported as failed but that did reach the WAL.  Another
        writer's claim marker among them means this node lost the collection: fenced."""
        for record in self.wal.scan(after_seq=self._next_seq - 1):
            claimer = claimed_by(record)
            if claimer is not None and claimer != self.writer_id:
                lost = fenced(self.name, f"WAL record {record.seq} (claimed by writer {claimer})")
                self.note_failure(lost, "write")
                raise lost
            with self._rw.write():
                self._apply(record, self._record_matrix(record))
            self._next_seq = record.seq + 1
        self._wal_uncertain = False

    def append_claim_marker(self) -> int:
        """Handover (s3_only): take the next WAL position with this writer's claim marker; its seq.

        Whatever the previous writer got into the WAL first (each of its objects is put-if-absent
        at the next position) is applied before the marker, so every write it had acknowledged is
        kept; once the marker is in, its next WAL put is refused (412) and it is fenced.  Runs in
        a worker thread before the collection accepts writes."""
        with self._commit_lock:
            while True:
                self._resync_wal()
                record = claim_record(self._next_seq, self.writer_id)
                try:
                    self.wal.append([frame(record)], record.seq)
                except TierDBError as exc:
                    if exc.kind is ErrorKind.PRECONDITION:
                        continue        # the previous writer took this position: apply it, go on
                    raise
                with self._rw.write():
                    self._apply(record, None)
                self._next_seq = record.seq + 1
                return record.seq

    def seal_wal(self) -> None:
        """Close the active WAL file so the uploader can ship it (memory_s3)."""
        with self._commit_lock:
            self.wal.rotate(self._next_seq)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def _apply(self, record: WalRecord, matrix: np.ndarray | None) -> int:
        mem = self.memtable
        in_partitions = self._in_partitioned_segments(record.ids)
        if record.op == "upsert":
            assert matrix is not None
            start = mem.append(record.ids, matrix, record.metadata)
            for i, doc_id in enumerate(record.ids):
                old = self._where.get(doc_id) or in_partitions.pop(doc_id, None)
                if old is not None:
                    old[0].kill(old[1], record.seq)
                self._where[doc_id] = (mem, start + i)
            mem.note_op(record.seq, len(record.ids), 0)
            return len(record.ids)
        if claimed_by(record) is not None:
            mem.note_op(record.seq, 0, 0)   # a handover marker: no data, only a position
            return 0
        deleted = 0
        for doc_id in record.ids:
            old = self._where.pop(doc_id, None) or in_partitions.pop(doc_id, None)
            if old is not None:
                old[0].kill(old[1], record.seq)
                deleted += 1
        mem.note_op(record.seq, len(record.ids), 64 * len(record.ids))
        return deleted

    def _in_partitioned_segments(self, ids: list[str]) -> dict[str, tuple[RowSource, int]]:
        """Where ids not in ``_where`` are live in partitioned segments (s3_only), if anywhere."""
        if not self.partitioned_sources:
            return {}
        return self._locate_partitioned([i for i in ids if i not in self._where])

    def _ids_matching(self, spec: dict, among: list[str] | None) -> list[str]:
        """Live ids whose metadata matches; only those listed in ``among`` when given."""
        predicate = compile_filter(spec, self.settings.server.max_nesting_depth)
        with self._rw.read():
            if among is not None:
                candidates = [(i, self._where[i]) for i in among if i in self._where]
                candidates += self._in_partitioned_segments(among).items()
                return [doc_id for doc_id, (src, row) in candidates if predicate(src.metadata[row])]
            matching = [doc_id for doc_id, (src, row) in self._where.items() if predicate(src.metadata[row])]
            for _, part, live in self._live_partitioned():
                ids, metadata = part.ids, part.metadata
                matching.extend(ids[i] for i in live.tolist() if predicate(metadata[i]))
            return matching

    def _record_matrix(self, record: WalRecord) -> np.ndarray | None:
        if record.op != "upsert":
            return None
        return np.frombuffer(record.vectors, dtype=np.float32).reshape(len(record.ids), self.spec.dimension)
