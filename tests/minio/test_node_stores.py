"""The node owns its one S3 client: dropping a collection closes only that collection's caches."""

from __future__ import annotations

import numpy as np
import pytest

from tierdb.models import CollectionSpec
from tierdb.node import Engine
from tierdb.storage.s3 import S3Store

pytestmark = pytest.mark.s3

DIM = 8


def _s3_store(engine: Engine) -> S3Store:
    store = engine.remote
    while not isinstance(store, S3Store):
        store = store.inner
    return store


async def test_dropping_an_s3_only_collection_leaves_the_shared_s3_client_open(make_settings):
    engine = Engine(make_settings("a", policy="s3_only"))
    await engine.start()
    try:
        for name in ("gone", "kept"):
            await engine.create_collection(CollectionSpec(name=name, dimension=DIM))
        kept = engine.get_collection("kept")
        vectors = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
        await kept.upsert([f"d{i}" for i in range(20)], vectors)
        s3 = _s3_store(engine)
        client = s3._client
        assert client is not None

        await engine.drop_collection("gone")

        # Closing the client would fail every request the other collections have in flight.
        assert s3._client is client
        await kept.upsert(["late"], vectors[:1])
        assert [d.id for d in await kept.get(["d3", "late"])] == ["d3", "late"]
    finally:
        await engine.close()
