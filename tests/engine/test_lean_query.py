"""The lean query path: small unfiltered queries answered without a thread hop, with exactly
the answers of the threaded path, and never waiting on the event loop for a lock."""

from __future__ import annotations

import asyncio
import threading

from tests.engine.conftest import random_vectors, spec
from tierdb.engine import reads


def _count_thread_hops(monkeypatch) -> list[int]:
    hops = [0]
    real = asyncio.to_thread

    async def counting(fn, *args, **kwargs):
        if getattr(fn, "__name__", "") == "_query_sync":
            hops[0] += 1
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(reads.asyncio, "to_thread", counting)
    return hops


async def _one_indexed_segment(engine, n=500, dim=8):
    await engine.create_collection(spec(dimension=dim))
    coll = engine.get_collection("docs")
    vectors = random_vectors(n, dim)
    await coll.upsert([f"d{i}" for i in range(n)], vectors, [{"i": i} for i in range(n)])
    await coll.compact(full=True)
    assert [s.indexed for s in coll.segments] == [True] and not coll.frozen
    return coll, vectors


async def test_small_unfiltered_query_needs_no_thread_hop(engine, monkeypatch):
    coll, vectors = await _one_indexed_segment(engine)
    hops = _count_thread_hops(monkeypatch)
    await coll.query(vectors[3], k=5)
    assert hops[0] == 0
    await coll.query(vectors[3], k=5, filter={"i": {"$gte": 10}})  # filters: always a thread
    await coll.query(vectors[:2], k=5)                             # batches: always a thread
    assert hops[0] == 2


async def test_inline_answers_equal_the_threaded_path(engine):
    coll, _ = await _one_indexed_segment(engine)
    # a few memtable rows (one replacing a segment row) and a deletion: answers are merged
    await coll.upsert(["d7", "new1", "new2"], random_vectors(3, 8, seed=5), [None, {"i": -1}, None])
    await coll.delete(ids=["d9"])
    for q in random_vectors(40, 8, seed=9):
        for include in (False, True):
            inline = await coll.query(q, k=10, include_metadata=include, include_vector=include)
            threaded = coll._query_sync(q[None, :], 10, None, "", include, include, coll.hnsw.ef_search)
            assert inline == threaded
            assert "d9" not in [h.id for h in inline[0]]


async def test_inline_query_never_waits_for_a_writer(engine, monkeypatch):
    coll, vectors = await _one_indexed_segment(engine)
    hops = _count_thread_hops(monkeypatch)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with coll._rw.write():
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(30)
    query = asyncio.ensure_future(coll.query(vectors[0], k=3))
    await asyncio.sleep(0.05)
    assert not query.done() and hops[0] == 1  # went to a thread instead of blocking the loop
    release.set()
    hits = await asyncio.wait_for(query, 30)
    thread.join()
    assert hits[0][0].id == "d0"


async def test_large_or_concurrent_queries_keep_the_thread(engine, monkeypatch):
    coll, vectors = await _one_indexed_segment(engine)
    hops = _count_thread_hops(monkeypatch)
    monkeypatch.setattr(type(coll), "_INLINE_INDEX_ROWS", 100)
    await coll.query(vectors[0], k=3)
    assert hops[0] == 1
    monkeypatch.setattr(type(coll), "_INLINE_INDEX_ROWS", 1_000_000)
    await coll.query(vectors[0], k=3, ef=coll.hnsw.ef_search + 1)  # another ef: the ef lock's write side
    assert hops[0] == 2
    results = await asyncio.gather(*(coll.query(v, k=3) for v in vectors[:8]))
    assert [r[0][0].id for r in results] == [f"d{i}" for i in range(8)]
