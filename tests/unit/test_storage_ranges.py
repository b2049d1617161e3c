import asyncio
import os

import pytest

from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore
from tierdb.storage.ranges import DEFAULT_MAX_GAP, Span, get_ranges, plan_ranges

KEY = "collections/c/segments/" + "ef" * 16 + ".seg"
KiB = 1024


def test_plan_coalesces_overlapping_adjacent_and_near_ranges_in_start_order():
    ranges = [(500, 600), (0, 100), (100, 200), (250, 300), (150, 180), (10_000, 10_010)]
    assert plan_ranges(KEY, ranges, max_gap=50) == [
        Span(0, 300, (1, 2, 4, 3)),
        Span(500, 600, (0,)),
        Span(10_000, 10_010, (5,)),
    ]


def test_plan_gap_threshold_is_inclusive():
    assert plan_ranges(KEY, [(0, 10), (74, 80)], max_gap=64) == [Span(0, 80, (0, 1))]
    assert plan_ranges(KEY, [(0, 10), (75, 80)], max_gap=64) == [Span(0, 10, (0,)), Span(75, 80, (1,))]
    assert plan_ranges(KEY, [(0, 10), (10, 20)], max_gap=0) == [Span(0, 20, (0, 1))]


def test_plan_default_gap_is_64_kib():
    assert DEFAULT_MAX_GAP == 64 * KiB
    assert len(plan_ranges(KEY, [(0, 1), (1 + 64 * KiB, 2 + 64 * KiB)])) == 1
    assert len(plan_ranges(KEY, [(0, 1), (2 + 64 * KiB, 3 + 64 * KiB)])) == 2


def test_plan_skips_empty_ranges_and_keeps_a_contained_range_inside():
    assert plan_ranges(KEY, [(5, 5), (0, 100), (20, 30), (0, 0)]) == [Span(0, 100, (1, 2))]
    assert plan_ranges(KEY, []) == []


@pytest.mark.parametrize(
    "ranges",
    [[(6, 5)], [(-1, 3)], [(-1, -1)], [(True, 3)], [(0, 2.0)], [(1.0, 1.0)], [(0, 1, 2)], [[0, 1]],
     [(0, None)]],
)
def test_plan_rejects_bad_ranges(ranges):
    with pytest.raises(TierDBError) as info:
        plan_ranges(KEY, ranges)
    assert info.value.kind is ErrorKind.INVALID


@pytest.mark.parametrize("gap", [-1, 1.5, None])
def test_plan_rejects_bad_gap(gap):
    with pytest.raises(TierDBError) as info:
        plan_ranges(KEY, [(0, 1)], max_gap=gap)
    assert info.value.kind is ErrorKind.INVALID


async def test_get_ranges_sends_one_request_per_span_and_cuts_the_answers_back():
    store = FaultInjectingStore(MemoryStore())
    data = os.urandom(300 * KiB)
    await store.put(KEY, data)
    ranges = [(200 * KiB, 210 * KiB), (0, 4 * KiB), (8 * KiB, 12 * KiB), (6 * KiB, 6 * KiB),
              (3 * KiB, 9 * KiB)]
    got = await get_ranges(store, KEY, ranges, max_gap=64 * KiB)
    assert got == [data[s:e] for s, e in ranges]
    assert [c for c in store.calls if c[0] == "get_range"] == [("get_range", KEY)] * 2


async def test_get_ranges_runs_its_requests_concurrently():
    store = FaultInjectingStore(MemoryStore())
    await store.put(KEY, bytes(range(256)) * 40)
    in_flight = peak = 0
    inner_get_range = store.inner.get_range

    async def slow_get_range(key, start, end):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return await inner_get_range(key, start, end)

    store.inner.get_range = slow_get_range
    ranges = [(i * 1000, i * 1000 + 10) for i in range(8)]
    got = await get_ranges(store, KEY, ranges, max_gap=0)
    assert got == [(bytes(range(256)) * 40)[s:e] for s, e in ranges]
    assert peak == 8


async def test_get_ranges_clamps_the_end_and_rejects_a_start_past_the_object():
    store = MemoryStore()
    await store.put(KEY, b"0123456789")
    assert await get_ranges(store, KEY, [(2, 4), (8, 50)]) == [b"23", b"89"]
    # (12, 13) shares a span with (8, 11): the span comes back clamped, the range is past it.
    for ranges in ([(8, 11), (12, 13)], [(10, 11)]):
        with pytest.raises(TierDBError) as info:
            await get_ranges(store, KEY, ranges)
        assert info.value.kind is ErrorKind.INVALID and KEY in str(info.value)


async def test_get_ranges_of_a_missing_key_is_not_found_and_empty_ranges_need_no_request():
    store = FaultInjectingStore(MemoryStore())
    with pytest.raises(TierDBError) as info:
        await get_ranges(store, KEY, [(0, 10), (100 * KiB, 101 * KiB)])
    assert info.value.kind is ErrorKind.NOT_FOUND
    store.calls.clear()
    assert await get_ranges(store, KEY, [(3, 3), (0, 0)]) == [b"", b""]
    assert store.calls == []


async def test_get_ranges_waits_for_every_request_before_raising():
    store = FaultInjectingStore(MemoryStore())
    await store.put(KEY, bytes(100 * KiB))
    store.fail_next(1, ops="get_range")
    store.inject("latency", ops="get_range", delay=0.01)
    with pytest.raises(TierDBError) as info:
        await get_ranges(store, KEY, [(0, 10), (90 * KiB, 90 * KiB + 10)], max_gap=0)
    assert info.value.context["retryable"] is True
    assert len([t for t in asyncio.all_tasks() if not t.done()]) == 1  # only this test's task
