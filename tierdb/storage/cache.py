"""A read-through disk cache in front of a BlobStore, for immutable objects.

Only keys accepted by ``cacheable`` are cached (default ``keys.is_immutable``: segments and
WAL objects, which are never rewritten; manifests advance in place by version and are always
read from the inner store).  Reads try the cache, then the inner store, then fill the cache; writes go to
the inner store first and then fill the cache; deletes evict.  The cache is an
optimisation only: any cache failure is logged and the inner store answers.

Range reads (``get_range``) of a cacheable key are served from the whole object when it is
cached, else from an entry for exactly that range, keyed ``(key, start, end)`` and tagged
with ``key`` in the same diskcache and the same LRU byte budget.  A miss fetches just that
range from the inner store.  Evicting a key (delete, overwrite) drops its ranges too (by
tag), and caching a whole object drops the ranges it makes redundant.

Eviction is least-recently-*used* (diskcache's default policy is least-recently-stored).
diskcache evicts ``cull_limit`` LRU entries per write once the volume reaches
``size_limit``; we set it to 1 so a fill evicts exactly the oldest entry, and keep evicting
one at a time (``_shrink``) while a larger newcomer still leaves the cache over the limit.
(``Cache.cull()`` evicts in batches of ten, which in a cache of a few large segments would
throw away the entry just written.)  diskcache evicts silently, so evictions are counted as
the entries that disappeared during a fill: ``len before + 1 (if the key was new) - len
after``.  Fills and evictions are serialised by a lock, so the count is exact as long as no
other process shares the directory.  ``size_limit`` is compared with diskcache's
``volume()``, which includes SQLite's own pages; after every fill the cache is within it.
"""

from __future__ import annotations

import asyncio
import os
import logging
import threading
from collections.abc import Callable
from typing import BinaryIO

import diskcache

from tierdb import keys
from tierdb.errors import TierDBError
from tierdb.storage.base import BlobStore
from tierdb.storage.local import range_not_satisfiable, validate_range
from tierdb.storage.wrapper import WrapperStore

logger = logging.getLogger(__name__)

# on_event(kind, n) with kind in "hit", "miss", "eviction".
OnEvent = Callable[[str, int], None]

# Tuples can never equal an object key (always a str): a range entry is (key, start, end).
_CULL_PROBE = ("tierdb", "cull-probe")
CacheKey = str | tuple[str, int, int]
# The learned file of a whole cached object, in ``_files``: (key, *_WHOLE).
_WHOLE = (-1, -1)


class DiskCachedStore(WrapperStore):
    def __init__(
        self,
        inner: BlobStore,
        directory: str,
        size_limit_bytes: int,
        *,
        on_event: OnEvent | None = None,
        cacheable: Callable[[str], bool] = keys.is_immutable,
        max_object_bytes: int | None = None,
    ) -> None:
        if size_limit_bytes <= 0:
            raise ValueError("size_limit_bytes must be positive")
        super().__init__(inner)
        self.directory = directory
        self.size_limit = size_limit_bytes
        # An object close to the whole budget would flush the working set for one entry.
        self.max_object_bytes = (
            size_limit_bytes // 2 if max_object_bytes is None else max_object_bytes
        )
        self._cacheable = cacheable
        self._on_event = on_event
        self._cache: diskcache.Cache | None = None
        self._open_lock = asyncio.Lock()
        self._fill_lock = threading.Lock()
        # Range fills run after the caller has its bytes (a cold query must not wait for a
        # hundred cache writes); a lookup of a range being filled waits for that fill.
        self._filling: dict[CacheKey, asyncio.Task[None]] = {}
        self._batch: list[tuple[CacheKey, bytes]] | None = None   # range fills waiting for their task
        self._batch_task: asyncio.Task[None] | None = None
        self._hits = self._misses = self._evictions = 0
        # Where diskcache keeps the file of a cached range (learned when a lookup opens one):
        # ``read_known_files`` reads sub-ranges of it with no SQLite transaction.  diskcache
        # never reuses a file name, so a path read is that entry's bytes or a missing file.
        self._files: dict[tuple[str, int, int], str] = {}
        self._bytes = 0
        self._entries = 0

    def __repr__(self) -> str:
        return f"DiskCachedStore({self.inner!r}, directory={self.directory!r})"

    def stats(self) -> dict[str, int]:
        """Counters since start, plus the cache's size as of the last fill or eviction."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "evictions": self._evictions,
            "bytes": self._bytes,
            "entries": self._entries,
            "size_limit": self.size_limit,
        }

    # -- BlobStore ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        if not self._cacheable(key):
            return await self.inner.get(key)
        cached = await self._lookup(key)
        if cached is not None:
            self._event("hit", 1)
            return cached
        self._event("miss", 1)
        data = await self.inner.get(key)
        await self._fill(key, data)
        return data

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        if not self._cacheable(key):
            return await self.inner.get_range(key, start, end)
        validate_range(key, start, end)
        await self.fills_done((key, start, end))
        cached = await self._lookup_range(key, start, end)
        if cached is not None:
            self._event("hit", 1)
            return cached
        self._event("miss", 1)
        data = await self.inner.get_range(key, start, end)
        self._fill_in_background((key, start, end), data)
        return data

    def _fill_in_background(self, key: CacheKey, data: bytes) -> None:
        """Queue a range fill; the fills queued in one pass of the event loop are written
        together, in one thread hop and one transaction (a cold query's few hundred row reads
        would otherwise cost a hop and a commit each)."""
        if key in self._filling:
            return
        if self._batch is None:
            self._batch = []
            self._batch_task = asyncio.get_running_loop().create_task(self._fill_batch(self._batch))
        self._batch.append((key, data))
        task = self._batch_task
        self._filling[key] = task
        task.add_done_callback(lambda done: self._filling.pop(key, None) if self._filling.get(key) is done else None)

    async def _fill_batch(self, batch: list[tuple[CacheKey, bytes]]) -> None:
        await asyncio.sleep(0)   # the fills queued in this pass of the loop join the batch
        self._batch = None
        batch = [(key, data) for key, data in batch if len(data) <= self.max_object_bytes]
        if not batch:
            return
        try:
            cache = await self._open()
            evicted = await asyncio.to_thread(self._fill_many_sync, cache, batch)
        except Exception:
            logger.warning("disk cache fill failed", exc_info=True,
                           extra={"entries": len(batch), "cache_dir": self.directory})
            for key, _ in batch:
                await self._evict(key)  # never leave a possibly stale entry behind
            return
        if evicted:
            self._event("eviction", evicted)

    async def fills_done(self, key: CacheKey | None = None) -> None:
        """Wait for the pending fill of ``key`` (all of them when None)."""
        pending = list(self._filling.values()) if key is None else [t for t in (self._filling.get(key),) if t]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def cached_ranges(self, key: str, ranges: list[tuple[int, int]],
                            containers: list[tuple[int, int]] | None = None) -> list[bytes | None]:
        """Each ``(start, end)`` range of ``key`` that the cache holds (from the whole object, that
        exact range, or the cached range ``containers[i]`` enclosing it), else None, read with one
        thread hop and one transaction: a query reading a hundred partitions (or a few hundred rows
        of them) of one segment pays one lookup, not a hundred.  Misses are left to ``get_range``
        (which counts them)."""
        if not ranges or not self._cacheable(key):
            return [None] * len(ranges)
        if self._filling:   # a range (or the one enclosing it) being filled is about to be a hit
            pending = [task for r in (*ranges, *(containers or ())) if (task := self._filling.get((key, *r)))]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        try:
            cache = await self._open()
            found = await asyncio.to_thread(self._cached_ranges_sync, cache, key, ranges, containers)
        except Exception:
            logger.warning("disk cache read failed; reading from the store", exc_info=True,
                           extra={"key": key, "ranges": len(ranges), "cache_dir": self.directory})
            return [None] * len(ranges)
        hits = sum(data is not None for data in found)
        if hits:
            self._event("hit", hits)
        return found

    def read_known_files(self, key: str, ranges: list[tuple[int, int]],
                         containers: list[tuple[int, int]]) -> list[bytes | None]:
        """Blocking, for worker threads: each range read straight from the file of its cached
        enclosing range ``containers[i]`` when an earlier lookup learned where that file is,
        else None (then ask ``cached_ranges``).  No SQLite, so no LRU access-time update: the
        entry ages from its last lookup (codes and documents of the same partitions are looked up
        through ``cached_ranges`` and stay in the RAM tier; this serves the re-rank's row reads)."""
        out: list[bytes | None] = []
        opened: dict[str, int | None] = {}
        whole = (key, *_WHOLE)
        try:
            for (start, end), outer in zip(ranges, containers):
                entry = whole if whole in self._files else (key, *outer)
                base = 0 if entry is whole else outer[0]
                path = self._files.get(entry)
                data = None
                if path is not None and (entry is whole or (outer[0] <= start and end <= outer[1])):
                    if path not in opened:
                        try:
                            opened[path] = os.open(path, os.O_RDONLY)
                        except FileNotFoundError:   # evicted
                            self._files.pop(entry, None)
                            opened[path] = None
                    fd = opened[path]
                    if fd is not None:
                        data = os.pread(fd, end - start, start - base)
                        if len(data) != end - start:
                            data = None
                out.append(data)
        finally:
            for fd in opened.values():
                if fd is not None:
                    os.close(fd)
        hits = sum(data is not None for data in out)
        if hits:
            self._event("hit", hits)
        return out

    def _cached_ranges_sync(self, cache: diskcache.Cache, key: str, ranges: list[tuple[int, int]],
                            containers: list[tuple[int, int]] | None = None) -> list[bytes | None]:
        # One transaction: with LRU eviction every read also writes its access time.
        opened: dict[tuple[int, int], object] = {}
        try:
            with cache.transact():
                whole = cache.get(key, None, read=True)
                if whole is not None:
                    if isinstance(getattr(whole, "name", None), str):
                        self._files[(key, *_WHOLE)] = whole.name  # type: ignore[union-attr]
                    return _slices(whole, 0, ranges)
                out: list[bytes | None] = []
                for i, (start, end) in enumerate(ranges):
                    # The enclosing range first: warm-up caches whole partitions, and many of a
                    # query's ranges fall in the same one (opened once).
                    data = None
                    outer = containers[i] if containers is not None else None
                    if outer is not None and outer != (start, end) and outer[0] <= start and end <= outer[1]:
                        if outer not in opened:
                            opened[outer] = cache.get((key, *outer), None, read=True)
                            name = getattr(opened[outer], "name", None)
                            if isinstance(name, str):
                                self._files[(key, *outer)] = name
                        held = opened[outer]
                        if held is not None:
                            (data,) = _slices(held, outer[0], [(start, end)], close=False)
                    if data is None:
                        data = cache.get((key, start, end), None)
                    out.append(data)
                return out
        finally:
            for held in opened.values():
                if held is not None and not isinstance(held, bytes):
                    held.close()  # type: ignore[attr-defined]

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        data = bytes(data)  # the cache must hold (and give back) bytes, not a caller's buffer
        cacheable = self._cacheable(key)
        if cacheable and not if_absent:
            # An overwrite whose outcome is unknown (lost response) must not leave the
            # old bytes cached.
            await self._evict(key)
        await self.inner.put(key, data, if_absent=if_absent)
        if cacheable:
            await self._fill(key, data)

    async def put_file(self, key: str, path: str) -> None:
        """As ``put``, with the cache filled by streaming the file (never read whole)."""
        cacheable = self._cacheable(key)
        if cacheable:
            await self._evict(key)
        await self.inner.put_file(key, path)
        if cacheable:
            await self._fill_from_file(key, path)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)
        if self._cacheable(key):
            await self.fills_done()   # no range of it lands after the eviction
            await self._evict(key)

    async def close(self) -> None:
        await self.fills_done()
        cache, self._cache = self._cache, None
        try:
            if cache is not None:
                await asyncio.to_thread(cache.close)
        finally:
            await self.inner.close()

    # -- cache operations (each one off the event loop) --------------------------------

    async def _open(self) -> diskcache.Cache:
        if self._cache is None:
            async with self._open_lock:
                if self._cache is None:
                    self._cache = await asyncio.to_thread(self._open_sync)
        return self._cache

    def _open_sync(self) -> diskcache.Cache:
        cache = diskcache.Cache(
            self.directory,
            size_limit=self.size_limit,
            eviction_policy="least-recently-used",
            cull_limit=1,
            tag_index=True,  # evicting a key's ranges by tag
        )
        self._bytes, self._entries = cache.volume(), len(cache)
        return cache

    async def _lookup(self, key: str) -> bytes | None:
        try:
            cache = await self._open()
            return await asyncio.to_thread(cache.get, key, None)
        except Exception:
            logger.warning(
                "disk cache read failed; reading from the store",
                exc_info=True,
                extra={"key": key, "cache_dir": self.directory},
            )
            return None

    async def _lookup_range(self, key: str, start: int, end: int) -> bytes | None:
        try:
            cache = await self._open()
            return await asyncio.to_thread(self._lookup_range_sync, cache, key, start, end)
        except TierDBError:
            raise  # the range starts past the end of the cached object
        except Exception:
            logger.warning(
                "disk cache read failed; reading from the store",
                exc_info=True,
                extra={"key": key, "start": start, "end": end, "cache_dir": self.directory},
            )
            return None

    @staticmethod
    def _lookup_range_sync(cache: diskcache.Cache, key: str, start: int, end: int) -> bytes | None:
        # read=True: a large object comes back as an open file, so only the range is read.
        whole = cache.get(key, None, read=True)
        if whole is None:
            return cache.get((key, start, end), None)
        if isinstance(whole, bytes):  # small values live inline in SQLite
            size, data = len(whole), whole[start:end]
        else:
            with whole:
                size = whole.seek(0, 2)
                whole.seek(start)
                data = whole.read(end - start) if start < size else b""
        if start >= size:
            raise range_not_satisfiable(key, start, end, size)
        return data

    async def _fill(self, key: CacheKey, data: bytes) -> None:
        if len(data) > self.max_object_bytes:
            return
        await self._fill_with(key, lambda cache: self._fill_sync(cache, key, data))

    async def _fill_from_file(self, key: str, path: str) -> None:
        await self._fill_with(key, lambda cache: self._fill_from_file_sync(cache, key, path))

    async def _fill_with(self, key: CacheKey, fill_sync: Callable[[diskcache.Cache], int]) -> None:
        """Run ``fill_sync`` (returning the number of entries evicted) in a worker thread; on
        failure the entry is evicted, never left possibly stale."""
        try:
            cache = await self._open()
            evicted = await asyncio.to_thread(fill_sync, cache)
        except Exception:
            logger.warning(
                "disk cache fill failed",
                exc_info=True,
                extra={"key": key, "cache_dir": self.directory},
            )
            await self._evict(key)  # never leave a possibly stale entry behind
            return
        if evicted:
            self._event("eviction", evicted)

    def _fill_from_file_sync(self, cache: diskcache.Cache, key: str, path: str) -> int:
        """Store the file at ``path`` as ``key``'s whole object, as ``put`` of its bytes would
        have: a small one inline (read, it is small), a larger one streamed into diskcache's file
        for it.  A file larger than ``max_object_bytes`` is not cached (0 evicted)."""
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size > self.max_object_bytes:
                return 0
            if size < cache.disk.min_file_size:
                return self._fill_sync(cache, key, source.read())
            return self._fill_sync(cache, key, source, read=True)

    def _fill_sync(self, cache: diskcache.Cache, key: CacheKey, data: bytes | BinaryIO, *, read: bool = False) -> int:
        """Store one entry (``read``: ``data`` is a file to copy from); the number of entries
        evicted to make room for it."""
        with self._fill_lock:
            if isinstance(key, str):
                cache.evict(key)  # the object's cached ranges: redundant now, not evictions
                tag = None
            else:
                tag = key[0]
            is_new = key not in cache
            before = len(cache)
            cache.set(key, data, tag=tag, read=read)
            self._shrink(cache)
            after = len(cache)
            self._bytes, self._entries = cache.volume(), after
        return before + int(is_new) - after

    def _fill_many_sync(self, cache: diskcache.Cache, batch: list[tuple[CacheKey, bytes]]) -> int:
        """Store range entries in one transaction; the number of entries evicted for them."""
        with self._fill_lock:
            before = len(cache)
            with cache.transact():
                fresh = sum(key not in cache for key, _ in batch)
                for key, data in batch:
                    cache.set(key, data, tag=key[0])
            self._shrink(cache)
            after = len(cache)
            self._bytes, self._entries = cache.volume(), after
        return before + fresh - after

    def _shrink(self, cache: diskcache.Cache) -> None:
        """Evict LRU entries one by one until the cache fits (never the newest entry).

        Writing a tiny probe entry makes diskcache evict its next LRU entry (the probe
        itself is the most recent); the probe is then deleted.
        """
        while cache.volume() > self.size_limit and len(cache) > 1:
            before = len(cache)
            cache.set(_CULL_PROBE, b"")
            cache.delete(_CULL_PROBE)
            if len(cache) >= before:
                return  # nothing left that diskcache is willing to evict

    async def _evict(self, key: CacheKey) -> None:
        try:
            cache = await self._open()
            await asyncio.to_thread(self._evict_sync, cache, key)
        except Exception:
            logger.error(
                "disk cache eviction failed; the entry may be stale",
                exc_info=True,
                extra={"key": key, "cache_dir": self.directory},
            )

    def _evict_sync(self, cache: diskcache.Cache, key: CacheKey) -> None:
        for known in [k for k in list(self._files) if k[0] == (key if isinstance(key, str) else key[0])]:
            self._files.pop(known, None)
        with self._fill_lock:
            cache.delete(key)
            if isinstance(key, str):
                cache.evict(key)  # its ranges
            self._bytes, self._entries = cache.volume(), len(cache)

    def _event(self, kind: str, n: int) -> None:
        if kind == "hit":
            self._hits += n
        elif kind == "miss":
            self._misses += n
        else:
            self._evictions += n
        if self._on_event is not None:
            self._on_event(kind, n)


def _slices(held: bytes | object, base: int, ranges: list[tuple[int, int]], *, close: bool = True) -> list[bytes | None]:
    """``ranges`` (absolute offsets) out of a cached value that starts at offset ``base``: bytes,
    or a file handle (diskcache keeps large values in files) that is closed after unless told."""
    if isinstance(held, bytes):
        return [held[start - base : end - base] if end - base <= len(held) else None for start, end in ranges]
    out: list[bytes | None] = []
    try:
        for start, end in ranges:
            held.seek(start - base)  # type: ignore[attr-defined]
            data = held.read(end - start)  # type: ignore[attr-defined]
            out.append(data if len(data) == end - start else None)  # short: let get_range say why
    finally:
        if close:
            held.close()  # type: ignore[attr-defined]
    return out
