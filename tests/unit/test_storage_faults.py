import pytest

from tierdb.testing.store import BlobStoreContract
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore


class TestFaultInjectingStoreWithoutFaults(BlobStoreContract):
    @pytest.fixture
    async def store(self):
        yield FaultInjectingStore(MemoryStore())


async def test_fail_next_n_then_recovers():
    store = FaultInjectingStore(MemoryStore())
    store.fail_next(2, ops=["put", "get"])
    for _ in range(2):
        with pytest.raises(TierDBError) as info:
            await store.put("k", b"v")
        assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.context["retryable"]
    await store.put("k", b"v")
    assert await store.get("k") == b"v"
    assert store.faults == []
    assert store.calls == [("put", "k")] * 3 + [("get", "k")]


async def test_faults_are_scoped_by_op_and_prefix():
    store = FaultInjectingStore(MemoryStore())
    store.inject("permanent", ops="delete", prefix="collections/a/")
    await store.delete("collections/b/x")
    await store.put("collections/a/x", b"1")
    with pytest.raises(TierDBError) as info:
        await store.delete("collections/a/x")
    assert info.value.context["retryable"] is False
    assert await store.get("collections/a/x") == b"1"


async def test_lose_response_performs_the_operation():
    store = FaultInjectingStore(MemoryStore())
    store.inject("lose_response", ops="put", times=1)
    with pytest.raises(TierDBError) as info:
        await store.put("k", b"v")
    assert info.value.context["response_lost"] is True
    assert await store.get("k") == b"v"


async def test_latency_is_added_then_error_fires():
    sleeps = []

    async def fake_sleep(secs):
        sleeps.append(secs)

    store = FaultInjectingStore(MemoryStore(), sleep=fake_sleep)
    store.inject("latency", delay=0.5, ops="head", times=1)
    store.fail_next(1, ops="head")
    with pytest.raises(TierDBError):
        await store.head("k")
    assert sleeps == [0.5]
    assert await store.head("k") is None
    assert sleeps == [0.5]


async def test_remove_and_clear():
    store = FaultInjectingStore(MemoryStore())
    kept = store.inject("transient", ops="delete")
    removed = store.inject("transient")
    store.remove(removed)
    assert store.faults == [kept]
    await store.put("k", b"v")                 # the removed fault no longer fires
    store.remove(removed)                      # removing twice is harmless
    assert store.faults == [kept]
    store.inject("transient")
    store.clear()
    assert store.faults == []
    assert await store.get("k") == b"v"
    await store.delete("k")                    # nor does a cleared one
    assert await store.head("k") is None


def test_rejects_unknown_kinds_and_ops():
    store = FaultInjectingStore(MemoryStore())
    with pytest.raises(ValueError):
        store.inject("explode")
    with pytest.raises(ValueError):
        store.inject("transient", ops="copy")


async def test_range_gets_are_their_own_op_and_faultable():
    store = FaultInjectingStore(MemoryStore())
    await store.put("k", b"0123456789")
    store.fail_next(1, ops="get")
    assert await store.get_range("k", 0, 3) == b"012"  # a "get" fault leaves range reads alone
    store.clear()
    store.fail_next(1, ops="get_range", kind="permanent")
    with pytest.raises(TierDBError) as info:
        await store.get_range("k", 0, 3)
    assert info.value.context["retryable"] is False and info.value.context["op"] == "get_range"
    store.fail_next(1)  # every op, range reads included
    with pytest.raises(TierDBError):
        await store.get_range("k", 0, 3)
    assert await store.get_range("k", 3, 5) == b"34"
    assert store.count("get_range") == 4


async def test_put_file_is_a_put_for_the_fault_rules(tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"file bytes")
    store = FaultInjectingStore(MemoryStore())
    store.fail_next(1, ops="put")
    with pytest.raises(TierDBError) as info:
        await store.put_file("k/f", str(source))
    assert info.value.context["retryable"] and await store.head("k/f") is None
    store.inject("lose_response", ops="put", times=1)
    with pytest.raises(TierDBError):
        await store.put_file("k/f", str(source))
    assert await store.get("k/f") == b"file bytes"
    assert [call for call in store.calls if call[0] == "put"] == [("put", "k/f")] * 2
