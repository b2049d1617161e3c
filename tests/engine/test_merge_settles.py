"""A segment made "too dead" by deletes that are still in the memtable is not rewritten: its
rewrite could not purge them (they are newer than the manifest's WAL position), so it stayed too
dead and was rewritten again at every compaction tick, each time publishing a new manifest (and,
in memory_s3, keeping the uploader from ever catching up)."""

from __future__ import annotations

from .conftest import make_settings, random_vectors, spec
from tierdb.node import Engine


async def test_unflushed_deaths_trigger_no_rewrite_and_flushed_ones_one(tmp_path):
    engine = Engine(make_settings(tmp_path / "data"))
    await engine.start()
    await engine.create_collection(spec(dimension=8))
    coll = engine.get_collection("docs")
    await coll.upsert([str(i) for i in range(100)], random_vectors(100, 8))
    await coll.flush(force=True)
    await coll.delete([str(i) for i in range(50)])       # half the segment, only in the memtable
    [segment] = coll.segments
    assert segment.live_count() == 50
    version = coll.manifest.version

    for _ in range(3):
        assert await coll.merge() == 0
        await coll.maybe_compact()
    assert coll.manifest.version == version, "a rewrite that purges nothing was published"
    assert coll.segments == [segment]

    await coll.flush(force=True)                          # the deaths are now in the manifest
    assert await coll.merge() == 1                        # so the rewrite purges them, once
    [rewritten] = coll.segments
    assert rewritten.size() == 50 and rewritten.live_count() == 50
    settled = coll.manifest.version
    assert await coll.merge() == 0
    assert coll.manifest.version == settled
    assert sorted(coll.ids(), key=int) == [str(i) for i in range(50, 100)]
    await engine.close()
