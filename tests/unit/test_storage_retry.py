import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierdb.testing.store import BlobStoreContract
from tierdb.config import RetrySettings
from tierdb.errors import ErrorKind, TierDBError, invalid, not_found
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore
from tierdb.storage.retry import RetryingStore, backoff_delay, is_retryable, retry_call

SETTINGS = RetrySettings(max_retries=5, base_backoff_secs=0.1, max_backoff_secs=1.0)


class FakeClock:
    def __init__(self):
        self.sleeps: list[float] = []

    async def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)


def make(settings=SETTINGS, rng=lambda: 1.0):
    clock = FakeClock()
    faults = FaultInjectingStore(MemoryStore())
    retries = []
    store = RetryingStore(
        faults, settings, sleep=clock.sleep, rng=rng,
        on_retry=lambda op, n, delay, err: retries.append((op, n, delay, err.context["code"])),
    )
    return store, faults, clock, retries


class TestRetryingStoreContract(BlobStoreContract):
    @pytest.fixture
    async def store(self):
        yield make()[0]


def test_backoff_sequence_doubles_then_caps():
    delays = [backoff_delay(i, SETTINGS, rng=lambda: 1.0) for i in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_does_not_overflow_for_huge_attempt_numbers():
    assert backoff_delay(10_000, SETTINGS, rng=lambda: 1.0) == 1.0


@given(
    retry_index=st.integers(min_value=0, max_value=80),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    base=st.floats(min_value=0.001, max_value=5.0),
    cap=st.floats(min_value=0.001, max_value=120.0),
)
def test_full_jitter_bounds(retry_index, u, base, cap):
    settings = RetrySettings(max_retries=3, base_backoff_secs=base, max_backoff_secs=cap)
    delay = backoff_delay(retry_index, settings, rng=lambda: u)
    assert 0.0 <= delay <= min(cap, base * 2 ** min(retry_index, 62))
    assert delay == pytest.approx(u * min(cap, base * 2 ** min(retry_index, 62)))


async def test_succeeds_after_transient_faults():
    store, faults, clock, retries = make()
    await faults.inner.put("k", b"v")
    faults.fail_next(3, ops="get")
    assert await store.get("k") == b"v"
    assert faults.count("get") == 4
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert [(op, n) for op, n, _, _ in retries] == [("get", 1), ("get", 2), ("get", 3)]


async def test_jitter_uses_rng():
    store, faults, clock, _ = make(rng=lambda: 0.25)
    await faults.inner.put("k", b"v")
    faults.fail_next(2, ops="get")
    await store.get("k")
    assert clock.sleeps == pytest.approx([0.025, 0.05])


async def test_gives_up_after_max_retries_with_attempt_count():
    store, faults, clock, retries = make()
    faults.inject("transient", ops="put")
    with pytest.raises(TierDBError) as info:
        await store.put("k", b"v")
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert info.value.context["retryable"] is True
    assert info.value.context["attempts"] == SETTINGS.max_retries + 1
    assert faults.count("put") == SETTINGS.max_retries + 1
    assert len(clock.sleeps) == len(retries) == SETTINGS.max_retries


async def test_zero_retries_means_one_attempt():
    store, faults, clock, _ = make(RetrySettings(max_retries=0, base_backoff_secs=0.1))
    faults.inject("transient")
    with pytest.raises(TierDBError) as info:
        await store.head("k")
    assert info.value.context["attempts"] == 1
    assert faults.count() == 1 and clock.sleeps == []


async def test_permanent_errors_are_not_retried():
    store, faults, clock, retries = make()
    faults.inject("permanent", prefix="collections/")
    with pytest.raises(TierDBError) as info:
        await store.put("collections/a/x.seg", b"v")
    assert info.value.context["retryable"] is False
    assert faults.count() == 1 and clock.sleeps == [] and retries == []
    await store.put("elsewhere/x", b"v")  # the prefix scopes the fault


async def test_not_found_is_not_retried():
    store, faults, clock, _ = make()
    with pytest.raises(TierDBError) as info:
        await store.get("missing")
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert faults.count() == 1 and clock.sleeps == []


async def test_precondition_is_not_retried():
    store, faults, clock, _ = make()
    await store.put("m/1.json", b"a", if_absent=True)
    with pytest.raises(TierDBError) as info:
        await store.put("m/1.json", b"b", if_absent=True)
    assert info.value.kind is ErrorKind.PRECONDITION
    assert faults.count("put") == 2 and clock.sleeps == []


async def test_invalid_is_not_retried():
    calls = []

    async def fn():
        calls.append(1)
        raise invalid("bad key")

    with pytest.raises(TierDBError):
        await retry_call(fn, SETTINGS, sleep=FakeClock().sleep)
    assert calls == [1]


async def test_unmarked_unavailable_is_not_retried():
    # UNAVAILABLE without retryable=True (e.g. a local disk I/O error) is permanent
    assert not is_retryable(TierDBError(ErrorKind.UNAVAILABLE, "x"))
    assert not is_retryable(not_found("x"))
    assert is_retryable(TierDBError(ErrorKind.UNAVAILABLE, "x", retryable=True))


async def test_unconditional_put_with_lost_response_is_retried_and_lands():
    store, faults, clock, _ = make()
    faults.inject("lose_response", ops="put", times=1)
    await store.put("k", b"v")
    assert await store.get("k") == b"v"
    assert faults.count("put") == 2


async def test_conditional_put_whose_response_was_lost_succeeds():
    # attempt 1 writes the object but the caller sees a 503; attempt 2 gets 412; the
    # object holds our bytes, so the conditional put did succeed.
    store, faults, _, _ = make()
    faults.inject("lose_response", ops="put", times=1)
    await store.put("m/00000000000000000002.json", b"mine", if_absent=True)
    assert await store.get("m/00000000000000000002.json") == b"mine"


async def test_conditional_put_lost_to_another_writer_after_transient_error():
    store, faults, _, _ = make()
    faults.fail_next(1, ops="put")
    await faults.inner.put("m/3.json", b"theirs")  # another writer got there first
    with pytest.raises(TierDBError) as info:
        await store.put("m/3.json", b"mine", if_absent=True)
    assert info.value.kind is ErrorKind.PRECONDITION
    assert await store.get("m/3.json") == b"theirs"


async def test_precondition_reads_back_even_without_a_failed_attempt():
    # The HTTP client may have resent a PUT whose reply was lost: identical bytes are ours.
    store, faults, _, _ = make()
    await faults.inner.put("m/4.json", b"same")
    await store.put("m/4.json", b"same", if_absent=True)
    assert faults.count("get") == 1
    await faults.inner.put("m/5.json", b"theirs")
    with pytest.raises(TierDBError) as info:
        await store.put("m/5.json", b"mine", if_absent=True)
    assert info.value.kind is ErrorKind.PRECONDITION


async def test_range_gets_are_retried_like_gets():
    store, faults, _clock, retries = make()
    await store.put("collections/c/segments/r.seg", b"0123456789")
    faults.fail_next(2, ops="get_range")
    assert await store.get_range("collections/c/segments/r.seg", 2, 5) == b"234"
    assert [r[:2] for r in retries] == [("get_range", 1), ("get_range", 2)]
    assert faults.count("get_range") == 3


async def test_range_past_the_end_is_not_retried():
    store, faults, _clock, retries = make()
    await store.put("k/r", b"0123456789")
    with pytest.raises(TierDBError) as info:
        await store.get_range("k/r", 10, 20)
    assert info.value.kind is ErrorKind.INVALID
    assert retries == [] and faults.count("get_range") == 1


async def test_put_file_is_retried_like_put(tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"file bytes")
    store, faults, _, retries = make()
    faults.fail_next(2, ops="put")
    await store.put_file("k/f", str(source))
    assert await store.get("k/f") == b"file bytes"
    assert [r[:2] for r in retries] == [("put", 1), ("put", 2)] and faults.count("put") == 3
