"""The state every part of a collection shares (declared here, set in ``Collection.__init__``).

Locking rules
- ``_rw`` guards ``_where``, ``memtable``, ``frozen`` and ``segments``: queries and gets take the
  read side; applying a write batch and installing a built segment take the write side.
- ``_commit_lock`` orders WAL appends (and the apply that follows) against WAL rotation.
- ``_maintenance`` lets one flush, merge or local cleanup run at a time.
- ``_where`` maps every live id to exactly one (source, row); everything else is dead.

The mixins also use what ``Collection`` wires in for the tier and the workers: ``policy``,
``uploader``, ``_ram_cache``, ``_make_evictable``, ``note_failure``, ``wal_floor``, ``stopping``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..config import Settings
from ..models import CollectionSpec, HnswParams, Manifest
from ..storage.base import BlobStore
from .group_commit import GroupCommitter
from .memtable import Memtable
from .rows import RowSource
from .rwlock import RWLock
from .segment import Segment
from .wal import Wal


class CollectionState:
    spec: CollectionSpec
    name: str
    store: BlobStore
    wal: Wal
    settings: Settings
    writer_id: str
    manifest: Manifest | None
    memtable: Memtable
    frozen: list[Memtable]
    segments: list[Segment]
    _where: dict[str, tuple[RowSource, int]]
    _rw: RWLock
    _commit_lock: threading.Lock
    _next_seq: int                              # the seq of the next WAL record
    _committer: GroupCommitter[Any]           # of writes.WriteOp
    _wal_uncertain: bool                        # a failed remote WAL write may have landed
    _maintenance: asyncio.Lock
    _background: set[asyncio.Task[Any]]
    _stopping: bool
    state: str                                  # recovering | ready | fenced | closing | closed
    error: str
    last_compaction_ts: float

    @property
    def hnsw(self) -> HnswParams:
        assert self.spec.hnsw is not None
        return self.spec.hnsw
