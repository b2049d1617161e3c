"""Result types shared by the HTTP clients and the embedded mode.

They are msgspec Structs: attribute access, ``==``, cheap to build, and
``msgspec.structs.asdict(obj)`` / ``msgspec.to_builtins(obj)`` for plain dicts and JSON.  Fields
the server may add later are ignored when decoding, so an older client keeps working against a
newer server.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..models import CompactResult, DlqEntry, WarmStatus  # the server's own wire types: one definition for both sides
from ..tiering import DEFAULT_POLICY


class HnswParams(msgspec.Struct, frozen=True):
    """HNSW index parameters of a collection."""

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128


class CollectionInfo(msgspec.Struct, frozen=True):
    """A collection: its spec and how many documents it holds."""

    name: str
    dimension: int
    metric: str = "cosine"
    tiering_policy: str = DEFAULT_POLICY
    hnsw: HnswParams = HnswParams()
    count: int = 0
    segments: int = 0
    manifest_version: int = 0
    created_at: float = 0.0


class Document(msgspec.Struct, frozen=True):
    """A stored document. ``vector`` is a list of floats (the float32 values stored)."""

    id: str
    vector: list[float]
    metadata: dict[str, Any] | None = None


class Hit(msgspec.Struct, frozen=True):
    """One query result. ``metadata`` / ``vector`` are None unless asked for with ``include``."""

    id: str
    distance: float
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class CollectionStatus(msgspec.Struct, frozen=True):
    """Operational status of a collection (admin API): WAL, segments, uploads, DLQ, caches."""

    name: str
    policy: str = ""
    count: int = 0
    segments: int = 0
    manifest_version: int = 0
    wal_seq: int = 0
    wal_bytes: int = 0
    memtable_rows: int = 0
    state: str = "ready"               # recovering | ready | fenced | failed
    last_snapshot_ts: float = 0.0
    last_compaction_ts: float = 0.0
    upload_queue_size: int = 0
    upload_lag_secs: float = 0.0
    upload_lag_bytes: int = 0
    upload_failures: int = 0
    upload_error: str = ""
    upload_retry_in_secs: float = 0.0
    dlq_size: int = 0
    fenced: bool = False
    cache_bytes_ram: int = 0
    cache_bytes_disk: int = 0
    error: str = ""
    warm: WarmStatus = msgspec.field(default_factory=WarmStatus)  # pre-fetch into the disk cache


# -- response envelopes (wire only) --------------------------------------------------------------


class _CollectionList(msgspec.Struct, frozen=True):
    collections: list[CollectionInfo]


class _Upserted(msgspec.Struct, frozen=True):
    upserted: int


class _Deleted(msgspec.Struct, frozen=True):
    deleted: int


class _Documents(msgspec.Struct, frozen=True):
    documents: list[Document]


class _Hits(msgspec.Struct, frozen=True):
    results: list[Hit]


class _BatchHits(msgspec.Struct, frozen=True):
    results: list[list[Hit]]


class _DlqList(msgspec.Struct, frozen=True):
    entries: list[DlqEntry]


class _Retried(msgspec.Struct, frozen=True):
    retried: int


class _Cleared(msgspec.Struct, frozen=True):
    cleared: int


__all__ = [
    "CollectionInfo",
    "CollectionStatus",
    "CompactResult",
    "DlqEntry",
    "Document",
    "Hit",
    "HnswParams",
    "WarmStatus",
]
