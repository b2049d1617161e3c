"""/v1/collections: create, list, describe and drop collections."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from ...config import Settings
from ...node import Engine
from ...models import CollectionInfo, CollectionSpec
from ...service.spec import request_spec
from ..codec import decode_body, respond
from ..openapi import body_operation, error_responses
from ..schemas import CollectionList, CreateCollectionRequest


def collection_spec(body: CreateCollectionRequest, settings: Settings) -> CollectionSpec:
    """The validated spec for a create request; omitted values take the server defaults."""
    hnsw = msgspec.structs.asdict(body.hnsw) if body.hnsw is not None else None
    return request_spec(settings, body.name, body.dimension, body.metric, body.tiering_policy, hnsw)


class CollectionController(Controller):
    path = "/v1/collections"
    tags = ["collections"]

    @post(
        "/",
        status_code=201,
        operation_class=body_operation(CreateCollectionRequest),
        summary="Create a collection",
        responses=error_responses(400, 409, 413, 415, 503),
    )
    async def create_collection(
        self,
        request: Request[Any, Any, Any],
        engine: NamedDependency[Engine],
        settings: NamedDependency[Settings],
    ) -> Response[CollectionInfo]:
        """409 if the name is taken on this node, or (memory_s3, s3_only) if S3 already holds a
        collection of that name and ``replace`` is not true; tiering_policy and hnsw default to
        the server settings."""
        body = await decode_body(request, CreateCollectionRequest)
        info = await engine.create_collection(collection_spec(body, settings), replace=body.replace)
        return respond(request, info, status_code=201)

    @get("/", summary="List collections", responses=error_responses(503))
    async def list_collections(
        self, request: Request[Any, Any, Any], engine: NamedDependency[Engine]
    ) -> Response[CollectionList]:
        return respond(request, CollectionList(collections=engine.list_collections()))

    @get(
        "/{name:str}",
        summary="Describe a collection: spec and document count",
        responses=error_responses(400, 404, 503),
    )
    async def get_collection(
        self, request: Request[Any, Any, Any], name: FromPath[str], engine: NamedDependency[Engine]
    ) -> Response[CollectionInfo]:
        return respond(request, engine.get_collection(name).info())

    @delete(
        "/{name:str}", summary="Drop a collection and all its data", responses=error_responses(400, 404, 503)
    )
    async def drop_collection(self, name: FromPath[str], engine: NamedDependency[Engine]) -> None:
        await engine.drop_collection(name)
