"""SegmentRamCache (the s3_only RAM tier) over real segments whose bytes live in an in-memory
object map: the byte budget, LRU order, reloads on a miss, failed reloads, and the counters."""

from __future__ import annotations

import numpy as np
import pytest

from tierdb.engine import segment as segments
from tierdb.engine.ramcache import SegmentRamCache
from tierdb.models import HnswParams

DIM = 8
ROWS = 50


class SegmentObjects:
    """Encoded segments by id (the disk cache / S3 of the real engine), with fault injection."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.loads: list[str] = []
        self.fail_next = 0

    def segment(self, n: int) -> segments.Segment:
        segment_id = f"{n:032x}"
        raw = np.random.default_rng(n).standard_normal((ROWS, DIM)).astype(np.float32)
        ids = [f"s{n}-{i}" for i in range(ROWS)]
        data = segments.encode(raw, ids, [{"i": i} for i in range(ROWS)], "cosine", HnswParams(), None)
        self.objects[segment_id] = data
        segment = segments.decode(segment_id, data)
        segment.loader = lambda: self._load(segment_id)
        return segment

    def _load(self, segment_id: str) -> segments.Segment:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(f"injected: cannot read segment {segment_id}")
        self.loads.append(segment_id)
        return segments.decode(segment_id, self.objects[segment_id])


@pytest.fixture
def store() -> SegmentObjects:
    return SegmentObjects()


def resident(*segs: segments.Segment) -> list[bool]:
    return [s.resident for s in segs]


def test_the_budget_holds_and_the_least_recently_used_segment_goes_first(store):
    a, b, c = store.segment(1), store.segment(2), store.segment(3)
    size = a.nbytes()
    assert size > 0
    events: list[tuple[str, int]] = []
    cache = SegmentRamCache(budget_bytes=2 * size + size // 2, on_event=lambda kind, n: events.append((kind, n)))
    cache.register(a)
    cache.register(b)
    assert resident(a, b) == [True, True] and cache.bytes == 2 * size
    a.raw_vectors()                                   # a is now the most recently used
    cache.register(c)                                 # over budget: b goes, not a
    assert resident(a, b, c) == [True, False, True]
    assert cache.bytes == 2 * size <= cache.budget
    assert (cache.hits, cache.misses, cache.evictions) == (1, 0, 1)
    assert events == [("hit", 1), ("eviction", 1)]


def test_a_miss_reloads_the_same_rows_and_evicts_another_segment(store):
    a, b = store.segment(1), store.segment(2)
    before = a.raw_vectors().copy()
    cache = SegmentRamCache(budget_bytes=a.nbytes() + a.nbytes() // 2)
    cache.register(a)
    cache.register(b)                                 # a is evicted
    assert resident(a, b) == [False, True]
    assert cache.bytes == b.nbytes()
    np.testing.assert_array_equal(a.raw_vectors(), before)   # read back from its object
    assert store.loads == [a.id]
    assert resident(a, b) == [True, False]            # ... and b made room for it
    assert (cache.misses, cache.evictions) == (1, 2)
    assert cache.bytes <= cache.budget
    assert a.metadata[7] == {"i": 7}


def test_a_failed_reload_leaves_the_segment_unloaded_and_a_later_access_works(store):
    a, b = store.segment(1), store.segment(2)
    cache = SegmentRamCache(budget_bytes=a.nbytes())
    cache.register(a)
    cache.register(b)
    store.fail_next = 1
    with pytest.raises(OSError, match="injected"):
        a.raw_vectors()
    assert not a.resident and cache.misses == 0       # nothing was counted or loaded
    assert a.raw_vectors().shape == (ROWS, DIM)
    assert cache.misses == 1 and a.resident and not b.resident


def test_a_segment_larger_than_the_budget_is_kept_while_in_use(store):
    a = store.segment(1)
    cache = SegmentRamCache(budget_bytes=1)
    cache.register(a)
    assert a.resident and cache.evictions == 0        # never evict the segment being used
    assert a.raw_vectors().shape == (ROWS, DIM)


def test_forgotten_segments_leave_the_accounting(store):
    a, b = store.segment(1), store.segment(2)
    cache = SegmentRamCache(budget_bytes=10 * a.nbytes())
    cache.register(a)
    cache.register(b)
    cache.forget(a)
    assert cache.bytes == b.nbytes() and a.on_access is None
    a.raw_vectors()
    assert cache.hits == 0                            # no longer tracked


def test_segments_without_a_loader_are_never_unloaded(store):
    """Regression: such a segment was counted as evicted (and as 0 bytes) though it stayed
    in RAM, so the cache under-reported its bytes and over-reported evictions."""
    pinned = store.segment(1)
    pinned.loader = None                              # e.g. a segment only in RAM
    other = store.segment(2)
    cache = SegmentRamCache(budget_bytes=pinned.nbytes())
    cache.register(pinned)
    cache.register(other)
    assert resident(pinned, other) == [True, True]
    assert cache.evictions == 0
    assert cache.bytes == pinned.nbytes() + other.nbytes()
