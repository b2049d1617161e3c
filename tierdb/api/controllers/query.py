"""/v1/collections/{name}/query: k nearest neighbours, one vector or a batch.

This is the hot route, so it skips what costs more than it gives here: it reads the engine and
settings from ``app.state`` instead of dependency injection (which resolves providers in an
anyio task group per request), and its guard (the data router's ``require_api_key``) runs
without Litestar's per-request copy of the handler.  The checks and their order stay those of
the other data routes: API key (401/403), engine ready (503), then the body.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response
from litestar.params import FromPath
from msgspec import UNSET

from ...config import Settings
from ...errors import invalid
from ...models import Hit
from ...service import rules
from ...service.limits import Limits
from ..auth import SETTINGS_STATE_KEY, route_with_uncopied_guards
from ..codec import decode_body, respond
from ..consistency import read_consistency
from ..lifecycle import HOST_STATE_KEY
from ..openapi import body_operation, error_responses
from ..schemas import BatchQueryResult, QueryHit, QueryRequest, QueryResult
from ..validation import query_matrix


def _query_rows(body: QueryRequest, settings: Settings) -> tuple[list[list[float]], str]:
    """The query vectors and how to name row i in errors; checks shape and limits."""
    problem = rules.query_vectors_problem(body.vector, body.vectors, rules.body_field)
    if problem:
        raise invalid(problem)
    limits = Limits.of(settings)
    limits.check_k(body.k)
    limits.check_ef(body.ef)
    limits.check_nprobe(body.nprobe)
    if body.vector is not None:
        return [body.vector], "vector"
    assert body.vectors is not None
    limits.check_query_vectors("vectors", len(body.vectors))
    return body.vectors, "vectors"


def _wire_hits(hits: list[Hit], with_metadata: bool, with_vector: bool) -> list[QueryHit]:
    return [
        QueryHit(
            id=hit.id,
            distance=hit.distance,
            metadata=hit.metadata if with_metadata else UNSET,
            vector=hit.vector if with_vector and hit.vector is not None else UNSET,
        )
        for hit in hits
    ]


def _vector_label(_: int) -> str:
    return "vector"


def _vectors_label(i: int) -> str:
    return f"vectors[{i}]"


class QueryController(Controller):
    path = "/v1/collections/{name:str}/query"
    tags = ["query"]

    @route_with_uncopied_guards(
        "/",
        http_method="POST",
        status_code=200,
        operation_class=body_operation(QueryRequest),
        summary="Nearest-neighbour query",
        responses=error_responses(400, 404, 413, 415, 503),
    )
    async def query(
        self, request: Request[Any, Any, Any], name: FromPath[str]
    ) -> Response[QueryResult | BatchQueryResult]:
        """``vector`` -> ``{"results": [hit, ...]}``; ``vectors`` -> ``{"results": [[hit, ...], ...]}``
        in query order. Hits are sorted by distance ascending (cosine = 1 - cos, l2 = squared, ip = 1 - dot).
        """
        state = request.app.state
        settings: Settings = state[SETTINGS_STATE_KEY]
        engine = state[HOST_STATE_KEY].require_ready()
        body = await decode_body(request, QueryRequest)
        rows, field = _query_rows(body, settings)
        if read_consistency(request, body.consistency) == "strong":
            await engine.catch_up(name)
        collection = engine.get_collection(name)
        label = _vector_label if field == "vector" else _vectors_label
        matrix = query_matrix(rows, collection.spec.dimension, label)
        with_metadata = "metadata" in body.include
        with_vector = "vector" in body.include
        results = await collection.query(
            matrix,
            body.k,
            filter=body.filter,
            include_metadata=with_metadata,
            include_vector=with_vector,
            ef=body.ef,
            nprobe=body.nprobe,
        )
        wire = [_wire_hits(hits, with_metadata, with_vector) for hits in results]
        payload = QueryResult(results=wire[0]) if field == "vector" else BatchQueryResult(results=wire)
        return respond(request, payload)
