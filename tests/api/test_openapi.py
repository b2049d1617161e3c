"""OpenAPI at /schema documents every route, request body and error shape."""

from __future__ import annotations

from litestar import Litestar

from tierdb.api.schemas import REQUEST_TYPES

from .conftest import Client

EXPECTED = {
    ("post", "/v1/collections"),
    ("get", "/v1/collections"),
    ("get", "/v1/collections/{name}"),
    ("delete", "/v1/collections/{name}"),
    ("post", "/v1/collections/{name}/documents"),
    ("get", "/v1/collections/{name}/documents/{doc_id}"),
    ("post", "/v1/collections/{name}/documents/get"),
    ("post", "/v1/collections/{name}/documents/delete"),
    ("post", "/v1/collections/{name}/query"),
    ("get", "/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
}


async def _spec(client: Client) -> dict:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in item if method != "parameters"}


async def test_every_route_is_documented(client: Client) -> None:
    spec = await _spec(client)
    assert EXPECTED <= _operations(spec)
    app: Litestar = client.app
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        for method in route.methods - {"OPTIONS", "HEAD"}:
            assert (method.lower(), route.path_format) in _operations(spec), (method, route.path)


async def test_request_bodies_accept_json_and_msgpack_and_resolve(client: Client) -> None:
    spec = await _spec(client)
    schemas = spec["components"]["schemas"]
    for struct in REQUEST_TYPES:
        assert struct.__name__ in schemas
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if method != "post" or body is None:
                continue
            assert set(body["content"]) == {"application/json", "application/msgpack"}, path
            ref = body["content"]["application/json"]["schema"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in schemas
    upsert = spec["paths"]["/v1/collections/{name}/documents"]["post"]
    assert upsert["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/UpsertRequest")
    assert schemas["UpsertRequest"]["properties"]["documents"]["minItems"] == 1


async def test_every_referenced_schema_exists(client: Client) -> None:
    spec = await _spec(client)
    schemas = spec["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    missing = {ref for ref in refs(spec) if ref.removeprefix("#/components/schemas/") not in schemas}
    assert not missing


async def test_errors_are_documented_with_the_error_body(client: Client) -> None:
    spec = await _spec(client)
    query = spec["paths"]["/v1/collections/{name}/query"]["post"]["responses"]
    for status in ("400", "404", "413", "415", "503"):
        assert query[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


async def test_schema_ui_is_served(client: Client) -> None:
    assert (await client.get("/schema")).status_code == 200


async def test_the_compact_response_is_what_openapi_declares(client: Client) -> None:
    """POST /admin/.../compact answers with exactly the ``CompactResult`` its 200 response names."""
    import jsonschema_rs

    from .conftest import create, doc, unit, upsert

    spec = await _spec(client)
    operation = spec["paths"]["/admin/collections/{name}/compact"]["post"]
    declared = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert declared["$ref"] == "#/components/schemas/CompactResult"
    schema = spec["components"]["schemas"]["CompactResult"]

    await create(client)
    await upsert(client, "docs", [doc(f"d{i}", unit(i)) for i in range(3)])
    response = await client.post("/admin/collections/docs/compact")
    assert response.status_code == 200, response.text
    body = response.json()
    jsonschema_rs.validate({**declared, "components": spec["components"]}, body)
    assert set(body) == set(schema["properties"])
    assert set(schema.get("required", [])) == set(schema["properties"])  # every field always sent
    assert body["flushed_rows"] == 3
