"""Bad input: a clear 4xx naming the problem, and nothing changes."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import msgspec
import pytest

from litestar import Litestar
from litestar.exceptions import ValidationException
from litestar.testing import RequestFactory

from tierdb.api.errors import http_exception_handler
from tierdb.engine.collection import Collection
from tierdb.node import Engine

from .conftest import (
    DIM,
    MAX_BATCH,
    MAX_BODY,
    MAX_K,
    MAX_QUERY_VECTORS,
    Client,
    count,
    doc,
    get_docs,
    msgpack_body,
    seeded,
    unit,
)

MSGPACK = {"content-type": "application/msgpack"}


async def post(client: Client, path: str, body: Any = None, *, content: bytes | None = None, headers=None):
    if content is None:
        return await client.post(path, json=body, headers=headers)
    return await client.post(path, content=content, headers=headers)


def assert_error(response, status: int, kind: str, *needles: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == kind
    for needle in needles:
        assert needle in body["message"], body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture
async def docs(client: Client) -> list[dict]:
    """A collection 'docs' with d0..d9 that every bad write below must leave unchanged."""
    return await seeded(client, n=10)


async def assert_unchanged(client: Client, docs: list[dict], *new_ids: str) -> None:
    assert await count(client, "docs") == len(docs)
    stored = await get_docs(client, "docs", [d["id"] for d in docs])
    assert [(d["id"], d["vector"], d["metadata"]) for d in stored] == [
        (d["id"], pytest.approx(d["vector"]), d["metadata"]) for d in docs
    ]
    if new_ids:
        assert await get_docs(client, "docs", list(new_ids)) == []


# -- bad writes: the whole batch is rejected --------------------------------------------------

UPSERT = "/v1/collections/docs/documents"


@pytest.mark.parametrize(
    ("documents", "needles"),
    [
        ([doc("new", [1, 2, 3])], ("documents[0].vector", "3 values", f"dimension {DIM}")),
        ([doc("new", unit(0)), doc("new2", [1, 2, 3, 4, 5])], ("documents[1].vector", "5 values")),
        ([doc("new", [])], ("documents[0].vector", "0 values")),
        ([doc("new", [1, 2, 1e39, 4])], ("documents[0].vector", "float32")),
        ([doc("new", unit(0)), doc("", unit(1))], ("id",)),
        ([doc("new", unit(0)), doc("new", unit(1))], ("duplicate", "'new'")),
        ([doc("new", unit(0)), doc("x" * 257, unit(1))], ("256 bytes",)),
        ([doc("d1", unit(5)), doc("d1", unit(6))], ("duplicate",)),
    ],
)
async def test_semantically_bad_upserts_change_nothing(client: Client, docs, documents, needles) -> None:
    response = await post(client, UPSERT, {"documents": documents})
    assert_error(response, 400, "invalid", *needles)
    await assert_unchanged(client, docs, "new", "new2")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"documents": [doc("new", [1, "NaN", 3, 4])]}, ("Expected `float`, got `str`", "$.documents[0].vector[1]")),
        ({"documents": [doc("new", [1, None, 3, 4])]}, ("Expected `float`, got `null`", "$.documents[0].vector[1]")),
        ({"documents": [doc("new", [1, [2], 3, 4])]}, ("Expected `float`, got `array`", "$.documents[0].vector[1]")),
        ({"documents": [doc("new", "1,2,3,4")]}, ("Expected `array`, got `str`", "$.documents[0].vector")),
        ({"documents": [{"id": 7, "vector": unit(0)}]}, ("Expected `str`, got `int`", "$.documents[0].id")),
        ({"documents": [{"id": "new", "vector": unit(0), "metadata": [1]}]}, ("$.documents[0].metadata",)),
        ({"documents": [{"id": "new", "vectr": unit(0)}]}, ("unknown field `vectr`", "$.documents[0]")),
        ({"documents": [doc("new", unit(0))], "upsert": True}, ("unknown field `upsert`",)),
        ({"documents": []}, ("length >= 1", "$.documents")),
        ({"docs": []}, ("unknown field `docs`",)),
        ({}, ("missing required field `documents`",)),
        ([doc("new", unit(0))], ("Expected `object`, got `array`",)),
    ],
)
async def test_structurally_bad_upserts_name_the_field_and_change_nothing(client: Client, docs, body, needles) -> None:
    assert_error(await post(client, UPSERT, body), 400, "invalid", *needles)
    await assert_unchanged(client, docs, "new")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_via_msgpack_change_nothing(client: Client, docs, value: float) -> None:
    body = msgpack_body({"documents": [doc("new", unit(0)), doc("new2", [1.0, value, 0.0, 0.0])]})
    response = await post(client, UPSERT, content=body, headers=MSGPACK)
    assert_error(response, 400, "invalid", "documents[1].vector", "NaN")
    await assert_unchanged(client, docs, "new", "new2")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
async def test_non_json_number_literals_are_malformed_json(client: Client, docs, literal: bytes) -> None:
    body = b'{"documents": [{"id": "new", "vector": [1, ' + literal + b', 3, 4]}]}'
    response = await post(client, UPSERT, content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid", "malformed JSON")
    await assert_unchanged(client, docs, "new")


@pytest.mark.parametrize(
    "content",
    [b'{"documents": [', b"{'documents': []}", b"documents=1", b'{"documents": [{"id": "new", "vector": [1, 2, 3, 4]}]} trailing', b"\xff\xfe"],
)
async def test_malformed_json_is_400(client: Client, docs, content: bytes) -> None:
    response = await post(client, UPSERT, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid", "malformed JSON")
    await assert_unchanged(client, docs)


async def test_empty_body_is_400(client: Client, docs) -> None:
    assert_error(await post(client, UPSERT, content=b""), 400, "invalid", "request body is empty")
    await assert_unchanged(client, docs)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_wrong_content_type_is_415(client: Client, docs, content_type: str) -> None:
    body = msgspec.json.encode({"documents": [doc("new", unit(0))]})
    response = await post(client, UPSERT, content=body, headers={"content-type": content_type})
    assert_error(response, 415, "unsupported_media_type", content_type, "application/json", "application/msgpack")
    await assert_unchanged(client, docs, "new")


async def test_oversized_body_is_413_and_changes_nothing(client: Client, docs) -> None:
    documents = [doc(f"big{i}", [0.123456789] * DIM, {"pad": "x" * 4096}) for i in range(MAX_BODY // 4000)]
    body = msgspec.json.encode({"documents": documents})
    assert len(body) > MAX_BODY
    response = await post(client, UPSERT, content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "too_large", f"{MAX_BODY} bytes", "server.max_body_bytes")
    await assert_unchanged(client, docs, "big0")


async def test_batch_over_max_batch_is_413_and_changes_nothing(client: Client, docs) -> None:
    documents = [doc(f"new{i}", unit(i)) for i in range(MAX_BATCH + 1)]
    response = await post(client, UPSERT, {"documents": documents})
    assert_error(response, 413, "too_large", f"{MAX_BATCH + 1} entries", "server.max_batch")
    await assert_unchanged(client, docs, "new0")


async def test_upsert_into_unknown_collection_is_404(client: Client, docs) -> None:
    response = await post(client, "/v1/collections/nope/documents", {"documents": [doc("new", unit(0))]})
    assert_error(response, 404, "not_found", "'nope'")
    assert (await client.get("/v1/collections/nope")).status_code == 404


# -- bad deletes ------------------------------------------------------------------------------

DELETE = "/v1/collections/docs/documents/delete"


@pytest.mark.parametrize(
    ("body", "status", "needles"),
    [
        ({}, 400, ("'ids', 'filter' or both",)),
        ({"ids": []}, 400, ("$.ids",)),
        ({"ids": ["d1", "d1"]}, 400, ("duplicate",)),
        ({"ids": ["d1", ""]}, 400, ("empty",)),
        ({"filter": {}}, 400, ("empty filter",)),
        ({"filter": {"i": {"$regex": "1"}}}, 400, ("$regex",)),
        ({"filter": {"$xor": [{"i": 1}]}}, 400, ("$xor",)),
        ({"filter": {"i": {"$in": 3}}}, 400, ("$in",)),
        ({"filter": "i > 3"}, 400, ("$.filter",)),
        ({"ids": ["d1"], "where": {}}, 400, ("unknown field `where`",)),
        ({"ids": [f"d{i}" for i in range(MAX_BATCH + 1)]}, 413, ("server.max_batch",)),
    ],
)
async def test_bad_deletes_change_nothing(client: Client, docs, body, status, needles) -> None:
    response = await post(client, DELETE, body)
    assert_error(response, status, "invalid" if status == 400 else "too_large", *needles)
    await assert_unchanged(client, docs)


async def test_delete_from_unknown_collection_is_404(client: Client) -> None:
    response = await post(client, "/v1/collections/nope/documents/delete", {"ids": ["a"]})
    assert_error(response, 404, "not_found", "'nope'")


# -- bad reads and queries --------------------------------------------------------------------

QUERY = "/v1/collections/docs/query"


@pytest.mark.parametrize(
    ("body", "status", "needles"),
    [
        ({"vector": [1, 2, 3]}, 400, ("vector has 3 values", f"dimension {DIM}")),
        ({"vectors": [unit(0), [1, 2]]}, 400, ("vectors[1] has 2 values",)),
        ({"vector": [1, "x", 3, 4]}, 400, ("Expected `float`, got `str`", "$.vector[1]")),
        ({"vector": [1, 2, 1e39, 4]}, 400, ("vector contains NaN",)),
        ({"vector": unit(0), "vectors": [unit(0)]}, 400, ("exactly one of 'vector'",)),
        ({"k": 3}, 400, ("exactly one of 'vector'",)),
        ({"vectors": []}, 400, ("$.vectors",)),
        ({"vector": unit(0), "k": 0}, 400, ("k must be between 1 and", "got 0")),
        ({"vector": unit(0), "k": -5}, 400, ("k must be between 1 and",)),
        ({"vector": unit(0), "k": MAX_K + 1}, 400, (f"k must be between 1 and {MAX_K}", "server.max_k")),
        ({"vector": unit(0), "k": "10"}, 400, ("Expected `int`, got `str`", "$.k")),
        ({"vector": unit(0), "k": 2.5}, 400, ("Expected `int`, got `float`", "$.k")),
        ({"vector": unit(0), "ef": 0}, 400, ("ef must be between",)),
        ({"vector": unit(0), "nprobe": 0}, 400, ("nprobe must be between 1 and 4096", "got 0")),
        ({"vector": unit(0), "nprobe": -1}, 400, ("nprobe must be between 1 and 4096", "got -1")),
        ({"vector": unit(0), "nprobe": 4097}, 400, ("nprobe must be between 1 and 4096", "got 4097")),
        ({"vector": unit(0), "nprobe": "x"}, 400, ("Expected `int | null`, got `str`", "$.nprobe")),
        ({"vector": unit(0), "nprobe": True}, 400, ("Expected `int | null`, got `bool`", "$.nprobe")),
        ({"vector": unit(0), "nprobe": 2.5}, 400, ("Expected `int | null`, got `float`", "$.nprobe")),
        ({"vector": unit(0), "filter": {"i": {"$near": 3}}}, 400, ("$near",)),
        ({"vector": unit(0), "filter": {"$not": {"i": 3}}}, 400, ("$not",)),
        ({"vector": unit(0), "include": ["metadata", "score"]}, 400, ("Invalid enum value 'score'", "$.include[1]")),
        ({"vector": unit(0), "top_k": 3}, 400, ("unknown field `top_k`",)),
        ({"vectors": [unit(i) for i in range(MAX_QUERY_VECTORS + 1)]}, 413, ("server.max_query_vectors",)),
    ],
)
async def test_bad_queries_are_rejected(client: Client, docs, body, status, needles) -> None:
    response = await post(client, QUERY, body)
    assert_error(response, status, "invalid" if status == 400 else "too_large", *needles)


async def test_query_unknown_collection_is_404(client: Client) -> None:
    assert_error(await post(client, "/v1/collections/nope/query", {"vector": unit(0)}), 404, "not_found", "'nope'")


async def test_get_many_errors(client: Client, docs) -> None:
    assert_error(await post(client, "/v1/collections/docs/documents/get", {"ids": []}), 400, "invalid", "$.ids")
    assert_error(await post(client, "/v1/collections/docs/documents/get", {"ids": "d1"}), 400, "invalid", "$.ids")
    assert_error(await post(client, "/v1/collections/nope/documents/get", {"ids": ["a"]}), 404, "not_found", "'nope'")
    too_many = {"ids": [f"d{i}" for i in range(MAX_BATCH + 1)]}
    assert_error(await post(client, "/v1/collections/docs/documents/get", too_many), 413, "too_large", "server.max_batch")


# -- routing, server errors, request ids ------------------------------------------------------


async def test_unknown_route_and_wrong_method(client: Client) -> None:
    assert_error(await client.get("/v1/nothing"), 404, "not_found", "GET /v1/nothing")
    response = await client.put("/v1/collections")
    assert_error(response, 405, "method_not_allowed", "PUT")
    assert "POST" in response.headers["allow"]


async def test_unexpected_errors_are_500_with_a_request_id_and_no_internals(
    client: Client, docs, monkeypatch, caplog
) -> None:
    async def broken_query(self, *args, **kwargs):
        raise RuntimeError("secret internal detail /var/lib/tierdb")

    monkeypatch.setattr(Collection, "query", broken_query)
    with caplog.at_level(logging.ERROR, logger="tierdb.api"):
        response = await post(client, QUERY, {"vector": unit(0)}, headers={"x-request-id": "trace-500"})
    body = assert_error(response, 500, "internal", "trace-500")
    assert body["request_id"] == "trace-500"
    assert "secret" not in response.text and "RuntimeError" not in response.text
    record = next(r for r in caplog.records if r.name == "tierdb.api" and r.exc_info)
    assert "secret internal detail" in str(record.exc_info[1])
    assert record.request_id == "trace-500"


@pytest.mark.parametrize(
    ("incoming", "echoed"),
    [("abc-123_X.y", True), ("x" * 128, True), ("x" * 129, False), ("bad id", False), ("a\u00e9", False)],
)
async def test_request_ids_are_echoed_only_when_safe(client: Client, incoming: str, echoed: bool) -> None:
    response = await client.get("/v1/collections", headers={"x-request-id": incoming.encode("utf-8")})
    assert response.status_code == 200
    if echoed:
        assert response.headers["x-request-id"] == incoming
    else:
        assert response.headers["x-request-id"] != incoming
        assert len(response.headers["x-request-id"]) == 32


async def test_engine_routes_answer_503_until_recovery_finishes(open_client, monkeypatch) -> None:
    release = asyncio.Event()
    original_start = Engine.start

    async def slow_start(self):
        await release.wait()
        await original_start(self)

    monkeypatch.setattr(Engine, "start", slow_start)
    async with open_client(ready=False) as client:
        response = await client.get("/v1/collections")
        assert_error(response, 503, "unavailable", "starting")
        assert response.headers["retry-after"] == "1"
        assert (await client.get("/health/ready")).status_code == 503
        assert (await client.get("/health/live")).status_code == 200
        release.set()
        for _ in range(500):
            if (await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/v1/collections")).status_code == 200


def test_litestar_validation_errors_name_the_parameter() -> None:
    request = RequestFactory(app=Litestar(logging_config=None)).get("/v1/collections")
    problem = {"message": "Expected `int`, got `str`", "key": "limit", "source": "query"}
    response = http_exception_handler(request, ValidationException(detail="Validation failed", extra=[problem]))
    body = msgspec.json.decode(response.content)
    assert response.status_code == 400
    assert body["error"] == "invalid"
    assert body["message"] == "invalid request: query 'limit': Expected `int`, got `str`"
