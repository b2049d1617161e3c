"""Warming an s3_only collection: every segment byte lands in the node's disk cache, progress
is visible in the stats, and a failure is reported instead of hidden."""

from __future__ import annotations

import numpy as np
import pytest

from tierdb.models import CollectionSpec
from tierdb.node import Engine

pytestmark = pytest.mark.s3

DIM = 8


async def _collection_with_segments(engine: Engine, rows: int = 600):
    await engine.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
    coll = engine.get_collection("docs")
    vectors = np.random.default_rng(0).standard_normal((rows, DIM)).astype(np.float32)
    for start in range(0, rows, 200):
        ids = [f"d{i}" for i in range(start, start + 200)]
        await coll.upsert(ids, vectors[start : start + 200])
        await coll.flush(force=True)
    return coll


async def test_warm_fetches_every_segment_into_the_disk_cache(make_settings):
    engine = Engine(make_settings("a", policy="s3_only"))
    await engine.start()
    try:
        coll = await _collection_with_segments(engine)
        assert coll.stats().warm.state == "idle"
        segment_bytes = sum(ref.size for ref in coll.manifest.segments)
        status = await coll.warm()
        assert status.state == "done", status.error
        assert status.segments_done == status.segments_total == len(coll.manifest.segments) >= 3
        assert status.bytes_fetched == status.bytes_total >= segment_bytes  # + each header prefix
        assert status.finished_at >= status.started_at > 0
        assert coll.stats().warm.state == "done"
        assert coll.cache_stats()["bytes"] >= segment_bytes
    finally:
        await engine.close()


async def test_after_warming_a_new_node_queries_without_s3_reads(make_settings):
    from tierdb import metrics
    from tierdb.config import CacheSettings, PartitionsSettings

    def s3_bytes() -> float:
        return sum(s.value for m in metrics.S3_BYTES_FETCHED.collect() for s in m.samples
                   if s.name.endswith("_total") and s.labels.get("collection") == "docs")

    tiny_ram = {"cache": CacheSettings(ram_bytes=4_000, disk_bytes=50_000_000),
                "partitions": PartitionsSettings(rows_per_partition=20)}
    writer = Engine(make_settings("a", policy="s3_only", **tiny_ram))
    await writer.start()
    await _collection_with_segments(writer)
    await writer.close()
    engine = Engine(make_settings("b", policy="s3_only", **tiny_ram))   # empty caches
    await engine.start()
    try:
        coll = engine.get_collection("docs")
        assert (await coll.warm()).state == "done"
        before = s3_bytes()
        queries = np.random.default_rng(1).standard_normal((3, DIM)).astype(np.float32)
        hits = await coll.query(queries, k=600, nprobe=4096)            # every partition of every segment
        assert [len(per) for per in hits] == [600, 600, 600]
        assert await coll.get(["d0", "d599"]) != []
        assert s3_bytes() == before                                    # all from the disk cache
    finally:
        await engine.close()


async def test_a_failed_warm_says_why(make_settings):
    engine = Engine(make_settings("a", policy="s3_only"))
    await engine.start()
    try:
        coll = await _collection_with_segments(engine, rows=200)
        gone = coll.manifest.segments[0]
        from tierdb import keys

        await coll.store.delete(keys.segment_key("docs", gone.id))  # from the cache and from S3
        status = await coll.warm()
        assert status.state == "failed"
        assert gone.id in status.error or "not found" in status.error.lower()
    finally:
        await engine.close()
