"""S3 faults against engines on the real S3 server: latency spikes, 5xx/SlowDown, connection
resets, timeouts mid-upload, PUTs that succeed but whose response is lost, exhausted retries,
permanent errors, and the server itself going away.

Faults come from FaultInjectingStore inside the engine's S3 store (``fault_stores``, see
conftest.py) and from a chaos proxy between botocore and the server (``chaos``, see
chaos_proxy.py: real resets, real 503 SlowDown / 500 InternalError replies, real read timeouts).

What must hold, whatever the fault:
- memory_s3: writes keep being acknowledged; S3 ends with one consistent manifest chain (no gap,
  no duplicated manifest, every referenced segment present with its checksum, the WAL after the
  newest manifest contiguous); a fresh node restored from S3 has exactly the node's state.
- s3_only: a write whose WAL PUT fails is a 503 and applies nothing; an acknowledged write is in
  S3 exactly once; writes continue once S3 answers again; a fresh node agrees with the node.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tierdb import keys
from tierdb.config import RetrySettings
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import CollectionSpec

from .conftest import plain_store, s3_chain_report, started, state_of

pytestmark = pytest.mark.s3

DIM = 8
NAME = "docs"
RETRY = RetrySettings(max_retries=3, base_backoff_secs=0.01, max_backoff_secs=0.05)


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


async def fill(coll, start: int, n: int, seed: int = 0, tag: str = "a") -> list[str]:
    ids = [f"d{i}" for i in range(start, start + n)]
    await coll.upsert(ids, vectors(n, seed), [{"i": i, "tag": tag} for i in range(start, start + n)])
    return ids


async def snapshot(coll, ids) -> dict:
    return state_of(await coll.get(sorted(set(ids))))


async def neighbours(coll) -> list[list[str]]:
    return [[h.id for h in hits] for hits in await coll.query(vectors(4, 99), k=10)]


async def assert_fresh_node_matches(make_settings, node_name: str, policy: str, expected: dict, nn: list, ids) -> None:
    fresh = await started(make_settings(node_name, policy=policy))
    try:
        coll = fresh.get_collection(NAME)
        assert coll.count() == len(expected)
        assert await snapshot(coll, ids) == expected
        assert await neighbours(coll) == nn
    finally:
        await fresh.close()


# == memory_s3: the uploader ==========================================================================


async def test_memory_s3_upload_rides_out_latency_5xx_and_lost_responses(make_settings, fault_stores, s3_up):
    injectors = fault_stores("inner")
    settings = make_settings("a", retry=RETRY)
    node = await started(settings)
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 200)
    await coll.compact()
    ids += await fill(coll, 200, 60, seed=1)
    await coll.delete(ids=["d3", "d250"])

    faults.inject("latency", ops="put", delay=0.25, times=2)                           # latency spikes
    faults.fail_next(2, ops="put", prefix=keys.segment_prefix(NAME))                   # 503 twice
    faults.inject("lose_response", ops="put", prefix=keys.manifest_prefix(NAME), times=1)
    faults.inject("lose_response", ops="put", prefix=keys.wal_prefix(NAME), times=1)
    faults.fail_next(1, ops="put", prefix=keys.wal_prefix(NAME))
    assert await coll.uploader.run_once() >= 3
    assert coll.dlq_entries() == [] and faults.faults == []
    puts = faults.count("put")

    # a second round, on top of a merged state
    ids += await fill(coll, 260, 80, seed=2)
    await coll.compact(full=True)
    await coll.delete(filter={"i": {"$lt": 10}})
    faults.inject("lose_response", ops="put", prefix=keys.manifest_prefix(NAME), times=1)
    faults.inject("lose_response", ops="put", prefix=keys.segment_prefix(NAME), times=1)
    faults.fail_next(1, ops="put")
    assert await coll.uploader.run_once() >= 2
    assert coll.dlq_entries() == [] and faults.faults == []
    assert faults.count("put") > puts

    store = plain_store(settings, s3_up)
    try:
        report = await s3_chain_report(store, NAME)
    finally:
        await store.close()
    assert report["versions"][-1] == 3, report          # v1 by the create, then one per upload, none duplicated
    stats = coll.stats()
    assert stats.upload_queue_size == 0 and stats.upload_lag_secs == 0
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    await node.close()
    await assert_fresh_node_matches(make_settings, "b", "memory_s3", expected, nn, ids)


async def test_memory_s3_exhausted_retries_keep_retrying_and_permanent_errors_heal_by_themselves(
        make_settings, fault_stores, s3_up):
    injectors = fault_stores("inner")
    settings = make_settings("a", retry=RETRY)
    node = await started(settings)
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 100)
    await coll.compact()
    await coll.uploader.run_once()

    ids += await fill(coll, 100, 100, seed=1)
    await coll.compact()
    stuck = faults.inject("transient", ops="put", prefix=keys.manifest_prefix(NAME))   # every attempt
    await coll.uploader.run_once()
    await coll.uploader.run_once()
    assert coll.dlq_entries() == []                       # transient: never the DLQ ...
    assert coll.stats().upload_failures == 2              # ... but counted, and retried
    ids += await fill(coll, 200, 10, seed=2)              # writes are still acknowledged
    faults.remove(stuck)
    store = plain_store(settings, s3_up)
    try:
        assert (await s3_chain_report(store, NAME))["versions"] == [1, 2]   # S3 kept its consistent state

        ids += await fill(coll, 210, 10, seed=3)
        faults.inject("permanent", ops="put", times=2)     # 403-like: never retried within a run
        await coll.uploader.run_once()
        [entry] = coll.dlq_entries()
        assert entry.permanent and entry.attempts == 1
        await coll.uploader.run_once()                     # the re-probe is still refused
        [entry] = coll.dlq_entries()
        assert entry.attempts == 2
        assert await coll.uploader.run_once() >= 1         # the cause cleared: no operator needed
        assert coll.dlq_entries() == [] and coll.state == "ready"
        report = await s3_chain_report(store, NAME)
    finally:
        await store.close()
    assert report["versions"] == [1, 2, 3]
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    await node.close()
    await assert_fresh_node_matches(make_settings, "b", "memory_s3", expected, nn, ids)


async def test_memory_s3_lost_manifest_response_then_more_writes_does_not_fence_the_node(
        make_settings, fault_stores, s3_up):
    injectors = fault_stores("inner")
    settings = make_settings("a", retry=RETRY)
    node = await started(settings)
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 100)
    await coll.compact()
    await coll.uploader.run_once()                        # S3 manifest 1

    ids += await fill(coll, 100, 50, seed=1)
    await coll.compact()
    # Manifest 2 lands, but the node never hears so: the first attempt's response is lost and
    # every retry fails.
    faults.inject("lose_response", ops="put", prefix=keys.manifest_prefix(NAME), times=1)
    faults.inject("transient", ops="put", prefix=keys.manifest_prefix(NAME), times=RETRY.max_retries)
    await coll.uploader.run_once()
    assert coll.dlq_entries() == [] and coll.stats().upload_failures == 1
    assert faults.faults == []

    ids += await fill(coll, 150, 50, seed=2)
    await coll.compact()                                  # the local manifest moves on
    await coll.uploader.run_once()
    try:
        assert coll.state == "ready", f"the node fenced itself: {coll.error}"
        assert coll.dlq_entries() == []
        await fill(coll, 200, 5, seed=3)                  # still writable
        ids += [f"d{i}" for i in range(200, 205)]
        await coll.uploader.run_once()
        store = plain_store(settings, s3_up)
        try:
            await s3_chain_report(store, NAME)
        finally:
            await store.close()
        expected, nn = await snapshot(coll, ids), await neighbours(coll)
    finally:
        await node.close()
    await assert_fresh_node_matches(make_settings, "b", "memory_s3", expected, nn, ids)


async def test_memory_s3_crash_between_manifest_put_and_state_save_does_not_fence(make_settings, s3_up):
    from tierdb.keys import UPLOAD_STATE_FILE as STATE_FILE

    settings = make_settings("a")
    node = await started(settings)
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 50)
    await coll.compact()
    await coll.uploader.run_once()                          # S3 manifest 1, state saved
    state_path = Path(settings.storage.data_dir) / "collections" / NAME / STATE_FILE
    before = state_path.read_bytes()
    ids += await fill(coll, 50, 50, seed=1)
    await coll.compact()
    await coll.uploader.run_once()                          # S3 manifest 2 ...
    await node.close()
    state_path.write_bytes(before)                          # ... but the kill came before the state save

    node = await started(settings)
    try:
        coll = node.get_collection(NAME)
        ids += await fill(coll, 100, 50, seed=2)
        await coll.compact()                                # the local manifest moves on
        await coll.uploader.run_once()
        assert coll.state == "ready", f"the node fenced itself: {coll.error}"
        ids += await fill(coll, 150, 5, seed=3)
        await coll.uploader.run_once()
        store = plain_store(settings, s3_up)
        try:
            await s3_chain_report(store, NAME)
        finally:
            await store.close()
        expected, nn = await snapshot(coll, ids), await neighbours(coll)
    finally:
        await node.close()
    await assert_fresh_node_matches(make_settings, "b", "memory_s3", expected, nn, ids)


async def test_memory_s3_network_faults_through_the_chaos_proxy(make_settings, chaos, s3_up):
    """Real botocore errors: reset, 503 SlowDown, 500 InternalError, an upload cut mid-body
    (read timeout), a lost PUT response; then a 403 AccessDenied goes to the DLQ at once."""
    settings = make_settings("a", endpoint=chaos.endpoint, read_timeout=1.0,
                             retry=RetrySettings(max_retries=4, base_backoff_secs=0.01, max_backoff_secs=0.05))
    node = await started(settings)
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 300)
    await coll.compact()
    ids += await fill(coll, 300, 40, seed=1)
    await coll.delete(ids=["d7", "d310"])

    chaos.add("cut_upload", method="PUT", path="/segments/", seconds=1.5)
    chaos.add("status", method="PUT", path="/segments/", status=503, code="SlowDown")
    chaos.add("lost_response", method="PUT", path="/manifest/")
    chaos.add("status", method="PUT", path="/manifest/", status=500, code="InternalError")
    chaos.add("reset", method="PUT", path="/wal/")
    chaos.add("lost_response", method="PUT", path="/wal/")
    chaos.add("delay", method="GET", seconds=0.3, times=2)
    assert await coll.uploader.run_once() >= 3
    assert coll.dlq_entries() == []
    assert chaos.fired() >= 6, chaos.seen

    ids += await fill(coll, 340, 10, seed=2)
    await coll.compact()
    chaos.add("status", method="PUT", status=403, code="AccessDenied")
    await coll.uploader.run_once()
    [entry] = coll.dlq_entries()
    assert entry.permanent and entry.attempts == 1 and entry.code == "AccessDenied"
    assert await coll.uploader.run_once() >= 1 and coll.dlq_entries() == []   # healed by itself

    store = plain_store(settings, s3_up)
    try:
        report = await s3_chain_report(store, NAME)
    finally:
        await store.close()
    assert report["versions"] == [1, 2, 3]              # v1 by the create, then one per upload
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    await node.close()
    await assert_fresh_node_matches(make_settings, "b", "memory_s3", expected, nn, ids)


async def test_memory_s3_graceful_close_ships_everything_to_s3(make_settings, s3_up):
    """Design: a graceful shutdown gives the uploader a bounded time to drain.  (Found missing by
    this suite; fixed in 295297f, Engine._drain_uploads.)"""
    node = await started(make_settings("a"))                 # uploader interval: 1 h
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 50)
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    await node.close()
    fresh = await started(make_settings("b"))
    try:
        assert NAME in [c.name for c in fresh.list_collections()], "nothing reached S3"
        assert await snapshot(fresh.get_collection(NAME), ids) == expected
        assert await neighbours(fresh.get_collection(NAME)) == nn
    finally:
        await fresh.close()


# == s3_only: every commit batch is an S3 PUT =========================================================


def _wal(name: str = NAME) -> str:
    return keys.wal_prefix(name)


async def test_s3_only_write_faults_surface_as_503_and_apply_nothing(make_settings, fault_stores, s3_up):
    injectors = fault_stores("inner")
    settings = make_settings("a", policy="s3_only", retry=RETRY)
    node = await started(settings)
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 40)

    faults.fail_next(RETRY.max_retries, ops="put", prefix=_wal())        # retried: acknowledged
    ids += await fill(coll, 40, 10, seed=1)
    faults.inject("latency", ops="put", prefix=_wal(), delay=0.3, times=1)
    ids += await fill(coll, 50, 10, seed=2)
    faults.inject("lose_response", ops="put", prefix=_wal(), times=1)    # resolved by the read-back
    ids += await fill(coll, 60, 10, seed=3)
    assert faults.faults == []

    stuck = faults.inject("transient", ops="put", prefix=_wal())
    for attempt in (fill(coll, 70, 10, seed=4), coll.delete(ids=["d1", "d2"]), coll.delete(filter={"i": 5})):
        with pytest.raises(TierDBError) as err:
            await attempt
        assert err.value.kind is ErrorKind.UNAVAILABLE and err.value.status_code == 503
    assert await coll.get([f"d{i}" for i in range(70, 80)]) == []      # nothing applied
    assert len(await coll.get(["d1", "d2", "d5"])) == 3
    assert coll.count() == 70
    assert len(await neighbours(coll)) == 4                             # reads still served
    faults.remove(stuck)

    ids += await fill(coll, 80, 10, seed=5)                              # writes continue
    await coll.delete(ids=["d1"])
    await coll.compact()
    ids += await fill(coll, 90, 5, seed=6)
    assert coll.count() == 84
    store = plain_store(settings, s3_up)
    try:
        await s3_chain_report(store, NAME)
    finally:
        await store.close()
    expected, nn = await snapshot(coll, ids + [f"d{i}" for i in range(70, 80)]), await neighbours(coll)
    await node.close()
    await assert_fresh_node_matches(make_settings, "b", "s3_only", expected, nn, ids + [f"d{i}" for i in range(70, 80)])


async def test_s3_only_put_that_landed_but_failed_is_applied_once_everywhere(make_settings, fault_stores, s3_up):
    """The WAL PUT lands, its response is lost and every retry fails: the client gets a 503, but
    the batch is in S3.  The node must converge to exactly what a fresh node replays: the batch
    once, no sequence gap, no duplicate."""
    injectors = fault_stores("inner")
    settings = make_settings("a", policy="s3_only", retry=RETRY)
    node = await started(settings)
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 20)
    faults.inject("lose_response", ops="put", prefix=_wal(), times=1)
    faults.inject("transient", ops="put", prefix=_wal(), times=RETRY.max_retries)
    with pytest.raises(TierDBError) as err:
        await fill(coll, 20, 5, seed=1, tag="landed")
    assert err.value.status_code == 503
    ids += [f"d{i}" for i in range(20, 25)]
    ids += await fill(coll, 25, 5, seed=2)                               # the next write resyncs
    await coll.upsert(["d20"], vectors(1, 3), [{"i": 20, "tag": "updated"}])
    landed = await coll.get([f"d{i}" for i in range(20, 25)])
    assert len(landed) in (0, 5)
    assert coll.count() == 25 + len(landed) - (1 if not landed else 0)
    store = plain_store(settings, s3_up)
    try:
        await s3_chain_report(store, NAME)
    finally:
        await store.close()
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    await node.close()
    await assert_fresh_node_matches(make_settings, "b", "s3_only", expected, nn, ids)


async def test_s3_only_filter_delete_after_a_landed_failed_write_deletes_it(make_settings, fault_stores, s3_up):
    injectors = fault_stores("inner")
    node = await started(make_settings("a", policy="s3_only", retry=RETRY))
    faults = injectors[0]
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    await fill(coll, 0, 10)
    faults.inject("lose_response", ops="put", prefix=_wal(), times=1)
    faults.inject("transient", ops="put", prefix=_wal(), times=RETRY.max_retries)
    with pytest.raises(TierDBError):
        await fill(coll, 10, 3, seed=1, tag="doomed")                  # lands in S3, reported failed
    await coll.delete(filter={"tag": "doomed"})                         # acknowledged
    left = await coll.get(["d10", "d11", "d12"])
    await node.close()
    assert left == [], f"acknowledged delete of tag=doomed left {[d.id for d in left]}"


async def test_s3_only_network_faults_through_the_chaos_proxy(make_settings, chaos, s3_up):
    """Each write meets one real network fault on its WAL PUT and is still acknowledged, with
    exactly one WAL object per batch; a cold fresh node reads through latency spikes."""
    settings = make_settings("a", policy="s3_only", endpoint=chaos.endpoint, read_timeout=1.0,
                             retry=RetrySettings(max_retries=3, base_backoff_secs=0.01, max_backoff_secs=0.05))
    node = await started(settings)
    await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
    coll = node.get_collection(NAME)
    ids = await fill(coll, 0, 20)
    plan = [
        ("reset", {}),
        ("status", {"status": 503, "code": "SlowDown"}),
        ("status", {"status": 500, "code": "InternalError"}),
        ("cut_upload", {"seconds": 1.5}),
        ("stall", {"seconds": 1.5}),
    ]
    for n, (action, options) in enumerate(plan, start=1):
        chaos.add(action, method="PUT", path="/wal/", **options)
        ids += await fill(coll, 20 * n, 20, seed=n)
        assert chaos.rules == [], f"{action} did not fire"
    await coll.compact()
    ids += await fill(coll, 200, 5, seed=50)
    store = plain_store(settings, s3_up)
    try:
        report = await s3_chain_report(store, NAME)
        wal_objects = await store.list(keys.wal_prefix(NAME))
    finally:
        await store.close()
    assert report["wal_records"] >= 1
    seqs = [keys.parse_number(i.key) for i in wal_objects]
    assert seqs == sorted(set(seqs)) == list(range(1, len(seqs) + 1)), seqs   # one object per batch
    expected, nn = await snapshot(coll, ids), await neighbours(coll)
    assert coll.count() == 20 + 20 * len(plan) + 5
    await node.close()

    chaos.add("delay", method="GET", seconds=0.3, times=3)
    fresh = await started(make_settings("b", policy="s3_only", endpoint=chaos.endpoint, read_timeout=2.0))
    try:
        cold = fresh.get_collection(NAME)
        assert await snapshot(cold, ids) == expected and await neighbours(cold) == nn
    finally:
        await fresh.close()


async def test_s3_only_lost_put_response_on_the_network_is_not_another_writer(make_settings, chaos, s3_up):
    settings = make_settings("a", policy="s3_only", endpoint=chaos.endpoint, read_timeout=1.0, retry=RETRY)
    node = await started(settings)
    try:
        await node.create_collection(CollectionSpec(name=NAME, dimension=DIM))
        coll = node.get_collection(NAME)
        ids = await fill(coll, 0, 20)                     # warms a keep-alive connection
        chaos.add("lost_response", method="PUT", path="/wal/")
        ids += await fill(coll, 20, 20, seed=1)           # stored by S3; the reply never arrives
        assert chaos.fired("lost_response") == 1
        assert coll.state == "ready"
        ids += await fill(coll, 40, 5, seed=2)
        assert coll.count() == 45
    finally:
        await node.close()


async def test_s3_only_s3_outage_writes_fail_fast_reads_continue_then_recover(make_settings, s3_up):
    """The real S3 server goes away under a serving node (over HTTP): writes answer 503 with
    Retry-After, fast, and apply nothing; queries and gets keep answering from RAM; once S3 is
    back, writes continue and a fresh node agrees."""
    if not s3_up.controllable:
        pytest.skip("the S3 server was given from outside; it cannot be stopped here")
    from litestar.testing import AsyncTestClient

    from tierdb.api.app import create_app
    from tierdb.node import Engine

    settings = make_settings("a", policy="s3_only", retry=RETRY)
    node = Engine(settings)                                    # started by the app's lifespan
    docs = "/v1/collections/docs/documents"

    def batch(start: int, n: int) -> dict:
        return {"documents": [{"id": f"d{i}", "vector": vectors(1, i)[0].tolist(), "metadata": {"i": i}}
                              for i in range(start, start + n)]}

    async with AsyncTestClient(app=create_app(settings, node)) as client:
        while (await client.get("/health/ready")).status_code != 200:
            await asyncio.sleep(0.02)
        assert (await client.post("/v1/collections", json={"name": NAME, "dimension": DIM})).status_code == 201
        assert (await client.post(docs, json=batch(0, 100))).status_code == 200
        assert (await client.post(f"/admin/collections/{NAME}/compact")).status_code == 200
        assert (await client.post(docs, json=batch(100, 20))).status_code == 200
        query = {"vectors": vectors(4, 99).tolist(), "k": 10}
        before = (await client.post(f"/v1/collections/{NAME}/query", json=query)).json()

        await asyncio.to_thread(s3_up.stop)
        try:
            started_at = time.monotonic()
            failed = await client.post(docs, json=batch(120, 10))
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"] == "unavailable" and failed.headers.get("retry-after")
            assert time.monotonic() - started_at < 10, "a write against a dead S3 must fail fast"
            deleted = await client.post(f"{docs}/delete", json={"ids": ["d1"]})
            assert deleted.status_code == 503, deleted.text
            assert (await client.post(f"/v1/collections/{NAME}/query", json=query)).json() == before
            got = await client.post(f"{docs}/get", json={"ids": ["d1", "d110", "d125"]})
            assert [d["id"] for d in got.json()["documents"]] == ["d1", "d110"]
            assert (await client.get(f"/v1/collections/{NAME}")).json()["count"] == 120
        finally:
            await asyncio.to_thread(s3_up.start)

        assert (await client.post(docs, json=batch(130, 10))).status_code == 200    # writes continue
        assert (await client.post(f"{docs}/delete", json={"ids": ["d1"]})).json() == {"deleted": 1}
        coll = node.get_collection(NAME)
        ids = [f"d{i}" for i in range(140)]
        expected, nn = await snapshot(coll, ids), await neighbours(coll)
        assert coll.count() == 129 + len(await coll.get([f"d{i}" for i in range(120, 130)]))
    await assert_fresh_node_matches(make_settings, "b", "s3_only", expected, nn, ids)
