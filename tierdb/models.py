"""Domain types shared by the engine, the API and the workers. No I/O here."""

from __future__ import annotations

import datetime
import math
import re
from typing import Any, Literal

import msgspec

from .errors import invalid
from .tiering import normalize_policy  # noqa: F401 - CollectionSpec validates with it; importers use it here

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_ID_BYTES = 256
MAX_DIMENSION = 4096
# Default of server.max_nesting_depth: objects/arrays nested inside one metadata value or filter.
DEFAULT_MAX_NESTING_DEPTH = 64
NESTING_SETTING = "server.max_nesting_depth"
# Ids the single-document route GET .../documents/{id} cannot address (see check_new_ids).
RESERVED_IDS = frozenset({".", "..", "get", "delete"})
_ID_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1   # what msgpack (WAL, segments) can store

Metric = Literal["cosine", "l2", "ip"]
METRICS: tuple[str, ...] = ("cosine", "l2", "ip")


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise invalid(
            f"invalid collection name {name!r}: must match ^[a-z0-9][a-z0-9_-]{{0,62}}$",
            field="name",
        )
    return name


def check_new_ids(ids: list[str]) -> None:
    """Ids a write may create: every id must stay reachable by every route, so no ``/`` (servers
    decode ``%2F`` before routing), no control characters, not ``.``/``..`` (clients collapse dot
    segments) and not ``get``/``delete`` (the POST routes beside ``/documents/{id}``).

    Reads and deletes accept any string, so documents stored before this rule stay reachable
    through POST .../documents/get and .../documents/delete.
    """
    for i, doc_id in enumerate(ids):
        problem = None
        if "/" in doc_id:
            problem = "must not contain '/'"
        elif _ID_CONTROL_CHARS.search(doc_id):
            problem = "must not contain control characters (U+0000-U+001F, U+007F)"
        elif doc_id in RESERVED_IDS:
            problem = f"is reserved (not addressable as GET .../documents/{doc_id})"
        if problem:
            raise invalid(f"documents[{i}].id {doc_id!r} {problem}", field=f"documents[{i}].id")


def check_json_value(value: Any, where: str, max_depth: int, depth: int = 0) -> None:
    """``value`` must read back identically as JSON: objects with string keys, arrays, strings,
    finite floats, 64-bit integers, booleans and null, with containers nested at most
    ``max_depth`` deep (the value itself counts as level 1 when it is an object or array).
    ``where`` names ``value`` in the error (``documents[3].metadata``), extended per level.
    """
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise invalid(f"{where}: integer {value} does not fit in 64 bits", field=where)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise invalid(f"{where}: NaN and infinity are not allowed (not representable in JSON)", field=where)
        return
    if isinstance(value, (dict, list, tuple)):
        depth += 1
        if depth > max_depth:
            raise invalid(
                f"{where}: nested deeper than {max_depth} levels of objects/arrays ({NESTING_SETTING})",
                field=where, limit=max_depth,
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise invalid(
                        f"{where}: object keys must be strings, got {_kind(key)} key {key!r}", field=where
                    )
                check_json_value(item, f"{where}.{key}", max_depth, depth)
        else:
            for i, item in enumerate(value):
                check_json_value(item, f"{where}[{i}]", max_depth, depth)
        return
    raise invalid(f"{where}: {_kind(value)} is not allowed (only JSON values)", field=where)


def _kind(value: Any) -> str:
    """How a client would name the type of ``value`` (msgpack decodes ext -1 as datetime)."""
    if value is None:
        return "null"
    if isinstance(value, msgspec.msgpack.Ext):
        return f"msgpack ext type {value.code}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary (msgpack bin)"
    if isinstance(value, datetime.datetime):
        return "timestamp (msgpack ext type -1)"
    return {bool: "boolean", int: "integer", float: "float", str: "string", tuple: "array", list: "array"}.get(
        type(value), f"value of type {type(value).__name__}"
    )


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
    layout: str = "hnsw"           # "hnsw" (segment.py) | "partitioned" (partitioned.py, IVF)


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


class WarmStatus(msgspec.Struct):
    """Progress of pre-fetching a collection's segments into the node's disk cache."""

    state: str = "idle"              # idle | running | done | failed
    segments_total: int = 0
    segments_done: int = 0
    bytes_total: int = 0
    bytes_fetched: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""


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
    upload_failures: int = 0         # consecutive failed upload runs (0: the last one succeeded)
    upload_error: str = ""           # the last upload failure, while failures > 0
    upload_retry_in_secs: float = 0.0  # backoff left before the next upload attempt
    dlq_size: int = 0
    fenced: bool = False
    cache_bytes_ram: int = 0
    cache_bytes_disk: int = 0
    error: str = ""
    role: str = "writer"             # writer | reader (a read replica following the writer)
    replica_lag_secs: float = 0.0    # reader: time since it last confirmed it had everything
    replica_poll_interval_secs: float = 0.0  # reader: current poll interval (backs off while idle)
    warm: WarmStatus = msgspec.field(default_factory=WarmStatus)


class DlqEntry(msgspec.Struct, frozen=True):
    """An upload that failed permanently or ran out of retries; the data stays on local disk."""

    object: str                      # the object key that could not be uploaded
    error: str
    code: str = ""                   # S3 error code or HTTP status, when known
    attempts: int = 1
    permanent: bool = False          # True: not retryable (auth, missing bucket, ...)
    first_failed_at: float = 0.0
    last_failed_at: float = 0.0


class CompactResult(msgspec.Struct, frozen=True):
    """What an on-demand compaction did: the engine's result, the admin API's response body and
    the clients' return value (one definition for all three)."""

    flushed_rows: int          # memtable rows written to a new segment
    merged_segments: int       # segments merged into one
    segments: int              # live segments afterwards
    manifest_version: int      # the manifest published by the compaction
    duration_secs: float
