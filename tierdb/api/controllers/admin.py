"""/admin/collections/{name}/...: status, dead-letter queue, on-demand compaction and warming.

Every route here is behind ``require_admin`` (see auth.py): a bearer token, or a loopback-only
bind when no token is configured.  The paths are the ones operators already use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Litestar, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import FromPath

from ...node import Engine
from ...models import CollectionStats, CompactResult, DlqEntry, WarmStatus
from ..auth import require_admin
from ..codec import decode, request_media_type, respond
from ..openapi import REF_TEMPLATE, body_operation, error_responses
from ..schemas import ErrorBody

# -- wire formats --------------------------------------------------------------------------------


class CompactRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Optional body of a compaction request; an empty body means ``{"full": false}``."""

    full: bool = False  # merge every segment into one, not only those the size-tiered policy picks


class DlqList(msgspec.Struct, frozen=True):
    collection: str
    entries: list[DlqEntry]
    size: int


class DlqRetryResult(msgspec.Struct, frozen=True):
    retried: int               # entries re-enqueued for upload


class DlqClearResult(msgspec.Struct, frozen=True):
    cleared: int               # entries dropped


ADMIN_REQUEST_TYPES: tuple[type[msgspec.Struct], ...] = (CompactRequest,)


# -- OpenAPI -------------------------------------------------------------------------------------


def _optional_body(struct_type: type[msgspec.Struct]) -> type[Operation]:
    """Like ``body_operation``, but the body may be left out."""
    base = body_operation(struct_type)

    @dataclass
    class OptionalBodyOperation(base):  # type: ignore[valid-type, misc]
        def __post_init__(self) -> None:
            super().__post_init__()
            assert self.request_body is not None
            self.request_body = dataclasses.replace(self.request_body, required=False)

    OptionalBodyOperation.__name__ = OptionalBodyOperation.__qualname__ = base.__name__
    return OptionalBodyOperation


def add_admin_schemas(app: Litestar) -> None:
    """On startup: add the admin request bodies to the OpenAPI components."""
    _, components = msgspec.json.schema_components(ADMIN_REQUEST_TYPES, ref_template=REF_TEMPLATE)
    schemas = app.openapi_schema.components
    schemas.schemas = {**components, **(schemas.schemas or {})}


def _responses(*status_codes: int) -> dict[int, ResponseSpec]:
    auth = {
        401: "No 'Authorization: Bearer <token>' header (a token is configured)",
        403: "Wrong token, or the admin API is disabled (no token and not bound to loopback)",
    }
    specs = {
        code: ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)
        for code, text in auth.items()
    }
    return {**specs, **error_responses(*status_codes)}


# -- routes --------------------------------------------------------------------------------------


class AdminController(Controller):
    path = "/admin/collections/{name:str}"
    tags = ["admin"]
    guards = [require_admin]

    @get("/status", summary="Collection status", responses=_responses(404, 503))
    async def status(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[CollectionStats]:
        """Policy, manifest version, WAL position, upload lag (seconds and bytes), upload queue,
        DLQ size, segments, cache bytes, last snapshot time and state."""
        return respond(request, engine.get_collection(name).stats())

    @get("/dlq", summary="List the dead-letter queue", responses=_responses(404, 503))
    async def dlq_list(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[DlqList]:
        """Uploads that failed permanently or ran out of retries (always empty for ``memory``)."""
        entries = engine.get_collection(name).dlq_entries()
        return respond(request, DlqList(collection=name, entries=entries, size=len(entries)))

    @post(
        "/dlq/retry", status_code=200, summary="Re-enqueue the dead-letter queue", responses=_responses(404, 503)
    )
    async def dlq_retry(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[DlqRetryResult]:
        """Every entry goes back to the upload queue; nothing is discarded."""
        retried = await engine.get_collection(name).dlq_retry()
        return respond(request, DlqRetryResult(retried=retried))

    @delete("/dlq", status_code=200, summary="Clear the dead-letter queue", responses=_responses(404, 503))
    async def dlq_clear(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[DlqClearResult]:
        """Drop the entries; the next upload is a complete snapshot of the collection."""
        cleared = await engine.get_collection(name).dlq_clear()
        return respond(request, DlqClearResult(cleared=cleared))

    @post(
        "/compact",
        status_code=200,
        operation_class=_optional_body(CompactRequest),
        summary="Compact now: flush the memtable, merge segments",
        responses=_responses(400, 404, 409, 413, 415, 503),
    )
    async def compact(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[CompactResult]:
        """Flushes the memtable to a segment, then merges what the size-tiered policy picks
        (``{"full": true}``: every segment).  The body is optional."""
        raw = await request.body()
        body = decode(raw, request_media_type(request), CompactRequest) if raw.strip() else CompactRequest()
        collection = engine.get_collection(name)
        result = await collection.compact(full=body.full)
        return respond(request, result)

    @post(
        "/warm",
        status_code=202,
        summary="Warm: pre-fetch the collection's segments into the node's disk cache",
        responses=_responses(404, 503),
    )
    async def warm(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[WarmStatus]:
        """Starts fetching every segment from S3 into this node's disk cache in the background and
        answers at once with the progress so far; while a warm runs, asking again returns its
        progress instead of starting another.  Follow it in ``warm`` of the status endpoint.
        Writes nothing to S3, so a read replica accepts it too."""
        status = engine.get_collection(name).start_warm()
        return respond(request, status, status_code=202)
