"""Domain types shared by the engine, the API and the workers. No I/O here."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from .errors import invalid

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_ID_BYTES = 256
MAX_DIMENSION = 4096

Metric = Literal["cosine", "l2", "ip"]
METRICS: tuple[str, ...] = ("cosine", "l2", "ip")

POLICIES: tuple[str, ...] = ("memory", "memory_s3", "s3_only")
_POLICY_ALIASES = {"Memory": "memory", "MemoryS3": "memory_s3", "S3Only": "s3_only"}


def normalize_policy(value: str) -> str:
    """Canonical policy name; accepts the seed spellings Memory, MemoryS3, S3Only."""
    policy = _POLICY_ALIASES.get(value, value)
    if policy not in POLICIES:
        raise invalid(
            f"unknown tiering_policy {value!r}: expected one of {', '.join(POLICIES)}",
            field="tiering_policy",
        )
    return policy


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise invalid(
            f"invalid collection name {name!r}: must match ^[a-z0-9][a-z0-9_-]{{0,62}}$",
            field="name",
        )
    return name


class HnswParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128

    def validate(self) -> "HnswParams":
        if not 2 <= self.m <= 128:
            raise invalid(f"hnsw.m must be between 2 and 128, got {self.m}", field="hnsw.m")
        if not 1 <= self.ef_construction <= 4096:
            raise invalid(
                f"hnsw.ef_construction must be between 1 and 4096, got {self.ef_construction}",
                field="hnsw.ef_construction",
            )
        if not 1 <= self.ef_search <= 4096:
            raise invalid(
                f"hnsw.ef_search must be between 1 and 4096, got {self.ef_search}",
                field="hnsw.ef_search",
            )
        return self


class CollectionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    dimension: int
    metric: str = "cosine"
    tiering_policy: str = ""       # "" = the server's default policy
    hnsw: HnswParams | None = None   # None = the server's index defaults
    created_at: float = 0.0
    # Random id of this incarnation, set at create: a collection dropped or replaced and created
    # again under the same name is another incarnation, and never adopts the old one's manifests.
    incarnation: str = ""

    def validate(self) -> "CollectionSpec":
        validate_collection_name(self.name)
        if not isinstance(self.dimension, int) or not 1 <= self.dimension <= MAX_DIMENSION:
            raise invalid(
                f"dimension must be an integer between 1 and {MAX_DIMENSION}, got {self.dimension!r}",
                field="dimension",
            )
        if self.metric not in METRICS:
            raise invalid(
                f"unknown metric {self.metric!r}: expected one of {', '.join(METRICS)}",
                field="metric",
            )
        if self.tiering_policy:
            normalize_policy(self.tiering_policy)
        if self.hnsw is not None:
            self.hnsw.validate()
        return self


class SegmentRef(msgspec.Struct, frozen=True):
    """A live segment as the manifest records it."""

    id: str
    rows: int                      # rows stored in the segment file
    size: int                      # bytes of the segment object
    sha256: str                    # of the whole object
    indexed: bool                  # carries an hnswlib index (else brute force)
    dead: list[int] = []           # rows deleted or shadowed since the segment was written


class Manifest(msgspec.Struct, frozen=True):
    """One version of a collection's state. Published copy-on-write, never edited."""

    version: int
    spec: CollectionSpec
    segments: list[SegmentRef]
    wal_seq: int                   # every WAL record with seq <= wal_seq is in the segments
    created_at: float
    writer_id: str = ""


class Document(msgspec.Struct, frozen=True):
    id: str
    vector: list[float]
    metadata: dict[str, Any] | None = None


class Hit(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    distance: float
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class CollectionInfo(msgspec.Struct, frozen=True):
    name: str
    dimension: int
    metric: str
    tiering_policy: str
    hnsw: HnswParams
    count: int
    segments: int
    manifest_version: int
    created_at: float


class CollectionStats(msgspec.Struct):
    """Point-in-time numbers for /metrics gauges and the admin status endpoint."""

    name: str
    policy: str
    count: int = 0
    segments: int = 0
    manifest_version: int = 0
    wal_seq: int = 0                 # last acknowledged WAL record
    wal_bytes: int = 0               # bytes of WAL not yet covered by a segment
    memtable_rows: int = 0
    state: str = "ready"             # recovering | ready | fenced | failed
    last_snapshot_ts: float = 0.0    # when the last manifest was published
    last_compaction_ts: float = 0.0
    upload_queue_size: int = 0
    upload_lag_secs: float = 0.0
    upload_lag_bytes: int = 0
    dlq_size: int = 0
    fenced: bool = False
    cache_bytes_ram: int = 0
    cache_bytes_disk: int = 0
    error: str = ""


class DlqEntry(msgspec.Struct, frozen=True):
    """An upload that failed permanently or ran out of retries; the data stays on local disk."""

    object: str                      # the object key that could not be uploaded
    error: str
    code: str = ""                   # S3 error code or HTTP status, when known
    attempts: int = 1
    permanent: bool = False          # True: not retryable (auth, missing bucket, ...)
    first_failed_at: float = 0.0
    last_failed_at: float = 0.0
