"""Content negotiation: msgpack request bodies and responses, same validation as JSON."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from .conftest import DIM, Client, count, create, doc, get_docs, seeded, unit

MSGPACK_TYPES = ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"]


def packed(payload) -> bytes:
    return msgspec.msgpack.encode(payload)


@pytest.mark.parametrize("content_type", MSGPACK_TYPES)
async def test_upsert_accepts_msgpack(client: Client, content_type: str) -> None:
    await create(client, "docs")
    documents = [doc(f"m{i}", unit(i), {"i": i}) for i in range(20)]
    response = await client.post(
        "/v1/collections/docs/documents", content=packed({"documents": documents}), headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"upserted": 20}
    assert await count(client, "docs") == 20


async def test_float32_vectors_round_trip_exactly_through_msgpack(client: Client) -> None:
    await create(client, "docs")
    vector = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    body = packed({"documents": [{"id": "r", "vector": vector.tolist()}]})
    await client.post("/v1/collections/docs/documents", content=body, headers={"content-type": "application/msgpack"})
    response = await client.post(
        "/v1/collections/docs/documents/get",
        content=packed({"ids": ["r"]}),
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert response.headers["content-type"] == "application/msgpack"
    (found,) = msgspec.msgpack.decode(response.content)["documents"]
    assert np.array_equal(np.asarray(found["vector"], dtype=np.float32), vector)


async def test_query_with_msgpack_in_and_out(client: Client) -> None:
    await seeded(client, n=6)
    body = packed({"vectors": [unit(1), unit(4)], "k": 2, "include": ["metadata"]})
    response = await client.post(
        "/v1/collections/docs/query",
        content=body,
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/msgpack"
    results = msgspec.msgpack.decode(response.content)["results"]
    assert [row[0]["id"] for row in results] == ["d1", "d4"]
    assert results[0][0]["metadata"]["i"] == 1


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/msgpack", "application/msgpack"),
        ("application/x-msgpack", "application/msgpack"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/json;q=0.5, application/msgpack", "application/msgpack"),
        ("application/msgpack;q=0.1, application/json", "application/json"),
        ("text/html", "application/json"),
    ],
)
async def test_response_format_follows_accept(client: Client, accept: str, expected: str) -> None:
    await create(client, "docs")
    response = await client.get("/v1/collections/docs", headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == expected
    decoded = msgspec.msgpack.decode(response.content) if "msgpack" in expected else response.json()
    assert decoded["name"] == "docs"


async def test_create_collection_accepts_msgpack(client: Client) -> None:
    response = await client.post(
        "/v1/collections",
        content=packed({"name": "packed", "dimension": 3, "metric": "l2"}),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 201
    assert response.json()["metric"] == "l2"


async def test_msgpack_bodies_get_the_same_validation_messages_as_json(client: Client) -> None:
    await create(client, "docs")
    bad = {"documents": [{"id": "a", "vector": [1.0, "x", 2.0, 3.0]}]}
    as_json = await client.post("/v1/collections/docs/documents", json=bad)
    as_msgpack = await client.post(
        "/v1/collections/docs/documents", content=packed(bad), headers={"content-type": "application/msgpack"}
    )
    assert as_json.status_code == as_msgpack.status_code == 400
    assert as_json.json()["message"] == as_msgpack.json()["message"]
    assert "$.documents[0].vector[1]" in as_msgpack.json()["message"]


@pytest.mark.parametrize("value", [math.nan, math.inf])
async def test_msgpack_nan_in_a_query_is_400(client: Client, value: float) -> None:
    await seeded(client, n=3)
    response = await client.post(
        "/v1/collections/docs/query",
        content=packed({"vector": [value, 0.0, 0.0, 0.0]}),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 400
    assert "NaN" in response.json()["message"]


async def test_malformed_msgpack_is_400_and_changes_nothing(client: Client) -> None:
    await seeded(client, n=3)
    response = await client.post(
        "/v1/collections/docs/documents",
        content=b"\xc1\x00\x01",
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 400
    assert "malformed msgpack" in response.json()["message"]
    assert await count(client, "docs") == 3


async def test_errors_are_json_even_when_msgpack_is_accepted(client: Client) -> None:
    response = await client.get("/v1/collections/nope", headers={"accept": "application/msgpack"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_found"


async def test_msgpack_upsert_then_json_read(client: Client) -> None:
    await create(client, "docs")
    body = packed({"documents": [doc("a", [1, 2, 3, 4], {"nested": {"x": [1, None, "y"]}})]})
    await client.post("/v1/collections/docs/documents", content=body, headers={"content-type": "application/msgpack"})
    (found,) = await get_docs(client, "docs", ["a"])
    assert found["metadata"] == {"nested": {"x": [1, None, "y"]}}


@pytest.mark.parametrize(
    ("nprobe", "needle"),
    [(0, "nprobe must be between 1 and 4096"), (-1, "nprobe must be between 1 and 4096"),
     (4097, "nprobe must be between 1 and 4096"), ("x", "$.nprobe"), (True, "$.nprobe")],
)
async def test_msgpack_query_checks_nprobe_like_json(client: Client, nprobe, needle: str) -> None:
    await seeded(client, n=3)
    body = {"vector": unit(1), "k": 2, "nprobe": nprobe}
    as_json = await client.post("/v1/collections/docs/query", json=body)
    as_msgpack = await client.post(
        "/v1/collections/docs/query", content=packed(body), headers={"content-type": "application/msgpack"}
    )
    assert as_json.status_code == as_msgpack.status_code == 400
    assert as_json.json()["message"] == as_msgpack.json()["message"]
    assert needle in as_msgpack.json()["message"]
    assert await count(client, "docs") == 3


async def test_msgpack_query_accepts_nprobe(client: Client) -> None:
    await seeded(client, n=6)
    response = await client.post(
        "/v1/collections/docs/query",
        content=packed({"vector": unit(4), "k": 2, "nprobe": 16}),
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert response.status_code == 200, response.text
    assert msgspec.msgpack.decode(response.content)["results"][0]["id"] == "d4"
