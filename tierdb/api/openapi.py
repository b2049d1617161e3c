"""OpenAPI documentation for request bodies that the controllers decode themselves.

The controllers read the raw body and decode it with msgspec (JSON or msgpack, see codec.py),
so Litestar cannot infer the request body from a ``data`` parameter.  Each such route declares
``operation_class=body_operation(SomeRequest)``, and ``add_request_schemas`` (an on-startup
hook) adds msgspec's JSON Schema of every request Struct to ``components/schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from .. import __version__
from .codec import JSON, MSGPACK
from .schemas import REQUEST_TYPES, ErrorBody

REF_TEMPLATE = "#/components/schemas/{name}"
REQUEST_MEDIA_TYPES = (JSON, MSGPACK)


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="TierDB",
        version=__version__,
        description=(
            "Tiered vector storage engine: RAM and local disk in front of S3. "
            "Bodies may be JSON or msgpack (Content-Type: application/msgpack); "
            "responses are JSON unless Accept asks for application/msgpack."
        ),
        path="/schema",
        components=Components(
            security_schemes={
                "adminToken": SecurityScheme(type="http", scheme="bearer", description="TIERDB_ADMIN_TOKEN, for /admin"),
                "apiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header",
                    description="one of security.api_keys, for /v1 when keys are configured",
                ),
            }
        ),
    )


def body_operation(struct_type: type[msgspec.Struct], description: str = "") -> type[Operation]:
    """An Operation class whose request body is ``struct_type`` in JSON or msgpack."""
    schema = Reference(ref=REF_TEMPLATE.format(name=struct_type.__name__))
    body = RequestBody(
        content={media_type: OpenAPIMediaType(schema=schema) for media_type in REQUEST_MEDIA_TYPES},
        description=description or struct_type.__doc__,
        required=True,
    )

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    BodyOperation.__name__ = BodyOperation.__qualname__ = f"{struct_type.__name__}Operation"
    return BodyOperation


def request_components() -> dict[str, Any]:
    """JSON Schema of every request Struct (and the Structs they nest), by name."""
    _, components = msgspec.json.schema_components(REQUEST_TYPES, ref_template=REF_TEMPLATE)
    return components


def add_request_schemas(app: Litestar) -> None:
    """On startup: merge the request schemas into the app's (cached) OpenAPI document."""
    components = app.openapi_schema.components
    components.schemas = {**request_components(), **(components.schemas or {})}


def union_responses_as_any_of(app: Litestar) -> None:
    """On startup: response unions as ``anyOf``, not Litestar's ``oneOf``.

    ``Response[QueryResult | BatchQueryResult]`` is a oneOf, but ``{"results": []}`` (no hits)
    is valid under both branches, so every empty answer would violate its own schema.
    """
    for path_item in (app.openapi_schema.paths or {}).values():
        operations = (getattr(path_item, method) for method in ("get", "put", "post", "delete", "patch"))
        for operation in filter(None, operations):
            for response in (operation.responses or {}).values():
                for media in (getattr(response, "content", None) or {}).values():
                    schema = media.schema
                    if isinstance(schema, Schema) and schema.one_of and not schema.any_of:
                        schema.any_of, schema.one_of = schema.one_of, None


_ERROR_DESCRIPTIONS = {
    400: "Invalid request (the message names the problem); nothing changed",
    401: "Missing or malformed credentials (admin token or API key)",
    403: "Wrong credentials, or admin API disabled (no token while bound beyond loopback)",
    404: "Unknown collection or document",
    409: "Conflict: the collection exists, or another writer owns it",
    413: "Body or batch larger than the configured limit",
    415: "Content-Type is neither JSON nor msgpack",
    503: "Recovering, shutting down or storage unavailable; retry after Retry-After",
    507: "Local storage full or read-only",
}


def error_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a route can return, all shaped like ErrorBody."""
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=_ERROR_DESCRIPTIONS[code], generate_examples=False
        )
        for code in status_codes
    }
