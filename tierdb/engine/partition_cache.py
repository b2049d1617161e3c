"""The node's RAM tier for partitioned segments: decoded partitions in one LRU bounded in bytes,
shared by every collection of the node (``cache.ram_bytes`` is a node-wide budget).

A partition larger than the whole budget is served but never kept, so the resident bytes
never exceed the budget.  Queries hold the partitions they scan while they scan them; that
working set is not part of the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from .partitioned import Partition, PartitionCodes, PartitionDocs

OnEvent = Callable[[str, int], None]   # ("hit" | "miss" | "eviction", count)
# (collection, segment id, partition number): a whole partition; with a fourth item, one section
# of it ("codes", "docs").
Key = tuple[str, str, int] | tuple[str, str, int, str]
Entry = Partition | PartitionCodes | PartitionDocs


class PartitionCache(Protocol):
    def get(self, key: Key) -> Entry | None: ...

    def get_many(self, keys: list[Key], *, count: bool = True) -> list[Entry | None]: ...

    def put(self, key: Key, partition: Entry) -> None: ...

    def forget_segment(self, collection: str, segment_id: str) -> None: ...

    def resident_bytes_of(self, collection: str) -> int: ...


class NoPartitionCache:
    """Before the node attaches its cache (recovery): every load is fetched."""

    def get(self, key: Key) -> Entry | None:
        return None

    def get_many(self, keys: list[Key], *, count: bool = True) -> list[Entry | None]:
        return [None] * len(keys)

    def put(self, key: Key, partition: Entry) -> None:
        pass

    def forget_segment(self, collection: str, segment_id: str) -> None:
        pass

    def resident_bytes_of(self, collection: str) -> int:
        return 0


class PartitionLru:
    def __init__(self, budget_bytes: int, on_event: Callable[[str, str, int], None] | None = None) -> None:
        self.budget = budget_bytes
        self._on_event = on_event      # (collection, kind, count)
        self._entries: OrderedDict[Hashable, tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    @property
    def resident_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: list[Key], *, count: bool = True) -> list[Entry | None]:
        """``get`` of each key under one lock, hits and misses reported once per collection
        (a query looks up a few hundred); ``count=False``: an opportunistic look, not counted
        (is a whole partition here, to serve one of its sections?)."""
        out: list[Entry | None] = []
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    out.append(None)
                    misses[key[0]] = misses.get(key[0], 0) + 1
                else:
                    self._entries.move_to_end(key)
                    out.append(entry[0])
                    hits[key[0]] = hits.get(key[0], 0) + 1
            if count:
                self.hits += sum(hits.values())
                self.misses += sum(misses.values())
        if count:
            for kind, tally in (("hit", hits), ("miss", misses)):
                for collection, n in tally.items():
                    self._emit(collection, kind, n)
        return out

    def get(self, key: Key) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
        self._emit(key[0], "hit" if entry is not None else "miss", 1)
        return entry[0] if entry is not None else None

    def put(self, key: Key, partition: Entry) -> None:
        size = partition.nbytes()
        if size > self.budget:
            return
        evicted: dict[str, int] = {}
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (partition, size)
            self._bytes += size
            while self._bytes > self.budget:
                victim, (_, victim_size) = self._entries.popitem(last=False)
                self._bytes -= victim_size
                evicted[victim[0]] = evicted.get(victim[0], 0) + 1  # type: ignore[index]
            self.evictions += sum(evicted.values())
        for collection, n in evicted.items():
            self._emit(collection, "eviction", n)

    def forget_segment(self, collection: str, segment_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == collection and k[1] == segment_id]:  # type: ignore[index]
                self._bytes -= self._entries.pop(key)[1]

    def resident_bytes_of(self, collection: str) -> int:
        """Bytes of this collection's partitions in the cache (for its status)."""
        with self._lock:
            return sum(size for key, (_, size) in self._entries.items() if key[0] == collection)  # type: ignore[index]

    def _emit(self, collection: str, kind: str, n: int) -> None:
        if self._on_event is not None:
            self._on_event(collection, kind, n)
