"""memory_s3 and s3_only against a real S3 server: upload, restore, outage, DLQ, fencing, GC."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tierdb import keys
from tierdb.config import (
    GcSettings,
    RetrySettings,
    Settings,
)
from tierdb.engine import manifest as manifests
from tierdb.node import Engine
from tierdb.engine.restore import verify_manifest
from tierdb.errors import ErrorKind, TierDBError
from tierdb.models import CollectionSpec

pytestmark = pytest.mark.s3

DIM = 8
IDLE_SECS = 0.3


async def started(settings: Settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    return engine


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


async def fill(coll, start: int, n: int, seed: int = 0) -> None:
    ids = [f"d{i}" for i in range(start, start + n)]
    await coll.upsert(ids, vectors(n, seed), [{"i": i} for i in range(start, start + n)])


async def query_ids(coll, seed: int = 42) -> list[list[str]]:
    hits = await coll.query(vectors(5, seed), k=10)
    return [[h.id for h in per] for per in hits]


async def test_memory_s3_upload_then_restore_on_a_fresh_node(make_settings):
    node_a = await started(make_settings("a"))
    await node_a.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node_a.get_collection("docs")
    await fill(coll, 0, 300)
    await coll.compact(full=True)          # segments + manifest
    await fill(coll, 300, 50, seed=1)      # WAL tail only
    await coll.delete(ids=["d5", "d305"])
    uploaded = await coll.uploader.run_once()
    assert uploaded >= 3
    assert coll.stats().upload_lag_secs == 0 and coll.stats().upload_queue_size == 0
    assert await coll.uploader.run_once() == 0   # idle: nothing to do
    expected = await query_ids(coll)
    await node_a.close()

    node_b = await started(make_settings("b"))   # empty data directory: restores from S3
    restored = node_b.get_collection("docs")
    assert restored.count() == 348
    assert await query_ids(restored) == expected
    assert not await restored.get(["d5", "d305"])
    await node_b.close()


async def test_s3_outage_loses_no_acknowledged_write(make_settings, s3_server):
    if not s3_server.controllable:
        pytest.skip("the S3 server was given from outside; it cannot be stopped here")
    node = await started(make_settings("a", retry=RetrySettings(max_retries=1, base_backoff_secs=0.05, max_backoff_secs=0.1)))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    await fill(coll, 0, 100)
    await coll.uploader.run_once()
    s3_server.stop()
    try:
        await fill(coll, 100, 100, seed=1)          # writes keep being acknowledged
        await coll.compact()
        await coll.uploader.run_once()              # fails: retries run out -> retried later, not the DLQ
        assert coll.stats().dlq_size == 0 and coll.stats().upload_failures == 1
        assert coll.stats().upload_lag_secs > 0
    finally:
        s3_server.start()
    await fill(coll, 200, 10, seed=2)
    assert await coll.uploader.run_once() >= 1     # no operator action
    assert coll.stats().dlq_size == 0 and coll.stats().upload_lag_secs == 0
    await node.close()
    fresh = await started(make_settings("b"))
    assert fresh.get_collection("docs").count() == 210
    await fresh.close()


async def created_then_restarted_with_bad_credentials(make_settings, monkeypatch, secret: str) -> Engine:
    """Creating an S3 collection asks S3 whether it holds the name, so it happens with good
    credentials; then the node restarts with bad ones."""
    node = await started(make_settings("a"))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    await node.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return await started(make_settings("a"))


async def test_bad_credentials_dlq_then_fix_and_retry(make_settings, monkeypatch, s3_server):
    node = await created_then_restarted_with_bad_credentials(make_settings, monkeypatch, "definitely-wrong")
    coll = node.get_collection("docs")
    await fill(coll, 0, 40)
    await coll.uploader.run_once()
    [entry] = coll.dlq_entries()
    assert entry.permanent and entry.attempts == 1  # auth errors are never retried
    assert "definitely-wrong" not in entry.error
    await fill(coll, 40, 10, seed=3)                 # still acknowledged locally
    await node.close()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key or "")
    node = await started(make_settings("a"))         # the operator fixed the credentials
    coll = node.get_collection("docs")
    assert len(coll.dlq_entries()) == 1              # the DLQ is durable
    assert await coll.uploader.run_once() >= 1       # the re-probe succeeds: resolved without dlq retry
    assert coll.dlq_entries() == []
    await node.close()
    fresh = await started(make_settings("b"))
    assert fresh.get_collection("docs").count() == 50
    await fresh.close()


async def test_dlq_clear_reuploads_a_complete_snapshot(make_settings, monkeypatch, s3_server):
    node = await created_then_restarted_with_bad_credentials(make_settings, monkeypatch, "wrong")
    coll = node.get_collection("docs")
    await fill(coll, 0, 30)
    await coll.uploader.run_once()
    await node.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key or "")
    node = await started(make_settings("a"))
    coll = node.get_collection("docs")
    assert await coll.dlq_clear() == 1
    await coll.uploader.run_once()
    assert coll.stats().memtable_rows == 0          # the snapshot flushed the memtable
    await node.close()
    fresh = await started(make_settings("b"))
    assert fresh.get_collection("docs").count() == 30
    await fresh.close()


async def test_two_memory_s3_writers_the_second_is_fenced(make_settings):
    node_a = await started(make_settings("a"))
    node_b = await started(make_settings("b"))
    await node_b.create_collection(CollectionSpec(name="docs", dimension=DIM))
    with pytest.raises(TierDBError) as conflict:   # S3 holds it now: no blind second create
        await node_a.create_collection(CollectionSpec(name="docs", dimension=DIM))
    assert conflict.value.kind is ErrorKind.CONFLICT
    await fill(node_b.get_collection("docs"), 0, 10)
    await node_a.create_collection(CollectionSpec(name="docs", dimension=DIM), replace=True)
    await fill(node_a.get_collection("docs"), 0, 10)
    await node_a.get_collection("docs").uploader.run_once()
    loser = node_b.get_collection("docs")          # superseded by the replace: fenced before its WAL ships
    await loser.uploader.run_once()
    assert loser.stats().fenced and loser.state == "fenced"
    with pytest.raises(TierDBError) as err:
        await fill(loser, 10, 1)
    assert err.value.kind is ErrorKind.FENCED
    assert node_a.get_collection("docs").state == "ready"
    await node_a.close()
    await node_b.close()


async def test_two_s3_only_writers_the_second_is_fenced(make_settings):
    node_a = await started(make_settings("a", policy="s3_only"))
    await node_a.create_collection(CollectionSpec(name="docs", dimension=DIM))
    node_b = await started(make_settings("b", policy="s3_only"))   # opens it from S3
    coll_a, coll_b = node_a.get_collection("docs"), node_b.get_collection("docs")
    await fill(coll_a, 0, 5)
    with pytest.raises(TierDBError) as err:
        await fill(coll_b, 5, 5)                                    # same WAL seq: put-if-absent loses
    assert err.value.kind is ErrorKind.FENCED and coll_b.state == "fenced"
    await fill(coll_a, 10, 5, seed=1)
    assert coll_a.count() == 10
    await node_a.close()
    await node_b.close()


async def test_s3_only_new_node_with_empty_caches_sees_every_write(make_settings):
    node = await started(make_settings("a", policy="s3_only"))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    await asyncio.gather(*(fill(coll, i * 20, 20, seed=i) for i in range(5)))   # group commit
    await coll.compact()
    await fill(coll, 100, 20, seed=9)
    expected = await query_ids(coll)
    await node.close()
    fresh = await started(make_settings("b", policy="s3_only"))
    coll = fresh.get_collection("docs")
    assert coll.count() == 120
    assert await query_ids(coll) == expected
    assert coll.cache_stats()["misses"] >= 1
    await fresh.close()


async def test_gc_never_deletes_a_referenced_object(make_settings):
    node = await started(make_settings("a", gc=GcSettings(interval_secs=3600, keep_manifests=3, grace_secs=0)))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    for round_no in range(6):
        await fill(coll, round_no * 40, 40, seed=round_no)
        await coll.compact(full=round_no % 2 == 1)
        await coll.uploader.run_once()
    remote = node.remote
    before = len(await remote.list(keys.collection_prefix("docs")))
    gc = node._gcs["docs"]
    deleted = await gc.run_once(coll.uploader.state.s3_version)
    assert deleted > 0
    after = await remote.list(keys.collection_prefix("docs"))
    assert len(after) == before - deleted
    versions = await manifests.versions(remote, "docs")
    assert len(versions) == 3
    for version in versions:
        kept = manifests.decode(await remote.get(keys.manifest_key("docs", version)), source="test")
        assert await verify_manifest(remote, kept) == []
    await node.close()
    fresh = await started(make_settings("b"))
    assert fresh.get_collection("docs").count() == 240
    await fresh.close()


async def test_cli_verify_and_restore(make_settings, monkeypatch, tmp_path, capsys, s3_settings_factory):
    from tierdb.cli import main

    settings = make_settings("a")
    node = await started(settings)
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    await fill(coll, 0, 100)
    await coll.compact()
    await coll.uploader.run_once()
    await node.close()
    s3 = settings.s3
    for var, value in {"TIERDB_S3_ENDPOINT": s3.endpoint, "TIERDB_S3_BUCKET": s3.bucket,
                       "TIERDB_S3_PREFIX": s3.prefix, "TIERDB_S3_REGION": s3.region}.items():
        monkeypatch.setenv(var, value)
    data_a = settings.storage.data_dir

    assert await asyncio.to_thread(main, ["verify", "--data-dir", data_a, "--json"]) == 0
    assert '"status": "ok"' in capsys.readouterr().out

    seg_dir = tmp_path / "a" / "collections" / "docs" / "segments"
    victim = next(seg_dir.iterdir())
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    assert await asyncio.to_thread(main, ["verify", "--data-dir", data_a]) == 1
    assert "sha256 does not match" in capsys.readouterr().out

    data_c = str(tmp_path / "c")
    assert await asyncio.to_thread(main, ["restore", "--data-dir", data_c]) == 0
    assert "restored" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["restore", "--data-dir", data_c]) == 0
    assert "exists locally" in capsys.readouterr().out
    node = await started(make_settings("c"))
    assert node.get_collection("docs").count() == 100
    await node.close()


async def test_s3_only_ram_tier_is_bounded_and_reloads_evicted_partitions(make_settings):
    from tierdb.config import CacheSettings, PartitionsSettings

    budget = 6_000                              # about four of the ~1.3 KB partitions below
    node = await started(make_settings("a", policy="s3_only", cache=CacheSettings(ram_bytes=budget, disk_bytes=50_000_000),
                                       partitions=PartitionsSettings(rows_per_partition=25)))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    for part in range(4):                       # four partitioned segments of 100 rows, 4 partitions each
        await fill(coll, part * 100, 100, seed=part)
        await coll.flush(force=True)
    assert len(coll.segments) == 4 and all(ref.layout == "partitioned" for ref in coll.manifest.segments)
    cache = node.partition_cache
    hits = await coll.query(vectors(3, 7), k=10, filter={"i": {"$lt": 400}}, include_metadata=True)
    assert all(len(per) == 10 for per in hits)
    assert cache.resident_bytes <= budget and cache.misses >= 16 and cache.evictions >= 1
    docs = await coll.get(["d0", "d150", "d399"])
    assert [d.metadata["i"] for d in docs] == [0, 150, 399]
    assert [d.vector for d in docs] == [vectors(100, 0)[0].tolist(), vectors(100, 1)[50].tolist(), vectors(100, 3)[99].tolist()]
    await coll.delete(ids=["d0"])               # a death while its partition may be evicted
    hits = await coll.query(vectors(1, 7), k=400)
    assert len(hits[0]) == 399 and "d0" not in {h.id for h in hits[0]}
    assert cache.resident_bytes <= budget
    assert coll.count() == 399
    await node.close()


async def test_upload_lag_is_the_age_of_the_oldest_unshipped_write(make_settings):
    """Bounds from the test's own clock readings, never a fixed window: the lag is at least
    the time since the first unshipped write was acknowledged and at most the time since it
    was sent; time spent caught up does not count.  (Rounded to ms: +-0.001.)"""
    node = await started(make_settings("a"))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    await fill(coll, 0, 10)
    await coll.uploader.run_once()
    assert coll.stats().upload_lag_secs == 0
    await asyncio.sleep(IDLE_SECS)                   # idle time while caught up is not lag
    first_sent = time.time()
    await fill(coll, 10, 10, seed=1)                 # the first unshipped write
    first_acked = time.time()
    assert coll.stats().upload_lag_secs <= time.time() - first_sent + 0.001
    await asyncio.sleep(IDLE_SECS)
    await fill(coll, 20, 10, seed=2)                 # a later one must not reset the lag
    before_stats = time.time()
    lag = coll.stats().upload_lag_secs
    after_stats = time.time()
    assert before_stats - first_acked - 0.001 <= lag <= after_stats - first_sent + 0.001, (
        f"lag {lag} is not measured from the first unshipped write"
    )
    await coll.uploader.run_once()
    assert coll.stats().upload_lag_secs == 0
    await node.close()
