"""s3_only collections on partitioned (IVF) segments against a real S3 server: a node opens a
collection by segment headers only, reads partitions by range, finds ids by hash, and serves
exactly what a node that wrote the data serves."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tierdb import metrics
from tierdb.config import CacheSettings, PartitionsSettings
from tierdb.engine import partitioned, partitioned_build
from tierdb.engine.partitioned_source import PartitionedSource
from tierdb.engine.writes import WriteOp
from tierdb.errors import TierDBError, unavailable
from tierdb.models import CollectionSpec
from tierdb.node import Engine

pytestmark = pytest.mark.s3

DIM = 64
ROWS = 1200


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def settings_of(make_settings, node: str, **kw):
    return make_settings(node, policy="s3_only", partitions=PartitionsSettings(rows_per_partition=40, **kw),
                         cache=CacheSettings(ram_bytes=64_000, disk_bytes=50_000_000))


async def started(settings) -> Engine:
    engine = Engine(settings)
    await engine.start()
    return engine


async def fill(coll, start: int, n: int, seed: int) -> np.ndarray:
    data = vectors(n, seed)
    ids = [f"d{i}" for i in range(start, start + n)]
    await coll.upsert(ids, data, [{"i": i, "even": i % 2 == 0} for i in range(start, start + n)])
    return data


def fetched_bytes(collection: str) -> float:
    total = 0.0
    for metric in metrics.S3_BYTES_FETCHED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("collection") == collection:
                total += sample.value
    return total


async def answers(coll, queries: np.ndarray) -> tuple[list, list]:
    hits = await coll.query(queries, k=10, nprobe=1000, include_metadata=True)
    docs = await coll.get(["d0", "d7", "d640", "d1199", "missing"])
    return ([[(h.id, round(h.distance, 5), h.metadata) for h in per] for per in hits],
            [(d.id, d.vector, d.metadata) for d in docs])


async def test_a_cold_node_opens_by_headers_and_answers_like_the_writer(make_settings):
    writer = await started(settings_of(make_settings, "a"))
    await writer.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
    coll = writer.get_collection("docs")
    for part in range(3):
        await fill(coll, part * 400, 400, seed=part)
        await coll.flush(force=True)
    await coll.merge(full=True)
    assert [ref.layout for ref in coll.manifest.segments] == ["partitioned"]
    assert coll.segments[0].nlist >= 20 and coll._where == {}
    await fill(coll, 0, 5, seed=9)                  # newer versions of d0..d4 in the memtable
    await coll.delete(ids=["d7"])
    await coll.flush(force=True)
    queries = vectors(4, 42)
    expected = await answers(coll, queries)
    assert coll.count() == ROWS - 1
    segment_bytes = sum(ref.size for ref in coll.manifest.segments)
    cold_refs = list(coll.manifest.segments)
    await writer.close()

    before = fetched_bytes("docs")
    cold = await started(settings_of(make_settings, "b"))          # empty data dir, empty caches
    try:
        coll = cold.get_collection("docs")
        opened = fetched_bytes("docs") - before
        # the manifest (a few KB) and one range GET of each segment's head: no partition beyond it
        header_reads = sum(min(ref.size, partitioned.HEADER_PREFIX_BYTES) for ref in cold_refs)
        assert 0 < opened <= header_reads + 8_192 < segment_bytes / 2, (opened, segment_bytes)
        assert coll.count() == ROWS - 1
        assert await answers(coll, queries) == expected
        assert expected[1][0][1] == vectors(5, 9)[0].tolist()           # d0 is its newer version
        assert [d[0] for d in expected[1]] == ["d0", "d640", "d1199"]     # d7 deleted, "missing" absent
        assert sorted(await coll.live_ids(), key=lambda i: int(i[1:])) == [f"d{i}" for i in range(ROWS) if i != 7]
    finally:
        await cold.close()


async def test_overwrites_and_filter_deletes_reach_rows_in_partitioned_segments(make_settings):
    node = await started(settings_of(make_settings, "a"))
    try:
        await node.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
        coll = node.get_collection("docs")
        await fill(coll, 0, 400, seed=0)
        await coll.flush(force=True)
        assert isinstance(coll.segments[0], PartitionedSource)
        fresh = vectors(1, 77)
        await coll.upsert(["d3"], fresh, [{"i": -3}])          # d3 lives in the segment
        assert coll.count() == 400
        (doc,) = await coll.get(["d3"])
        assert doc.vector == fresh[0].tolist() and doc.metadata == {"i": -3}
        hits = await coll.query(fresh, k=400, nprobe=1000)
        assert [h.id for h in hits[0]].count("d3") == 1
        deleted = await coll.delete(filter={"even": True})      # rows in the segment, by a filter
        assert deleted == 200
        assert coll.count() == 200 and [d.id for d in await coll.get(["d2", "d3"])] == ["d3"]
        hits = await coll.query(vectors(2, 5), k=10, filter={"even": False}, include_metadata=True)
        assert all(len(per) == 10 and all(h.metadata["even"] is False for h in per) for per in hits)
        await coll.flush(force=True)
        await coll.merge(full=True)                             # purges the tombstones
        assert coll.manifest.segments[0].rows == 200 and coll.count() == 200
    finally:
        await node.close()


async def test_a_delete_during_a_merge_build_is_carried_into_the_new_segment(make_settings, monkeypatch):
    node = await started(settings_of(make_settings, "a"))
    await node.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
    coll = node.get_collection("docs")
    for part in range(2):
        await fill(coll, part * 300, 300, seed=part)
        await coll.flush(force=True)
    real_build = partitioned_build.build

    def build_then_delete(*args, **kwargs):
        built = real_build(*args, **kwargs)
        coll._commit([WriteOp("delete", ["d5", "d305"])])       # acknowledged while the merge builds
        return built

    monkeypatch.setattr(partitioned_build, "build", build_then_delete)
    assert await coll.merge(full=True) == 2
    monkeypatch.setattr(partitioned_build, "build", real_build)
    assert coll.manifest.segments[0].rows == 600                 # built before the deletes ...
    assert coll.count() == 598                                   # ... which it carries as tombstones
    assert await coll.get(["d5", "d305"]) == []
    await node.close()

    again = await started(settings_of(make_settings, "a"))       # the WAL after the manifest replays them
    try:
        coll = again.get_collection("docs")
        assert coll.count() == 598 and await coll.get(["d5", "d305"]) == []
    finally:
        await again.close()


async def test_merges_stop_at_the_segment_size_cap(make_settings):
    node = await started(settings_of(make_settings, "a", max_segment_rows=500))
    try:
        await node.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
        coll = node.get_collection("docs")
        for part in range(4):
            await fill(coll, part * 200, 200, seed=part)
            await coll.flush(force=True)
        while await coll.merge(full=True):
            pass
        assert all(ref.rows <= 500 for ref in coll.manifest.segments)
        assert sum(ref.rows for ref in coll.manifest.segments) == 800 == coll.count()
    finally:
        await node.close()


async def test_a_cold_query_reads_codes_rows_and_documents_not_whole_partitions(make_settings):
    """Format 4: the first query of a node with empty caches reads its probed partitions' codes,
    its candidates' rows and its hits' documents, a fraction of the partitions' bytes, and
    answers exactly as the node that wrote the data."""
    dim, nprobe = 256, 8

    def node(name: str):
        return make_settings(name, policy="s3_only",
                             partitions=PartitionsSettings(rows_per_partition=100, nprobe=nprobe, rerank=40),
                             cache=CacheSettings(ram_bytes=64_000, disk_bytes=50_000_000))

    writer = await started(node("a"))
    await writer.create_collection(CollectionSpec(name="docs", dimension=dim, tiering_policy="s3_only"))
    coll = writer.get_collection("docs")
    data = np.random.default_rng(3).standard_normal((3000, dim)).astype(np.float32)
    await coll.upsert([f"d{i}" for i in range(3000)], data, [{"i": i} for i in range(3000)])
    await coll.flush(force=True)
    (source,) = coll.segments
    assert source.segment.has_codes and source.nlist >= 20
    queries = data[[5, 1234]] + 0.01
    expected = [[(h.id, h.metadata) for h in per] for per in await coll.query(queries[:1], k=10, include_metadata=True)]
    assert expected[0][0] == ("d5", {"i": 5})
    await writer.close()

    cold = await started(node("b"))
    try:
        coll = cold.get_collection("docs")
        (source,) = coll.segments
        probed = source.segment.route(queries[:1], nprobe)[0]
        whole = sum(length for _, length in source.segment.partition_ranges(probed.tolist()))
        before = fetched_bytes("docs")
        hits = await coll.query(queries[:1], k=10, include_metadata=True)
        read = fetched_bytes("docs") - before
        assert [[(h.id, h.metadata) for h in per] for per in hits] == expected
        assert 0 < read < whole / 4, (read, whole)
        assert read >= 40 * dim * 4          # the candidates' exact rows were read
    finally:
        await cold.close()


def scratch_files(settings) -> list[str]:
    import os

    from tierdb import keys

    scratch = keys.scratch_dir(settings.storage.data_dir)
    return sorted(os.listdir(scratch)) if os.path.isdir(scratch) else []


async def test_a_built_segment_is_uploaded_from_its_scratch_file_which_is_then_removed(make_settings, monkeypatch):
    settings = settings_of(make_settings, "a")
    node = await started(settings)
    try:
        await node.create_collection(CollectionSpec(name="docs", dimension=DIM, tiering_policy="s3_only"))
        coll = node.get_collection("docs")
        uploaded: list[tuple[str, int]] = []
        real_put_file = type(coll.store).put_file

        async def watched_put_file(store, key, path):
            import os

            uploaded.append((key, os.path.getsize(path)))
            assert scratch_files(settings) == [os.path.basename(path)]   # the built segment, only it
            await real_put_file(store, key, path)

        monkeypatch.setattr(type(coll.store), "put_file", watched_put_file)
        data = await fill(coll, 0, 300, seed=1)
        await coll.flush(force=True)
        [ref] = coll.manifest.segments
        assert [size for _, size in uploaded] == [ref.size] and uploaded[0][0].endswith(f"{ref.id}.seg")
        assert scratch_files(settings) == []
        [[hit, *_]] = await coll.query(data[7:8], k=10, nprobe=1000)
        assert hit.id == "d7"

        # an upload that fails leaves no file behind either, and the next flush succeeds
        async def failing_put_file(store, key, path):
            raise unavailable("S3 refused the upload", key=key)

        monkeypatch.setattr(type(coll.store), "put_file", failing_put_file)
        await fill(coll, 300, 100, seed=2)
        with pytest.raises(TierDBError):
            await coll.flush(force=True)
        assert scratch_files(settings) == []
        monkeypatch.setattr(type(coll.store), "put_file", real_put_file)
        await coll.flush(force=True)
        assert coll.count() == 400 and scratch_files(settings) == []
    finally:
        await node.close()
