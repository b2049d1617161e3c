"""/v1/collections/{name}/documents: upsert, get and delete documents."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from ...config import Settings
from ...node import Engine
from ...errors import invalid, not_found
from ...models import Document
from ...service import rules
from ...service.limits import Limits
from ..codec import decode_body, respond
from ..consistency import read_consistency
from ..openapi import body_operation, error_responses
from ..schemas import (
    DeleteRequest,
    DeleteResult,
    DocumentList,
    GetManyRequest,
    UpsertRequest,
    UpsertResult,
)
from ..validation import to_matrix


def _check_delete(body: DeleteRequest, settings: Settings) -> None:
    problem = rules.delete_selector_problem(body.ids, body.filter, rules.body_field)
    if problem:
        raise invalid(problem)
    if body.ids is not None:
        Limits.of(settings).check_batch("ids", len(body.ids))


class DocumentController(Controller):
    path = "/v1/collections/{name:str}/documents"
    tags = ["documents"]

    @post(
        "/",
        status_code=200,
        operation_class=body_operation(UpsertRequest),
        summary="Upsert documents",
        responses=error_responses(400, 404, 413, 415, 503, 507),
    )
    async def upsert(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        engine: NamedDependency[Engine],
        settings: NamedDependency[Settings],
    ) -> Response[UpsertResult]:
        """Insert or replace documents by id. Atomic; acknowledged once durable per the tiering policy."""
        body = await decode_body(request, UpsertRequest)
        documents = body.documents
        Limits.of(settings).check_batch("documents", len(documents))
        collection = engine.get_collection(name)
        vectors = to_matrix(
            [doc.vector for doc in documents], collection.spec.dimension, lambda i: f"documents[{i}].vector"
        )
        upserted = await collection.upsert(
            [doc.id for doc in documents], vectors, [doc.metadata for doc in documents]
        )
        return respond(request, UpsertResult(upserted=upserted))

    @get("/{doc_id:str}", summary="Get one document", responses=error_responses(400, 404, 503))
    async def get_document(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        doc_id: FromPath[str],
        engine: NamedDependency[Engine],
    ) -> Response[Document]:
        if read_consistency(request) == "strong":
            await engine.catch_up(name)
        found = await engine.get_collection(name).get([doc_id])
        if not found:
            raise not_found(f"document {doc_id!r} not found in collection {name!r}", id=doc_id)
        return respond(request, found[0])

    @post(
        "/get",
        status_code=200,
        operation_class=body_operation(GetManyRequest),
        summary="Get documents by id",
        responses=error_responses(400, 404, 413, 415, 503),
    )
    async def get_many(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        engine: NamedDependency[Engine],
        settings: NamedDependency[Settings],
    ) -> Response[DocumentList]:
        """The documents found, in request order; missing ids are left out."""
        body = await decode_body(request, GetManyRequest)
        Limits.of(settings).check_batch("ids", len(body.ids))
        if read_consistency(request, body.consistency) == "strong":
            await engine.catch_up(name)
        documents = await engine.get_collection(name).get(body.ids)
        return respond(request, DocumentList(documents=documents))

    @post(
        "/delete",
        status_code=200,
        operation_class=body_operation(DeleteRequest),
        summary="Delete documents",
        responses=error_responses(400, 404, 413, 415, 503, 507),
    )
    async def delete_documents(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        engine: NamedDependency[Engine],
        settings: NamedDependency[Settings],
    ) -> Response[DeleteResult]:
        """By ``ids``, by metadata ``filter``, or both (the listed ids that match the filter).
        Returns how many documents were actually deleted."""
        body = await decode_body(request, DeleteRequest)
        _check_delete(body, settings)
        collection = engine.get_collection(name)
        deleted = await collection.delete(ids=body.ids, filter=body.filter)
        return respond(request, DeleteResult(deleted=deleted))
