"""Grown segments (grow-merge, tombstones in the manifest) under memory_s3 and s3_only against a
real S3 server: a fresh node restores exactly the live documents.  Flushes do not grow here
(tiering: only local segments grow on flush)."""

from __future__ import annotations

import numpy as np
import pytest

from tierdb.config import CacheSettings, CompactionSettings
from tierdb.models import CollectionSpec
from tierdb.node import Engine
from tierdb.testing.settings import HOUR

pytestmark = pytest.mark.s3

DIM = 8
GROW = CompactionSettings(interval_secs=HOUR, threshold_ops=100_000, max_age_secs=HOUR, flush_grow_ratio=64)


@pytest.mark.parametrize("policy", ["memory_s3", "s3_only"])
async def test_grown_segments_restore_on_a_fresh_node(make_settings, policy):
    extra = {"cache": CacheSettings(ram_bytes=20_000, disk_bytes=50_000_000)} if policy == "s3_only" else {}
    node = Engine(make_settings("a", policy=policy, compaction=GROW, **extra))
    await node.start()
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM))
    coll = node.get_collection("docs")
    vectors = np.random.default_rng(0).standard_normal((400, DIM)).astype(np.float32)
    await coll.upsert([f"d{i}" for i in range(200)], vectors[:200])
    await coll.flush(force=True)
    await coll.delete(["d1", "d2"])
    await coll.upsert([f"d{i}" for i in range(200, 300)], vectors[200:300])
    await coll.flush(force=True)       # S3 policies never grow on flush: a segment of its own
    assert [ref.rows for ref in coll.manifest.segments] == [200, 100]
    await coll.upsert([f"d{i}" for i in range(300, 340)], vectors[300:340])
    await coll.flush(force=True)                       # 40 rows: too few for an index, own segment
    await coll.delete(["d250", "d310"])
    await coll.flush(force=True)
    assert await coll.merge(full=True) == 3
    [merged] = coll.manifest.segments
    if policy == "memory_s3":                          # grows the 200-row segment by 99 + 39 rows
        assert merged.rows == 338 and merged.dead == [1, 2]
    else:                                              # partitioned segments are rebuilt: dead rows purged
        assert merged.rows == 336 and merged.dead == [] and merged.layout == "partitioned"
    if policy == "memory_s3":
        await coll.uploader.run_once()
    await node.close()

    deleted = {"d1", "d2", "d250", "d310"}
    live = [f"d{i}" for i in range(340) if f"d{i}" not in deleted]
    fresh = Engine(make_settings("b", policy=policy, compaction=GROW, **extra))
    await fresh.start()
    coll = fresh.get_collection("docs")
    assert sorted(await coll.live_ids()) == sorted(live)
    assert await coll.get(sorted(deleted)) == []
    for hits in await coll.query(vectors[[1, 250, 310, 7, 320]], k=5):
        assert not {h.id for h in hits} & deleted
    assert [h.id for h in (await coll.query(vectors[[7, 320]], k=1))[0]] == ["d7"]
    await fresh.close()
