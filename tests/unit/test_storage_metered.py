import pytest

from tierdb import metrics
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.memory import MemoryStore
from tierdb.storage.metered import MeteredStore
from tierdb.testing.store import BlobStoreContract


class TestMeteredStoreContract(BlobStoreContract):
    @pytest.fixture
    async def store(self):
        yield MeteredStore(MemoryStore())


def _count(collection: str, op: str) -> float:
    return metrics.S3_REQUESTS.labels(collection=collection, op=op)._value.get()


async def test_counts_every_request_per_collection_and_op():
    store = MeteredStore(MemoryStore())
    wal = "collections/metered-a/wal/00000000000000000001.wal"
    before = {op: _count("metered-a", op) for op in ("get", "put", "delete", "list", "head")}
    outside_before = _count("", "head")
    await store.put(wal, b"x")
    await store.put(wal, b"x", if_absent=False)
    await store.get(wal)
    await store.head(wal)
    await store.list("collections/metered-a/wal/")
    await store.delete(wal)
    with pytest.raises(TierDBError) as info:
        await store.get(wal)  # a failed request is a request too
    assert info.value.kind is ErrorKind.NOT_FOUND
    await store.head("health-probe")  # outside collections/: the empty label
    after = {op: _count("metered-a", op) for op in before}
    assert {op: after[op] - before[op] for op in before} == {
        "get": 2, "put": 2, "delete": 1, "list": 1, "head": 1
    }
    assert _count("", "head") == outside_before + 1


async def test_close_reaches_the_inner_store():
    closed = []

    class Inner(MemoryStore):
        async def close(self):
            closed.append(True)

    await MeteredStore(Inner()).close()
    assert closed == [True]
