"""Query: nearest neighbours, include, filters, batches, metrics."""

from __future__ import annotations

import math

import pytest

from tierdb.engine.collection import Collection

from .conftest import Client, create, doc, seeded, unit, upsert


async def query(client: Client, name: str = "docs", **body) -> dict:
    response = await client.post(f"/v1/collections/{name}/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_single_query_returns_hits_sorted_by_distance(client: Client) -> None:
    await seeded(client, n=10)
    results = (await query(client, vector=unit(3), k=4))["results"]
    assert len(results) == 4
    assert results[0]["id"] == "d3"
    assert results[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    distances = [hit["distance"] for hit in results]
    assert distances == sorted(distances)
    assert set(results[0]) == {"id", "distance"}


async def test_include_metadata_and_vector(client: Client) -> None:
    await seeded(client, n=4)
    await upsert(client, "docs", [doc("bare", [9, 9, 9, 9])])
    results = (await query(client, vector=[9, 9, 9, 9], k=2, include=["metadata", "vector"]))["results"]
    assert results[0] == {"id": "bare", "distance": pytest.approx(0.0, abs=1e-5), "metadata": None,
                          "vector": [9.0, 9.0, 9.0, 9.0]}
    assert results[1]["metadata"]["tag"] in {"a", "b", "c"}
    only_md = (await query(client, vector=unit(1), k=1, include=["metadata"]))["results"][0]
    assert set(only_md) == {"id", "distance", "metadata"}


async def test_batch_query_answers_in_query_order(client: Client) -> None:
    await seeded(client, n=8)
    results = (await query(client, vectors=[unit(5), unit(2), unit(7)], k=1))["results"]
    assert [[hit["id"] for hit in row] for row in results] == [["d5"], ["d2"], ["d7"]]


async def test_k_larger_than_the_collection_returns_everything(client: Client) -> None:
    await seeded(client, n=3)
    assert len((await query(client, vector=unit(0), k=50))["results"]) == 3


async def test_query_on_an_empty_collection_returns_no_hits(client: Client) -> None:
    await create(client, "docs")
    assert (await query(client, vector=unit(0)))["results"] == []


@pytest.mark.parametrize(
    ("flt", "predicate"),
    [
        ({"even": True}, lambda md: md["even"] is True),
        ({"tag": {"$in": ["a", "c"]}}, lambda md: md["tag"] in ("a", "c")),
        ({"tag": {"$ne": "a"}}, lambda md: md["tag"] != "a"),
        ({"i": {"$gt": 3, "$lte": 7}}, lambda md: 3 < md["i"] <= 7),
        ({"$or": [{"i": {"$lt": 2}}, {"tag": "c"}]}, lambda md: md["i"] < 2 or md["tag"] == "c"),
        ({"$and": [{"even": False}, {"i": {"$gte": 5}}]}, lambda md: not md["even"] and md["i"] >= 5),
    ],
)
async def test_every_hit_satisfies_the_filter(client: Client, flt: dict, predicate) -> None:
    documents = await seeded(client, n=30)
    expected = {d["id"] for d in documents if predicate(d["metadata"])}
    results = (await query(client, vector=unit(0), k=30, filter=flt, include=["metadata"]))["results"]
    assert {hit["id"] for hit in results} == expected
    assert all(predicate(hit["metadata"]) for hit in results)


async def test_a_selective_filter_still_returns_up_to_k_matches(client: Client) -> None:
    await create(client, "docs")
    documents = [doc(f"d{i}", unit(i), {"rare": i % 100 == 0}) for i in range(300)]
    for start in range(0, 300, 100):
        await upsert(client, "docs", documents[start:start + 100])
    results = (await query(client, vector=unit(1), k=5, filter={"rare": True}))["results"]
    assert sorted(hit["id"] for hit in results) == ["d0", "d100", "d200"]


async def test_l2_and_ip_distances_follow_hnswlib_conventions(client: Client) -> None:
    await create(client, "l2", metric="l2")
    await create(client, "ip", metric="ip")
    for name in ("l2", "ip"):
        await upsert(client, name, [doc("a", [1, 0, 0, 0]), doc("b", [0, 2, 0, 0])])
    l2 = (await query(client, "l2", vector=[0, 0, 0, 0], k=2))["results"]
    assert [(h["id"], h["distance"]) for h in l2] == [("a", pytest.approx(1.0)), ("b", pytest.approx(4.0))]
    ip = (await query(client, "ip", vector=[1, 1, 0, 0], k=2))["results"]
    assert [(h["id"], h["distance"]) for h in ip] == [("b", pytest.approx(-1.0)), ("a", pytest.approx(0.0))]


async def test_ef_is_accepted(client: Client) -> None:
    await seeded(client, n=5)
    results = (await query(client, vector=unit(2), k=2, ef=256))["results"]
    assert results[0]["id"] == "d2"
    assert all(math.isfinite(hit["distance"]) for hit in results)


async def test_deleted_documents_are_never_returned(client: Client) -> None:
    await seeded(client, n=6)
    await client.post("/v1/collections/docs/documents/delete", json={"ids": ["d2"]})
    results = (await query(client, vector=unit(2), k=6))["results"]
    assert "d2" not in {hit["id"] for hit in results}
    assert len(results) == 5


async def test_nprobe_reaches_the_engine_and_hnswlib_segments_ignore_it(client: Client, monkeypatch) -> None:
    """nprobe only steers partitioned (s3_only) segments: on a memory collection the answer is
    the one without it, and the value is handed to the engine as given."""
    await seeded(client, n=5)
    seen: list[int | None] = []
    original = Collection.query

    async def recording(self, *args, **kwargs):
        seen.append(kwargs.get("nprobe"))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "query", recording)
    plain = (await query(client, vector=unit(2), k=3))["results"]
    probed = (await query(client, vector=unit(2), k=3, nprobe=7))["results"]
    assert probed == plain and probed[0]["id"] == "d2"
    assert seen == [None, 7]


async def test_ef_is_checked_before_nprobe(client: Client) -> None:
    await seeded(client, n=2)
    response = await client.post("/v1/collections/docs/query", json={"vector": unit(0), "ef": 0, "nprobe": 0})
    assert response.status_code == 400 and response.json()["field"] == "ef"
