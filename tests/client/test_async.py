"""AsyncTierDB against a real server: the same behaviour as the sync client, awaited."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tierdb.client import AsyncTierDB, CompactResult, Conflict, Hit, InvalidRequest, NotFound, Unavailable
from tests.client.support import DIM, dataset, unique


async def test_async_happy_path(server) -> None:
    name = unique()
    ids, vectors, metas = dataset(400)
    async with AsyncTierDB(server.url) as db:
        info = await db.create_collection(name, DIM, metric="ip")
        assert (info.name, info.metric) == (name, "ip")
        assert await db.upsert(name, ids, vectors, metas, batch_size=150) == 400
        assert await db.count(name) == 400
        assert name in [c.name for c in await db.list_collections()]
        docs = await db.get(name, ["d3", "zzz", "d2"])
        assert [d.id for d in docs] == ["d3", "d2"] and docs[0].metadata == metas[3]
        assert (await db.get_one(name, "d9")).metadata == metas[9]
        hits = await db.query(name, vector=vectors[0], k=4, include=["metadata", "vector"])
        assert all(isinstance(h, Hit) for h in hits) and len(hits) == 4
        expected = [ids[i] for i in np.argsort(-(vectors @ vectors[0]))[:4]]  # ip: largest dot first
        assert [h.id for h in hits] == expected
        assert hits[0].vector is not None and hits[0].metadata is not None
        batch = await db.query(name, vectors=vectors[:3], k=1, filter={"even": True})
        assert all(int(b[0].id[1:]) % 2 == 0 for b in batch)
        assert await db.delete(name, ids=["d0", "d1"]) == 2
        assert await db.delete(name, filter={"tag": "a"}) == 133  # 134 with i % 3 == 0, d0 already gone
        assert await db.count(name) == 400 - 2 - 133
        status = await db.status(name)
        assert status.count == 265 and status.policy == "memory"
        assert await db.dlq(name) == [] and await db.retry_dlq(name) == 0 and await db.clear_dlq(name) == 0
        result = await db.compact(name)
        assert isinstance(result, CompactResult) and result.flushed_rows > 0
        assert await db.query(name, vector=vectors[0], k=4, nprobe=2) == await db.query(name, vector=vectors[0], k=4)
        seen: list[str] = []
        warmed = await db.warm(name, wait=True, timeout=60, on_progress=lambda p: seen.append(p.state))
        assert (warmed.state, warmed.segments_done, warmed.error) == ("done", 1, "")
        assert seen[-1] == "done" and (await db.status(name)).warm == warmed
        await db.delete_collection(name)
        await db.delete_collection(name, missing_ok=True)


async def test_async_typed_errors(server) -> None:
    name = unique()
    async with AsyncTierDB(server.url) as db:
        await db.create_collection(name, DIM)
        with pytest.raises(Conflict):
            await db.create_collection(name, DIM)
        with pytest.raises(NotFound) as missing:
            await db.get_collection("async-missing")
        assert missing.value.status == 404 and missing.value.request_id
        with pytest.raises(InvalidRequest, match="dimension"):
            await db.query(name, vector=[1.0, 2.0], k=1)
        with pytest.raises(NotFound):
            await db.get_one(name, "nothing")
        await db.delete_collection(name)


async def test_async_concurrent_calls_share_one_client(server) -> None:
    name = unique()
    ids, vectors, _ = dataset(200)
    async with AsyncTierDB(server.url) as db:
        await db.create_collection(name, DIM)
        counts = await asyncio.gather(*(db.upsert(name, ids[i::4], vectors[i::4]) for i in range(4)))
        assert sum(counts) == 200
        results = await asyncio.gather(*(db.query(name, vector=vectors[i], k=1) for i in range(20)))
        assert [r[0].id for r in results] == ids[:20]
        await db.delete_collection(name)


async def test_async_retries_503_then_succeeds(server, proxy) -> None:
    name = unique()
    async with AsyncTierDB(server.url) as direct:
        await direct.create_collection(name, DIM)
    async with AsyncTierDB(proxy.url, retries=3, backoff=0.01) as db:
        proxy.fail_next(2, 503, retry_after="0")
        assert await db.upsert(name, ["a"], [[1.0] * DIM]) == 1
        assert len(proxy.requests("POST", "/documents")) == 3
        proxy.fail_next(5, 503)
        with pytest.raises(Unavailable):
            await db.count(name)
        proxy.reset()
        proxy.fail_next(1, 503)
        with pytest.raises(Unavailable):  # not idempotent: never retried on a 503
            await db.compact(name)
        assert len(proxy.requests("POST")) == 1
        await db.delete_collection(name)
