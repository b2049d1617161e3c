"""WrapperStore: delegation by default, and the stack without its retry layers."""

import pytest

from tierdb.config import RetrySettings
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore
from tierdb.storage.metered import MeteredStore
from tierdb.storage.retry import RetryingStore
from tierdb.storage.wrapper import WrapperStore, without_retries
from tierdb.testing.store import BlobStoreContract

RETRY = RetrySettings(max_retries=3, base_backoff_secs=0.0, max_backoff_secs=0.0)


class TestBareWrapperContract(BlobStoreContract):
    @pytest.fixture
    async def store(self):
        yield WrapperStore(MemoryStore())


async def test_delegates_every_operation_and_close():
    closed = []

    class Inner(FaultInjectingStore):
        async def close(self):
            closed.append(True)

    inner = Inner(MemoryStore())
    store = WrapperStore(inner)
    await store.put("a/b", b"x", if_absent=True)
    assert await store.get("a/b") == b"x"
    assert (await store.head("a/b")).size == 1
    assert [i.key for i in await store.list("a/")] == ["a/b"]
    await store.delete("a/b")
    await store.close()
    assert inner.calls == [("put", "a/b"), ("get", "a/b"), ("head", "a/b"), ("list", "a/"),
                           ("delete", "a/b")]
    assert closed == [True]
    assert repr(store).startswith("WrapperStore(FaultInjectingStore(")


async def test_without_retries_on_the_production_shape_is_one_attempt():
    faults = FaultInjectingStore(MemoryStore())
    metered = MeteredStore(faults)
    stack = RetryingStore(metered, RETRY)
    bare = without_retries(stack)
    assert bare is metered  # the layer under the retries, unchanged

    faults.fail_next(1, ops="head")
    with pytest.raises(TierDBError) as info:
        await bare.head("health-probe")
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert faults.count("head") == 1
    faults.fail_next(1, ops="head")
    assert await stack.head("health-probe") is None  # the full stack retries
    assert faults.count("head") == 3


async def test_without_retries_keeps_layers_above_and_below():
    faults = FaultInjectingStore(MemoryStore())
    outer = MeteredStore(RetryingStore(RetryingStore(faults, RETRY), RETRY))
    bare = without_retries(outer)
    assert type(bare) is MeteredStore and bare is not outer
    assert bare.inner is faults
    assert type(outer.inner) is RetryingStore  # the original stack is untouched
    faults.fail_next(1, ops="get")
    with pytest.raises(TierDBError):
        await bare.get("k")
    assert faults.count("get") == 1


def test_without_retries_of_a_stack_without_retries_is_itself():
    memory = MemoryStore()
    metered = MeteredStore(FaultInjectingStore(memory))
    assert without_retries(metered) is metered
    assert without_retries(memory) is memory
