"""Rows of indexed segments (vectors read back from the index, metadata decoded per row) look
exactly like the rows that were written: through get, query, filters, merges and restarts."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import random_vectors, reopen, spec

N = 300  # above the test index threshold (64): one indexed segment


def metadata_of(i: int) -> dict | None:
    return None if i % 4 == 0 else {"i": i, "even": i % 2 == 0, "tags": [f"t{i % 3}"]}


def assert_vectors(got, expected) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=1e-6, atol=1e-6 * float(np.abs(expected).max()))


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
async def test_indexed_rows_round_trip_through_get_query_filter_merge_and_restart(engine, metric):
    await engine.create_collection(spec(metric=metric))
    coll = engine.get_collection("docs")
    base = random_vectors(N, 8) * np.linspace(0.5, 20, N, dtype=np.float32)[:, None]
    ids = [str(i) for i in range(N)]
    await coll.upsert(ids, base, [metadata_of(i) for i in range(N)])
    await coll.compact(full=True)
    assert len(coll.segments) == 1 and coll.segments[0].indexed

    async def check(coll, alive: list[int]) -> None:
        docs = await coll.get([str(i) for i in alive])
        assert [d.id for d in docs] == [str(i) for i in alive]
        assert [d.metadata for d in docs] == [metadata_of(i) for i in alive]
        assert_vectors([d.vector for d in docs], base[alive])
        hits = await coll.query(base[alive[:5]], k=3, include_vector=True, include_metadata=True, ef=200)
        for row_hits in hits:
            for hit in row_hits:
                i = int(hit.id)
                assert hit.metadata == metadata_of(i)
                assert_vectors(hit.vector, base[i])
        # a selective filter goes to brute force over the indexed segment's vectors
        found = await coll.query(base[:1], k=N, filter={"i": {"$gte": 250}}, include_metadata=True)
        assert sorted(int(h.id) for h in found[0]) == [i for i in alive if i >= 250 and metadata_of(i) is not None]
        plain = await coll.query(base[:1], k=3, include_vector=False, include_metadata=False)
        assert all(h.vector is None and h.metadata is None for h in plain[0])

    await check(coll, list(range(N)))
    engine = await reopen(engine)
    coll = engine.get_collection("docs")
    await check(coll, list(range(N)))

    # Deletes, then a merge that reads every live row back from the indexed segment.
    dead = list(range(0, N, 7))
    await coll.delete([str(i) for i in dead])
    await coll.upsert(["extra"], random_vectors(1, 8, seed=9))
    await coll.compact(full=True)
    assert len(coll.segments) == 1
    alive = [i for i in range(N) if i not in dead]
    await check(coll, alive)
    engine = await reopen(engine)
    await check(engine.get_collection("docs"), alive)
    await engine.close()
