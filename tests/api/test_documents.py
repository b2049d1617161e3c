"""Documents: upsert, get one, get many, delete by ids / filter."""

from __future__ import annotations

import pytest

from .conftest import Client, count, create, doc, get_docs, seeded, unit, upsert


async def test_upsert_acknowledges_the_number_written(client: Client) -> None:
    await create(client, "docs")
    result = await upsert(client, "docs", [doc("a", unit(0)), doc("b", unit(1), {"k": "v"})])
    assert result == {"upserted": 2}
    assert await count(client, "docs") == 2


async def test_get_one_returns_id_vector_and_metadata(client: Client) -> None:
    await create(client, "docs")
    await upsert(client, "docs", [doc("a", [0.5, 1, 2, -3], {"genre": "jazz", "n": [1, 2]}), doc("b", unit(1))])
    response = await client.get("/v1/collections/docs/documents/a")
    assert response.status_code == 200
    assert response.json() == {"id": "a", "vector": [0.5, 1.0, 2.0, -3.0], "metadata": {"genre": "jazz", "n": [1, 2]}}
    assert (await client.get("/v1/collections/docs/documents/b")).json()["metadata"] is None


async def test_get_one_missing_document_is_404_naming_it(client: Client) -> None:
    await create(client, "docs")
    response = await client.get("/v1/collections/docs/documents/ghost")
    assert response.status_code == 404
    assert "'ghost'" in response.json()["message"]


async def test_ids_are_any_utf8_string(client: Client) -> None:
    await create(client, "docs")
    await upsert(client, "docs", [doc("ünï cödé ✓", unit(0)), doc("x" * 256, unit(1))])
    found = await get_docs(client, "docs", ["ünï cödé ✓", "x" * 256])
    assert [d["id"] for d in found] == ["ünï cödé ✓", "x" * 256]


async def test_upsert_replaces_an_existing_id(client: Client) -> None:
    await create(client, "docs")
    await upsert(client, "docs", [doc("a", unit(0), {"v": 1})])
    await upsert(client, "docs", [doc("a", unit(1), {"v": 2})])
    assert await count(client, "docs") == 1
    (found,) = await get_docs(client, "docs", ["a"])
    assert found["vector"] == pytest.approx(unit(1))
    assert found["metadata"] == {"v": 2}


async def test_get_many_keeps_request_order_and_skips_missing(client: Client) -> None:
    await seeded(client, n=5)
    found = await get_docs(client, "docs", ["d3", "missing", "d0", "d4"])
    assert [d["id"] for d in found] == ["d3", "d0", "d4"]
    assert found[0]["metadata"] == {"i": 3, "even": False, "tag": "a"}


async def test_delete_by_ids_counts_only_documents_that_existed(client: Client) -> None:
    await seeded(client, n=5)
    response = await client.post("/v1/collections/docs/documents/delete", json={"ids": ["d1", "d2", "nope"]})
    assert response.status_code == 200
    assert response.json() == {"deleted": 2}
    assert await count(client, "docs") == 3
    assert await get_docs(client, "docs", ["d1", "d2"]) == []


async def test_delete_by_filter(client: Client) -> None:
    await seeded(client, n=10)
    response = await client.post("/v1/collections/docs/documents/delete", json={"filter": {"even": True}})
    assert response.json() == {"deleted": 5}
    remaining = await get_docs(client, "docs", [f"d{i}" for i in range(10)])
    assert [d["id"] for d in remaining] == ["d1", "d3", "d5", "d7", "d9"]


async def test_delete_by_ids_and_filter_deletes_listed_ids_that_match(client: Client) -> None:
    await seeded(client, n=10)
    body = {"ids": ["d0", "d1", "d2", "d3"], "filter": {"i": {"$gte": 2}}}
    response = await client.post("/v1/collections/docs/documents/delete", json=body)
    assert response.json() == {"deleted": 2}
    assert [d["id"] for d in await get_docs(client, "docs", ["d0", "d1", "d2", "d3"])] == ["d0", "d1"]


async def test_deleting_nothing_returns_zero(client: Client) -> None:
    await seeded(client, n=3)
    response = await client.post("/v1/collections/docs/documents/delete", json={"filter": {"tag": "zzz"}})
    assert response.json() == {"deleted": 0}
    assert await count(client, "docs") == 3


@pytest.mark.parametrize("vector", [[1, 2, 3, 4], [0, 0.5, -1, 1e10]])
async def test_integers_and_large_finite_values_are_valid_vector_entries(client: Client, vector: list) -> None:
    await create(client, "docs")
    await upsert(client, "docs", [doc("a", vector)])
    (found,) = await get_docs(client, "docs", ["a"])
    assert found["vector"] == pytest.approx([float(x) for x in vector], rel=1e-6)


async def test_writes_survive_a_restart(open_client) -> None:
    async with open_client() as client:
        await seeded(client, n=6)
        await client.post("/v1/collections/docs/documents/delete", json={"ids": ["d0"]})
        await upsert(client, "docs", [doc("d1", unit(5), {"replaced": True})])
    async with open_client() as client:
        assert await count(client, "docs") == 5
        assert await get_docs(client, "docs", ["d0"]) == []
        (d1,) = await get_docs(client, "docs", ["d1"])
        assert d1["metadata"] == {"replaced": True}
