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


def _fetched(collection: str, op: str) -> float:
    return metrics.S3_BYTES_FETCHED.labels(collection=collection, op=op)._value.get()


async def test_range_gets_are_counted_apart_with_the_bytes_they_fetched():
    store = MeteredStore(MemoryStore())
    seg = "collections/metered-r/segments/" + "aa" * 16 + ".seg"
    await store.put(seg, bytes(1000))
    requests = {op: _count("metered-r", op) for op in ("get", "get_range")}
    fetched = {op: _fetched("metered-r", op) for op in ("get", "get_range")}
    await store.get_range(seg, 10, 110)
    await store.get_range(seg, 990, 2000)  # clamped: 10 bytes come back
    await store.get(seg)
    with pytest.raises(TierDBError):
        await store.get_range(seg, 1000, 1001)  # a failed request is a request too
    assert _count("metered-r", "get_range") - requests["get_range"] == 3
    assert _count("metered-r", "get") - requests["get"] == 1
    assert _fetched("metered-r", "get_range") - fetched["get_range"] == 110
    assert _fetched("metered-r", "get") - fetched["get"] == 1000


def test_new_collections_export_zero_range_series():
    metrics.init_collection("metered-zero")
    assert _count("metered-zero", "get_range") == 0
    assert _fetched("metered-zero", "get_range") == _fetched("metered-zero", "get") == 0
    assert "storage_s3_bytes_fetched_total" in metrics.exposed_metric_names()
    metrics.forget_collection("metered-zero")


async def test_put_file_counts_the_requests_of_the_upload(tmp_path):
    source = tmp_path / "segment.tmp"
    source.write_bytes(b"x" * 1234)
    sizes = []

    class PartedInner(MemoryStore):
        def upload_requests(self, size):  # as S3Store: create + parts + complete
            sizes.append(size)
            return 5

    key = "collections/metered-f/segments/" + "bb" * 16 + ".seg"
    before = _count("metered-f", "put")
    await MeteredStore(PartedInner()).put_file(key, str(source))
    assert sizes == [1234] and _count("metered-f", "put") - before == 5
    await MeteredStore(MemoryStore()).put_file(key, str(source))  # a store without parts: one request
    assert _count("metered-f", "put") - before == 6
