"""The RAM tier of s3_only: an LRU of loaded segments bounded in bytes.

Ids and live masks of every segment stay resident (the live map needs them); the vectors,
metadata and hnswlib index of the least recently used segments are dropped when the budget is
exceeded and read back from the disk cache (or S3) on their next use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Protocol

from .segment import Segment

OnEvent = Callable[[str, int], None]   # ("hit" | "miss" | "eviction", count)
Loader = Callable[[], Segment]         # reads an evicted segment back from its store


class SegmentCache(Protocol):
    """Where a collection's segments keep their memory: all resident, or a bounded LRU."""

    def adopt(self, segment: Segment, loader: Loader) -> None: ...

    def forget(self, segment: Segment) -> None: ...


class ResidentSegments:
    """memory, memory_s3: every segment stays in RAM; nothing to track."""

    def adopt(self, segment: Segment, loader: Loader) -> None:
        pass

    def forget(self, segment: Segment) -> None:
        pass


class SegmentRamCache:
    def __init__(self, budget_bytes: int, on_event: OnEvent | None = None) -> None:
        self.budget = budget_bytes
        self._on_event = on_event
        self._lru: OrderedDict[int, Segment] = OrderedDict()
        self._bytes: dict[int, int] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def adopt(self, segment: Segment, loader: Loader) -> None:
        """Track ``segment``; once evicted it is read back with ``loader``."""
        segment.loader = loader
        self.register(segment)

    def register(self, segment: Segment) -> None:
        segment.on_access = self._accessed
        with self._lock:
            self._lru[id(segment)] = segment
            self._bytes[id(segment)] = segment.nbytes()
            self._evict_over_budget(keep=segment)

    def forget(self, segment: Segment) -> None:
        segment.on_access = None
        with self._lock:
            self._lru.pop(id(segment), None)
            self._bytes.pop(id(segment), None)

    @property
    def bytes(self) -> int:
        return sum(self._bytes.values())

    def _accessed(self, segment: Segment, was_resident: bool) -> None:
        key = id(segment)
        with self._lock:
            if key not in self._lru:
                return
            self._lru.move_to_end(key)
            if was_resident:
                self.hits += 1
            else:
                self.misses += 1
                self._bytes[key] = segment.nbytes()
                self._evict_over_budget(keep=segment)
        self._emit("hit" if was_resident else "miss", 1)

    def _evict_over_budget(self, keep: Segment) -> None:
        evicted = 0
        for key in list(self._lru):
            if sum(self._bytes.values()) <= self.budget:
                break
            victim = self._lru[key]
            if victim is keep or not victim.resident:
                continue
            if not victim.unload():
                continue          # cannot be dropped (no loader): still resident, still counted
            self._bytes[key] = 0
            evicted += 1
        if evicted:
            self.evictions += evicted
            self._emit("eviction", evicted)

    def _emit(self, kind: str, n: int) -> None:
        if self._on_event is not None:
            self._on_event(kind, n)
