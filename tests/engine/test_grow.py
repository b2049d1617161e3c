"""Merges grow the largest segment's index instead of rebuilding it (issue 13)."""

from __future__ import annotations

import hnswlib
import numpy as np

from tierdb.config import CompactionSettings
from tierdb.engine import segment as segment_mod
from tierdb.models import HnswParams
from tierdb.node import Engine

from .conftest import make_settings, random_vectors, reopen, spec

DIM = 16


async def two_segments(coll, big: int, small: int, seed: int = 0) -> np.ndarray:
    """A ``big``-row indexed segment (ids 0..) and a ``small``-row one after it."""
    vectors = random_vectors(big + small, DIM, seed=seed)
    await coll.upsert([str(i) for i in range(big)], vectors[:big])
    await coll.flush(force=True)
    await coll.upsert([str(i) for i in range(big, big + small)], vectors[big:])
    await coll.flush(force=True)
    assert [s.size() for s in coll.segments] == [big, small]
    return vectors


def exact_top(vectors: np.ndarray, live: list[int], queries: np.ndarray, k: int) -> list[set[str]]:
    b = vectors[live] / np.linalg.norm(vectors[live], axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    order = np.argsort(1 - q @ b.T, axis=1)[:, :k]
    return [{str(live[j]) for j in row} for row in order]


async def test_merge_grows_largest_keeping_row_numbers_and_tombstones(tmp_path):
    engine = Engine(make_settings(tmp_path / "data", flush_grow_ratio=0))
    await engine.start()
    await engine.create_collection(spec(dimension=DIM))
    coll = engine.get_collection("docs")
    vectors = await two_segments(coll, 300, 100)
    big = coll.segments[0]
    deleted = [str(i) for i in (3, 50, 299)] + ["310"]  # three tombstones in the base, one purged from the small one
    await coll.delete(deleted)
    await coll.flush(force=True)
    assert await coll.merge(full=True) == 2

    [merged] = coll.segments
    assert merged.indexed and merged.id != big.id
    # the base's 300 rows keep their numbers (and their graph); the small segment's 99 live rows follow
    assert merged.size() == 300 + 99
    assert merged.ids[:300] == [str(i) for i in range(300)]
    assert merged.ids[300:] == [str(i) for i in range(300, 400) if i != 310]
    [ref] = coll.manifest.segments
    assert ref.dead == [3, 50, 299] and ref.rows == 399
    assert sorted(merged.death_seq) == [3, 50, 299]
    # the saved index holds the base graph: every base row's vector is in it under its own label
    np.testing.assert_allclose(merged.index.get_items([0, 150, 298]), big.index.get_items([0, 150, 298]), rtol=1e-6)

    live = [i for i in range(400) if str(i) not in deleted]
    queries = np.concatenate([vectors[[3, 50, 299, 310]], random_vectors(20, DIM, seed=5)])
    for hits in await coll.query(queries, k=10):
        assert not {h.id for h in hits} & set(deleted)

    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    assert sorted(coll.ids(), key=int) == [str(i) for i in live]
    for hits in await coll.query(queries, k=10):
        assert not {h.id for h in hits} & set(deleted)
    assert (await coll.get(deleted)) == []
    await engine.close()


async def test_grown_segment_recall_matches_a_rebuild(tmp_path):
    big, small = 3000, 1500
    queries = random_vectors(200, DIM, seed=9)
    recalls = {}
    for name, fraction in (("grown", 0.2), ("rebuilt", 0.0)):
        # rebuild_dead_fraction 0 with one dead row forces the rebuild path on the same data
        engine = Engine(make_settings(tmp_path / name, rebuild_dead_fraction=fraction, flush_grow_ratio=0))
        await engine.start()
        await engine.create_collection(spec(dimension=DIM))
        coll = engine.get_collection("docs")
        vectors = await two_segments(coll, big, small)
        await coll.delete(["7"])
        await coll.flush(force=True)
        await coll.merge(full=True)
        [merged] = coll.segments
        assert merged.size() == (big + small if name == "grown" else big + small - 1)
        live = [i for i in range(big + small) if i != 7]
        truth = exact_top(vectors, live, queries, 10)
        hits = await coll.query(queries, k=10, ef=128)
        recalls[name] = np.mean([len({h.id for h in row} & t) / 10 for row, t in zip(hits, truth)])
        await engine.close()
    assert recalls["grown"] >= recalls["rebuilt"] - 0.01, recalls
    assert recalls["grown"] >= 0.95, recalls


async def test_rebuilds_once_dead_fraction_passes_threshold(tmp_path):
    engine = Engine(make_settings(tmp_path / "data", rebuild_dead_fraction=0.1, flush_grow_ratio=0))
    await engine.start()
    await engine.create_collection(spec(dimension=DIM))
    coll = engine.get_collection("docs")
    await two_segments(coll, 200, 100)
    await coll.delete([str(i) for i in range(21)])  # 10.5% of the big segment
    await coll.flush(force=True)
    await coll.merge(full=True)
    [merged] = coll.segments
    assert merged.size() == 279 and merged.death_seq == {}
    assert coll.manifest.segments[0].dead == []
    await engine.close()


async def test_flush_grows_the_largest_indexed_segment(tmp_path):
    engine = Engine(make_settings(tmp_path / "data", flush_grow_ratio=2.5))
    await engine.start()
    await engine.create_collection(spec(dimension=DIM))
    coll = engine.get_collection("docs")
    vectors = random_vectors(1000, DIM)
    await coll.upsert([str(i) for i in range(200)], vectors[:200])
    await coll.flush(force=True)
    [first] = coll.segments
    await coll.delete(["5"])
    await coll.upsert([str(i) for i in range(200, 260)], vectors[200:260])  # 60 < index.threshold 64: own segment
    await coll.flush(force=True)
    assert [s.size() for s in coll.segments] == [200, 60]
    await coll.upsert([str(i) for i in range(260, 360)], vectors[260:360])  # grows the 200-row segment
    await coll.flush(force=True)
    assert sorted(s.size() for s in coll.segments) == [60, 300]
    grown = next(s for s in coll.segments if s.size() == 300)
    assert grown.id != first.id and grown.indexed and grown.ids[200:] == [str(i) for i in range(260, 360)]
    assert next(r for r in coll.manifest.segments if r.id == grown.id).dead == [5]
    await coll.upsert([str(i) for i in range(360, 460)], vectors[360:460])  # 300 > 2.5 x 100 rows: own segment
    await coll.flush(force=True)
    assert sorted(s.size() for s in coll.segments) == [60, 100, 300]

    live = [str(i) for i in range(460) if i != 5]
    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    assert sorted(coll.ids(), key=int) == live
    for i, hits in enumerate(await coll.query(vectors[[5, 100, 300, 400]], k=3)):
        assert "5" not in {h.id for h in hits}
        if i:
            assert hits[0].id == str([5, 100, 300, 400][i])
    await engine.close()


def _index(rows: np.ndarray) -> hnswlib.Index:
    return segment_mod.build_index(rows, "cosine", HnswParams(m=16, ef_construction=100, ef_search=64), 1)


def test_clone_and_grow_leave_the_source_untouched():
    rows = random_vectors(500, DIM)
    source = _index(rows[:300])
    source.mark_deleted(5)
    clone = segment_mod.clone_index(source, 500)
    segment_mod.clear_deletions(clone, [5, 6])  # 6 is not marked (died after the clone): skipped
    segment_mod.grow_index(clone, rows[300:], HnswParams(m=16, ef_construction=100, ef_search=64), 1)
    assert source.element_count == 300 and clone.element_count == 500
    with_mark = source.knn_query(rows[5], k=1)[0][0][0]
    assert with_mark != 5  # still deleted in the source
    assert clone.knn_query(rows[5], k=1)[0][0][0] == 5  # no mark in the clone: loaders re-apply deaths
    assert clone.knn_query(rows[450], k=1)[0][0][0] == 450
    clone.mark_deleted(5)  # would raise if the clone had kept the mark


def test_grow_is_abandonable():
    rows = random_vectors(2000, DIM)
    clone = segment_mod.clone_index(_index(rows[:300]), 2000)
    try:
        segment_mod.grow_index(clone, rows[300:], HnswParams(), 1, should_stop=lambda: True)
    except segment_mod.BuildAbandoned:
        pass
    else:
        raise AssertionError("grow_index ignored its stop flag")


def test_rebuild_dead_fraction_is_validated():
    from tierdb.config import load_settings
    from tierdb.config import ConfigError

    for bad in (-0.1, 1.0):
        try:
            load_settings(env={}, overrides={"compaction.rebuild_dead_fraction": bad})
        except ConfigError as exc:
            assert "rebuild_dead_fraction" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
    assert CompactionSettings().rebuild_dead_fraction == 0.2
