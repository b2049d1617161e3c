"""The node's partition cache: LRU in bytes, never over its budget, shared by collections."""

from __future__ import annotations

import numpy as np

from tierdb.engine.partition_cache import PartitionLru
from tierdb.engine.partitioned import Partition


def partition(number: int, rows: int) -> Partition:
    vectors = np.ones((rows, 4), np.float32)
    return Partition(number, 0, vectors, np.ones(rows, np.float32), memoryview(b"\x90"), memoryview(b"\x90"))


def test_least_recently_used_partitions_go_first_and_the_budget_holds() -> None:
    size = partition(0, 10).nbytes()
    events: list[tuple[str, str, int]] = []
    cache = PartitionLru(3 * size, on_event=lambda c, kind, n: events.append((c, kind, n)))
    for p in range(3):
        cache.put(("a", "s1", p), partition(p, 10))
    assert cache.get(("a", "s1", 0)) is not None          # 0 is now the most recent
    cache.put(("b", "s2", 0), partition(0, 10))            # evicts a/s1/1, the least recent
    assert cache.get(("a", "s1", 1)) is None
    assert cache.get(("a", "s1", 0)) is not None and cache.get(("b", "s2", 0)) is not None
    assert cache.resident_bytes == 3 * size <= cache.budget
    assert cache.resident_bytes_of("a") == 2 * size and cache.resident_bytes_of("b") == size
    assert ("a", "eviction", 1) in events and cache.evictions == 1
    assert cache.hits == 3 and cache.misses == 1


def test_a_partition_larger_than_the_budget_is_not_kept() -> None:
    cache = PartitionLru(100)
    cache.put(("a", "s", 0), partition(0, 1000))
    assert len(cache) == 0 and cache.resident_bytes == 0


def test_forgetting_a_segment_frees_its_partitions_only() -> None:
    size = partition(0, 10).nbytes()
    cache = PartitionLru(10 * size)
    cache.put(("a", "old", 0), partition(0, 10))
    cache.put(("a", "old", 1), partition(1, 10))
    cache.put(("a", "new", 0), partition(0, 10))
    cache.forget_segment("a", "old")
    assert cache.resident_bytes == size and cache.get(("a", "new", 0)) is not None
