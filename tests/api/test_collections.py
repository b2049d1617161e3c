"""Collections: create, list, describe, drop."""

from __future__ import annotations

import pytest

from .conftest import DIM, Client, count, create, doc, make_settings, unit, upsert


async def test_create_returns_the_collection(client: Client) -> None:
    response = await client.post("/v1/collections", json={"name": "docs", "dimension": DIM})
    assert response.status_code == 201
    info = response.json()
    assert info["name"] == "docs"
    assert info["dimension"] == DIM
    assert info["metric"] == "cosine"
    assert info["tiering_policy"] == "memory"
    assert info["count"] == 0
    assert info["hnsw"] == {"m": 16, "ef_construction": 200, "ef_search": 128}
    assert info["created_at"] > 0


async def test_hnsw_fields_left_out_take_the_server_defaults(open_client, data_dir) -> None:
    settings = make_settings(data_dir, **{"index.m": 24, "index.ef_search": 64})
    async with open_client(settings) as client:
        info = await create(client, "docs", metric="l2", hnsw={"ef_construction": 100})
    assert info["metric"] == "l2"
    assert info["hnsw"] == {"m": 24, "ef_construction": 100, "ef_search": 64}


@pytest.mark.parametrize("spelling", ["memory", "Memory"])
async def test_policy_aliases_are_normalized(client: Client, spelling: str) -> None:
    info = await create(client, "docs", tiering_policy=spelling)
    assert info["tiering_policy"] == "memory"


async def test_creating_an_existing_collection_is_a_conflict(client: Client) -> None:
    await create(client, "docs")
    response = await client.post("/v1/collections", json={"name": "docs", "dimension": 8})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "'docs'" in response.json()["message"]
    assert (await client.get("/v1/collections/docs")).json()["dimension"] == DIM


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "Docs", "dimension": 4}, "collection name"),
        ({"name": "_docs", "dimension": 4}, "collection name"),
        ({"name": "a" * 64, "dimension": 4}, "collection name"),
        ({"name": "a/b", "dimension": 4}, "collection name"),
        ({"name": "docs", "dimension": 0}, "dimension"),
        ({"name": "docs", "dimension": 4097}, "dimension"),
        ({"name": "docs", "dimension": "4"}, "$.dimension"),
        ({"name": "docs", "dimension": 4, "metric": "hamming"}, "metric"),
        ({"name": "docs", "dimension": 4, "tiering_policy": "disk"}, "tiering_policy"),
        ({"name": "docs", "dimension": 4, "hnsw": {"m": 1}}, "hnsw.m"),
        ({"name": "docs", "dimension": 4, "hnsw": {"ef_search": 0}}, "hnsw.ef_search"),
        ({"name": "docs", "dimension": 4, "hnsw": {"M": 16}}, "unknown field `M`"),
        ({"name": "docs"}, "missing required field `dimension`"),
        ({"name": "docs", "dimension": 4, "shards": 3}, "unknown field `shards`"),
    ],
)
async def test_invalid_create_requests_are_rejected_and_create_nothing(
    client: Client, body: dict, needle: str
) -> None:
    response = await client.post("/v1/collections", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid"
    assert needle in response.json()["message"]
    assert (await client.get("/v1/collections")).json() == {"collections": []}


async def test_list_is_sorted_and_counts_documents(client: Client) -> None:
    await create(client, "b")
    await create(client, "a")
    await upsert(client, "b", [doc("x", unit(0)), doc("y", unit(1))])
    listed = (await client.get("/v1/collections")).json()["collections"]
    assert [c["name"] for c in listed] == ["a", "b"]
    assert [c["count"] for c in listed] == [0, 2]


async def test_describe_reports_the_spec_and_count(client: Client) -> None:
    await create(client, "docs", metric="ip")
    await upsert(client, "docs", [doc("x", unit(0))])
    info = (await client.get("/v1/collections/docs")).json()
    assert info["metric"] == "ip"
    assert info["count"] == 1


async def test_describe_unknown_collection_is_404(client: Client) -> None:
    response = await client.get("/v1/collections/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "'nope'" in response.json()["message"]


async def test_drop_removes_the_collection_and_its_data(client: Client) -> None:
    await create(client, "docs")
    await upsert(client, "docs", [doc("x", unit(0))])
    response = await client.delete("/v1/collections/docs")
    assert response.status_code == 204
    assert (await client.get("/v1/collections/docs")).status_code == 404
    assert (await client.delete("/v1/collections/docs")).status_code == 404
    await create(client, "docs")
    assert await count(client, "docs") == 0


async def test_collections_survive_a_restart(open_client) -> None:
    async with open_client() as client:
        await create(client, "docs", metric="l2")
        await upsert(client, "docs", [doc("x", unit(0)), doc("y", unit(1))])
    async with open_client() as client:
        info = (await client.get("/v1/collections/docs")).json()
    assert info["metric"] == "l2"
    assert info["count"] == 2
