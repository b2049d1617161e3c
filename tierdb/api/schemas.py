"""Wire formats of the REST API: msgspec Structs decoded straight from JSON or msgpack bodies.

Request Structs reject unknown fields, so a typo ("vectorz") is a 400 naming the field instead
of a silently ignored value.  Structural rules (types, non-empty lists) live here; limits that
come from settings (batch size, k, number of query vectors) are checked by the controllers with
``tierdb.service.limits``;
semantics (dimension, NaN, duplicate ids, filter operators) by the engine.

Response Structs that the engine already returns (``CollectionInfo``, ``Document``) are reused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..models import CollectionInfo, Document
from ..service.rules import Include

# A read's freshness on a reader node: "eventual" answers from what it applied so far (lag:
# replica_lag_seconds); "strong" first polls the writer's next WAL object and manifest until
# nothing is new (two or more S3 requests).  On the writer both are the same.
Consistency = Literal["eventual", "strong"]
CONSISTENCY_HEADER = "X-TierDB-Consistency"

NonEmpty = Meta(min_length=1)


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every request body."""


# -- requests ----------------------------------------------------------------------------------


class HnswConfig(_Request):
    """HNSW parameters; any field left out takes the server default ([index] in the config)."""

    m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None


class CreateCollectionRequest(_Request):
    name: str
    dimension: int
    metric: str = "cosine"
    tiering_policy: str | None = None  # None: the server default (storage.tiering_policy)
    hnsw: HnswConfig | None = None
    # memory_s3/s3_only: take over a collection of this name that S3 already holds (else 409)
    replace: bool = False


class DocumentIn(_Request):
    id: str
    vector: list[float]
    metadata: dict[str, Any] | None = None


class UpsertRequest(_Request):
    documents: Annotated[list[DocumentIn], NonEmpty]


class GetManyRequest(_Request):
    ids: Annotated[list[str], NonEmpty]
    consistency: Consistency = "eventual"


class DeleteRequest(_Request):
    """``ids`` (delete these), ``filter`` (delete every match) or both (the listed ids that match)."""

    ids: Annotated[list[str], NonEmpty] | None = None
    filter: dict[str, Any] | None = None


class QueryRequest(_Request):
    """Exactly one of ``vector`` (one query) or ``vectors`` (a batch, answered in order)."""

    vector: list[float] | None = None
    vectors: Annotated[list[list[float]], NonEmpty] | None = None
    k: int = 10
    filter: dict[str, Any] | None = None
    include: list[Include] = []
    ef: int | None = None
    # partitions probed per partitioned segment (s3_only); hnswlib segments and the memtable
    # ignore it; None: the engine's calibrated default
    nprobe: int | None = None
    # "strong" (read-your-writes): a reader first catches up with the writer's latest WAL object
    consistency: Consistency = "eventual"


REQUEST_TYPES: tuple[type[msgspec.Struct], ...] = (
    CreateCollectionRequest,
    UpsertRequest,
    GetManyRequest,
    DeleteRequest,
    QueryRequest,
)


# -- responses ---------------------------------------------------------------------------------


class CollectionList(msgspec.Struct, frozen=True):
    collections: list[CollectionInfo]


class UpsertResult(msgspec.Struct, frozen=True):
    upserted: int


class DeleteResult(msgspec.Struct, frozen=True):
    deleted: int


class DocumentList(msgspec.Struct, frozen=True):
    documents: list[Document]


class QueryHit(msgspec.Struct, frozen=True):
    """``metadata``/``vector`` appear only when requested via ``include`` (then possibly null)."""

    id: str
    distance: float
    metadata: dict[str, Any] | None | UnsetType = UNSET
    vector: list[float] | UnsetType = UNSET


class QueryResult(msgspec.Struct, frozen=True):
    results: list[QueryHit]


class BatchQueryResult(msgspec.Struct, frozen=True):
    results: list[list[QueryHit]]


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error response. Client errors may add context fields (e.g. ``field``)."""

    error: str
    message: str
    request_id: str | None = None


class S3Check(msgspec.Struct, frozen=True):
    reachable: bool
    latency_ms: float
    error: str = ""


class HealthChecks(msgspec.Struct, frozen=True):
    data_dir_writable: bool
    collections: dict[str, str]  # name -> state (recovering | ready | fenced | failed)
    startup_error: str | None = None
    scheduler_running: bool = False
    s3: S3Check | None = None    # null when no S3 is configured
    data_dir_error: str | None = None  # why the data directory is not writable (path, errno)


class HealthReport(msgspec.Struct, frozen=True):
    status: Literal["ok", "degraded", "starting", "unhealthy"]
    version: str
    uptime_secs: float
    ready: bool
    checks: HealthChecks
    role: str = "writer"             # writer | reader (a read replica; writes get 403 read_only)


class ProbeStatus(msgspec.Struct, frozen=True):
    status: str
