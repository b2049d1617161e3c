"""End-to-end behaviour of one collection under the memory policy."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tierdb.errors import ErrorKind, TierDBError
from tierdb.engine import segment as segment_mod

from .conftest import random_vectors, reopen, spec


def exact_neighbours(base: np.ndarray, queries: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1 - q @ b.T
    elif metric == "ip":
        d = 1 - queries @ base.T
    else:
        d = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
async def test_query_matches_exact_distances_in_memtable(engine, metric):
    await engine.create_collection(spec(metric=metric))
    coll = engine.get_collection("docs")
    base = random_vectors(50, 8)
    await coll.upsert([str(i) for i in range(50)], base)
    queries = random_vectors(3, 8, seed=1)
    hits = await coll.query(queries, k=5)
    order, dist = exact_neighbours(base, queries, metric, 5)
    for qi in range(3):
        assert [h.id for h in hits[qi]] == [str(i) for i in order[qi]]
        np.testing.assert_allclose([h.distance for h in hits[qi]], dist[qi], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
async def test_indexed_segment_agrees_with_brute_force(engine, metric):
    await engine.create_collection(spec(metric=metric))
    coll = engine.get_collection("docs")
    base = random_vectors(300, 8)
    await coll.upsert([str(i) for i in range(300)], base)
    await coll.compact(full=True)
    assert coll.segments and coll.segments[0].indexed
    queries = random_vectors(10, 8, seed=3)
    hits = await coll.query(queries, k=5, ef=200)
    order, dist = exact_neighbours(base, queries, metric, 5)
    agree = np.mean([len({h.id for h in hits[i]} & {str(j) for j in order[i]}) / 5 for i in range(10)])
    assert agree >= 0.95
    np.testing.assert_allclose(hits[0][0].distance, dist[0][0], rtol=1e-3, atol=1e-3)


async def test_get_returns_found_ids_in_request_order(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    vecs = random_vectors(3, 8)
    await coll.upsert(["a", "b", "c"], vecs, [{"n": 1}, None, {"n": 3}])
    docs = await coll.get(["c", "missing", "a"])
    assert [d.id for d in docs] == ["c", "a"]
    assert docs[0].metadata == {"n": 3}
    np.testing.assert_allclose(docs[1].vector, vecs[0])


@pytest.mark.parametrize("stage", ["memtable", "segment", "merged"])
async def test_upsert_replaces_existing_id_wherever_it_lives(engine, stage):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert([str(i) for i in range(100)], random_vectors(100, 8), [{"v": 1}] * 100)
    if stage != "memtable":
        await coll.compact(full=(stage == "merged"))
    new_vec = np.full((1, 8), 0.5, np.float32)
    await coll.upsert(["7"], new_vec, [{"v": 2}])
    assert coll.count() == 100
    [doc] = await coll.get(["7"])
    assert doc.metadata == {"v": 2}
    hits = await coll.query(new_vec, k=100, include_metadata=True)
    ids = [h.id for h in hits[0]]
    assert len(ids) == len(set(ids)) == 100
    assert hits[0][0].id == "7" and hits[0][0].metadata == {"v": 2}
    await coll.compact(full=True)
    fresh = await reopen(engine)
    coll = fresh.get_collection("docs")
    assert coll.count() == 100
    assert (await coll.get(["7"]))[0].metadata == {"v": 2}
    await fresh.close()


async def test_deletes_survive_restart_and_compaction(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert([str(i) for i in range(200)], random_vectors(200, 8), [{"even": i % 2 == 0} for i in range(200)])
    await coll.compact()
    assert await coll.delete(ids=["1", "3", "nope"]) == 2
    assert await coll.delete(filter={"even": True}) == 100
    assert coll.count() == 98
    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    assert coll.count() == 98
    await coll.compact(full=True)
    assert sum(s.size() for s in coll.segments) == 98  # dead rows purged
    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    assert coll.count() == 98
    hits = await coll.query(random_vectors(1, 8), k=200)
    assert len(hits[0]) == 98
    assert not {h.id for h in hits[0]} & {"1", "3", "0", "2"}
    await engine.close()


async def test_delete_with_ids_and_filter_deletes_the_listed_ids_that_match(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert(["a", "b", "c"], random_vectors(3, 8), [{"t": 1}, {"t": 2}, {"t": 1}])
    assert await coll.delete(ids=["a", "b"], filter={"t": 1}) == 1
    assert sorted(d.id for d in await coll.get(["a", "b", "c"])) == ["b", "c"]


async def test_selective_filter_still_returns_k_results_from_a_large_index(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    n = 3000
    meta = [{"group": "rare" if i % 300 == 0 else "common", "i": i} for i in range(n)]
    await coll.upsert([str(i) for i in range(n)], random_vectors(n, 8), meta)
    await coll.compact(full=True)
    hits = await coll.query(random_vectors(2, 8, seed=9), k=10, filter={"group": "rare"}, include_metadata=True)
    for per_query in hits:
        assert len(per_query) == 10
        assert all(h.metadata["group"] == "rare" for h in per_query)
    hits = await coll.query(random_vectors(1, 8, seed=9), k=10, filter={"i": {"$gte": 100, "$lt": 2900}})
    assert len(hits[0]) == 10 and all(100 <= int(h.id) < 2900 for h in hits[0])


async def test_restart_loads_saved_index_without_rebuilding(engine, monkeypatch):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert([str(i) for i in range(500)], random_vectors(500, 8))
    await coll.compact(full=True)
    await coll.upsert(["late"], random_vectors(1, 8, seed=5))  # stays in the WAL
    before = await coll.query(random_vectors(1, 8, seed=2), k=10)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("start-up rebuilt an index")

    monkeypatch.setattr(segment_mod, "build_index", no_rebuild)
    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    assert coll.count() == 501 and coll.segments[0].indexed
    after = await coll.query(random_vectors(1, 8, seed=2), k=10)
    assert [h.id for h in after[0]] == [h.id for h in before[0]]
    await engine.close()


async def test_bad_writes_change_nothing(engine):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    await coll.upsert(["a"], random_vectors(1, 8))
    bad = [
        (["b"], random_vectors(1, 7), None),                     # wrong dimension
        (["b"], np.full((1, 8), np.nan, np.float32), None),      # NaN
        (["b"], [[1e39] * 8], None),                             # overflows float32
        (["b"], [[3e38] * 8], None),                             # finite, but its norm overflows
        (["b", "b"], random_vectors(2, 8), None),                # duplicate id
        ([""], random_vectors(1, 8), None),                      # empty id
        (["x" * 257], random_vectors(1, 8), None),               # too long
        ([], np.zeros((0, 8), np.float32), None),                # empty batch
        (["b"], [["x"] * 8], None),                              # non-numeric
        (["b"], random_vectors(1, 8), [[1, 2]]),                 # metadata not an object
        (["b"], random_vectors(1, 8), [{"big": 2**70}]),         # integer msgpack cannot hold
    ]
    for ids, vecs, md in bad:
        with pytest.raises(TierDBError) as err:
            await coll.upsert(ids, vecs, md)
        assert err.value.kind is ErrorKind.INVALID
    assert coll.count() == 1 and coll.stats().wal_seq == 1
    for k in (0, -1, 10_001):
        with pytest.raises(TierDBError, match="k must be"):
            await coll.query(random_vectors(1, 8), k=k)
    with pytest.raises(TierDBError, match="unknown operator"):
        await coll.query(random_vectors(1, 8), k=1, filter={"a": {"$regex": "x"}})
    with pytest.raises(TierDBError, match="unknown operator"):
        await coll.delete(filter={"$not": {"a": 1}})
    assert coll.count() == 1


async def test_concurrent_writers_share_fsyncs(engine, monkeypatch):
    await engine.create_collection(spec())
    coll = engine.get_collection("docs")
    appends = []
    original = coll.wal.append

    def counting(frames, first_seq=0):
        appends.append(len(frames))
        return original(frames, first_seq)

    monkeypatch.setattr(coll.wal, "append", counting)
    await asyncio.gather(*(coll.upsert([f"d{i}"], random_vectors(1, 8, seed=i)) for i in range(100)))
    assert coll.count() == 100
    assert sum(appends) == 100
    assert len(appends) < 100  # group commit: fewer durable writes than writers


async def test_writes_during_flush_are_kept(tmp_path):
    from tierdb.node import Engine

    from .conftest import make_settings

    eng = Engine(make_settings(tmp_path, threshold=64, threshold_ops=50))
    await eng.start()
    await eng.create_collection(spec())
    coll = eng.get_collection("docs")

    async def writer(w):
        for i in range(40):
            await coll.upsert([f"w{w}-{i}"], random_vectors(1, 8, seed=w * 100 + i))
            if i % 7 == 0:
                await coll.delete(ids=[f"w{w}-{i}"])

    await asyncio.gather(*(writer(w) for w in range(5)), coll.compact(), coll.compact())
    expected = {f"w{w}-{i}" for w in range(5) for i in range(40) if i % 7}
    assert coll.count() == len(expected)
    eng = await reopen(eng)
    coll = eng.get_collection("docs")
    assert {d.id for d in await coll.get(sorted(expected | {"w0-0"}))} == expected
    await eng.close()


async def test_collection_lifecycle(engine):
    info = await engine.create_collection(spec(name="a-1"))
    assert info.tiering_policy == "memory" and info.hnsw.m == 16
    with pytest.raises(TierDBError) as err:
        await engine.create_collection(spec(name="a-1"))
    assert err.value.kind is ErrorKind.CONFLICT
    await engine.get_collection("a-1").upsert(["x"], random_vectors(1, 8))
    await engine.drop_collection("a-1")
    with pytest.raises(TierDBError) as err:
        engine.get_collection("a-1")
    assert err.value.kind is ErrorKind.NOT_FOUND
    await engine.create_collection(spec(name="a-1"))
    assert engine.get_collection("a-1").count() == 0
    for bad in ("A", "-x", "x" * 64, "../etc", ""):
        with pytest.raises(TierDBError):
            await engine.create_collection(spec(name=bad))


async def test_a_data_directory_serves_one_process_at_a_time(engine):
    from tierdb.node import Engine

    second = Engine(engine.settings)
    with pytest.raises(TierDBError, match="in use by another TierDB process") as err:
        await second.start()
    assert err.value.kind is ErrorKind.CONFLICT
    await engine.close()
    third = Engine(engine.settings)   # released on close
    await third.start()
    await third.close()
