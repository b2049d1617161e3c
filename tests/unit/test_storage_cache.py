import os

import diskcache
import pytest

from tierdb.testing.store import BlobStoreContract
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.cache import DiskCachedStore
from tierdb.storage.faults import FaultInjectingStore
from tierdb.storage.memory import MemoryStore

KiB = 1024
BASE = 36 * KiB  # an empty diskcache's volume (its SQLite pages, tag index included)
OBJ = 64 * KiB   # stored as a file, so it adds exactly its size to the volume


async def settled(store: DiskCachedStore) -> DiskCachedStore:
    """The store once its background range fills have landed (get_range fills after answering)."""
    await store.fills_done()
    return store


def seg(name: str) -> str:
    return f"collections/c/segments/{name}.seg"


class Harness:
    def __init__(self, tmp_path, size_limit=10 * 1024 * KiB, **kwargs):
        self.inner = FaultInjectingStore(MemoryStore())
        self.events: list[tuple[str, int]] = []
        self.store = DiskCachedStore(
            self.inner, str(tmp_path / "cache"), size_limit,
            on_event=lambda kind, n: self.events.append((kind, n)), **kwargs,
        )

    def inner_gets(self, key):
        return sum(1 for op, k in self.inner.calls if op == "get" and k == key)


class TestDiskCachedStoreContract(BlobStoreContract):
    """Every key cached."""

    @pytest.fixture
    async def store(self, tmp_path):
        store = DiskCachedStore(MemoryStore(), str(tmp_path / "c"), 64 * 1024 * KiB,
                                cacheable=lambda key: True)
        yield store
        await store.close()


class TestDiskCachedStoreDefaultPredicateContract(BlobStoreContract):
    """As in production: segments and WAL objects cached, everything else passed through."""

    @pytest.fixture
    async def store(self, tmp_path):
        store = DiskCachedStore(MemoryStore(), str(tmp_path / "c"), 64 * 1024 * KiB)
        yield store
        await store.close()


async def test_default_predicate_caches_only_immutable_objects(tmp_path):
    h = Harness(tmp_path)
    wal = "collections/c/wal/00000000000000000001.wal"
    manifest = "collections/c/manifest/00000000000000000001.json"
    for key in (seg("ab"), wal, manifest):
        await h.store.put(key, b"x")
        await h.store.get(key)
    assert h.inner_gets(seg("ab")) == h.inner_gets(wal) == 0
    assert h.inner_gets(manifest) == 1
    assert h.store.stats()["entries"] == 2


async def test_a_callers_buffer_is_cached_as_bytes(tmp_path):
    # regression: a bytearray was pickled into the cache and read back as a bytearray
    h = Harness(tmp_path)
    await h.store.put(seg("buf"), bytearray(b"abc"))
    data = await h.store.get(seg("buf"))
    assert type(data) is bytes and data == b"abc"
    assert h.inner_gets(seg("buf")) == 0


async def test_hits_and_misses(tmp_path):
    h = Harness(tmp_path)
    await h.inner.inner.put(seg("a"), b"A" * 100)
    assert await h.store.get(seg("a")) == b"A" * 100
    assert await h.store.get(seg("a")) == b"A" * 100
    assert await h.store.get(seg("a")) == b"A" * 100
    assert h.inner_gets(seg("a")) == 1
    assert h.events == [("miss", 1), ("hit", 1), ("hit", 1)]
    stats = h.store.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]) == (2, 1, 0)
    assert stats["entries"] == 1 and stats["bytes"] > 0
    assert stats["size_limit"] == 10 * 1024 * KiB
    await h.store.close()


async def test_empty_object_is_a_hit(tmp_path):
    h = Harness(tmp_path)
    await h.store.put(seg("e"), b"")
    assert await h.store.get(seg("e")) == b""
    assert h.store.stats()["hits"] == 1 and h.inner_gets(seg("e")) == 0


async def test_lru_eviction_under_small_limit(tmp_path):
    h = Harness(tmp_path, size_limit=BASE + 3 * OBJ + KiB)  # room for three objects
    blobs = {n: os.urandom(OBJ) for n in "abcd"}
    for n, b in blobs.items():
        await h.inner.inner.put(seg(n), b)
    for n in "abc":
        await h.store.get(seg(n))                  # 3 misses fill the cache
    assert await h.store.get(seg("a")) == blobs["a"]  # hit: a is now most recent
    await h.store.get(seg("d"))                    # miss; evicts b, the least recently used
    assert h.store.stats()["evictions"] == 1
    assert ("eviction", 1) in h.events
    assert h.store.stats()["bytes"] <= h.store.size_limit

    # a read after eviction still returns the object, from the inner store
    assert await h.store.get(seg("b")) == blobs["b"]
    assert h.inner_gets(seg("b")) == 2
    # a was used recently and survived
    assert await h.store.get(seg("a")) == blobs["a"]
    assert h.inner_gets(seg("a")) == 1


async def test_large_newcomer_evicts_several_but_not_itself(tmp_path):
    limit = BASE + 4 * OBJ + KiB
    h = Harness(tmp_path, size_limit=limit)
    for n in "abcd":
        await h.store.put(seg(n), os.urandom(OBJ))
    big = os.urandom(2 * OBJ)
    await h.store.put(seg("big"), big)
    assert h.store.stats()["bytes"] <= limit
    assert h.store.stats()["evictions"] == 2
    assert await h.store.get(seg("big")) == big
    assert h.inner_gets(seg("big")) == 0


async def test_objects_over_max_size_are_not_cached(tmp_path):
    h = Harness(tmp_path, max_object_bytes=10)
    await h.store.put(seg("x"), b"x" * 11)
    await h.store.get(seg("x"))
    assert h.inner_gets(seg("x")) == 1 and h.store.stats()["entries"] == 0


async def test_manifests_are_never_cached(tmp_path):
    h = Harness(tmp_path)
    key = "collections/c/manifest/00000000000000000001.json"
    await h.store.put(key, b"v1")
    assert await h.store.get(key) == b"v1"
    assert await h.store.get(key) == b"v1"
    assert h.inner_gets(key) == 2
    assert h.events == []
    assert h.store.stats()["entries"] == 0


async def test_writes_populate_and_deletes_evict(tmp_path):
    h = Harness(tmp_path)
    await h.store.put(seg("w"), b"data")
    assert await h.store.get(seg("w")) == b"data"
    assert h.inner_gets(seg("w")) == 0
    await h.store.delete(seg("w"))
    with pytest.raises(TierDBError) as info:
        await h.store.get(seg("w"))
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert h.store.stats()["entries"] == 0


async def test_failed_conditional_put_does_not_poison_the_cache(tmp_path):
    h = Harness(tmp_path)
    await h.inner.inner.put(seg("p"), b"theirs")
    with pytest.raises(TierDBError) as info:
        await h.store.put(seg("p"), b"mine", if_absent=True)
    assert info.value.kind is ErrorKind.PRECONDITION
    assert await h.store.get(seg("p")) == b"theirs"


async def test_overwrite_with_lost_response_leaves_no_stale_entry(tmp_path):
    h = Harness(tmp_path, cacheable=lambda key: True)
    await h.store.put("k", b"v1")
    h.inner.inject("lose_response", ops="put", times=1)
    with pytest.raises(TierDBError):
        await h.store.put("k", b"v2")
    assert await h.store.get("k") == b"v2"


async def test_cache_survives_reopen(tmp_path):
    h = Harness(tmp_path)
    await h.store.put(seg("r"), b"persisted")
    await h.store.close()
    again = DiskCachedStore(h.inner, str(tmp_path / "cache"), 10 * 1024 * KiB)
    assert await again.get(seg("r")) == b"persisted"
    assert again.stats()["hits"] == 1 and h.inner_gets(seg("r")) == 0
    await again.close()


async def test_cache_read_failure_falls_back_to_inner(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    await h.store.put(seg("f"), b"data")

    def broken_get(self, *args, **kwargs):
        raise diskcache.Timeout("database is locked")

    monkeypatch.setattr(diskcache.Cache, "get", broken_get)
    assert await h.store.get(seg("f")) == b"data"
    assert h.inner_gets(seg("f")) == 1


def range_gets(h, key):
    return sum(1 for op, k in h.inner.calls if op == "get_range" and k == key)


async def test_ranges_are_cached_by_range_and_counted(tmp_path):
    h = Harness(tmp_path)
    data = os.urandom(OBJ)
    await h.inner.inner.put(seg("r"), data)
    for _ in range(3):
        assert await h.store.get_range(seg("r"), 100, 200) == data[100:200]
    assert await h.store.get_range(seg("r"), 100, 201) == data[100:201]  # another range: a miss
    assert range_gets(h, seg("r")) == 2 and h.inner_gets(seg("r")) == 0
    assert h.events == [("miss", 1), ("hit", 1), ("hit", 1), ("miss", 1)]
    assert (await settled(h.store)).stats()["entries"] == 2


async def test_a_cached_whole_object_serves_ranges_and_drops_its_range_entries(tmp_path):
    h = Harness(tmp_path)
    data = os.urandom(OBJ)
    await h.inner.inner.put(seg("w"), data)
    await h.store.get_range(seg("w"), 0, 10)
    assert (await settled(h.store)).stats()["entries"] == 1
    await h.store.get(seg("w"))  # caches the whole object; the range entry is now redundant
    assert (await settled(h.store)).stats()["entries"] == 1 and (await settled(h.store)).stats()["evictions"] == 0
    for start, end in [(0, 10), (OBJ - 5, OBJ + 5), (1000, 9000)]:
        assert await h.store.get_range(seg("w"), start, end) == data[start:end]
    assert range_gets(h, seg("w")) == 1
    with pytest.raises(TierDBError) as info:
        await h.store.get_range(seg("w"), OBJ, OBJ + 1)
    assert info.value.kind is ErrorKind.INVALID


async def test_delete_and_overwrite_evict_the_cached_ranges(tmp_path):
    h = Harness(tmp_path)
    await h.store.put(seg("d"), b"one" * 100)
    await h.store.delete(seg("d"))
    await h.inner.inner.put(seg("d"), b"one" * 100)
    await h.store.get_range(seg("d"), 0, 3)
    await h.store.get_range(seg("d"), 3, 6)
    assert (await settled(h.store)).stats()["entries"] == 2
    await h.store.delete(seg("d"))
    assert (await settled(h.store)).stats()["entries"] == 0
    with pytest.raises(TierDBError) as info:
        await h.store.get_range(seg("d"), 0, 3)
    assert info.value.kind is ErrorKind.NOT_FOUND


async def test_range_entries_share_the_lru_byte_budget(tmp_path):
    h = Harness(tmp_path, size_limit=BASE + 3 * OBJ + KiB)  # room for three 64 KiB ranges
    data = os.urandom(8 * OBJ)
    await h.inner.inner.put(seg("big"), data)
    for i in range(8):
        start = i * OBJ
        assert await h.store.get_range(seg("big"), start, start + OBJ) == data[start : start + OBJ]
        assert (await settled(h.store)).stats()["bytes"] <= h.store.size_limit
    assert (await settled(h.store)).stats()["entries"] == 3 and (await settled(h.store)).stats()["evictions"] == 5
    # the three most recent ranges are hits, the first one went to the inner store again
    before = range_gets(h, seg("big"))
    for i in (5, 6, 7):
        await h.store.get_range(seg("big"), i * OBJ, (i + 1) * OBJ)
    assert range_gets(h, seg("big")) == before
    await h.store.get_range(seg("big"), 0, OBJ)
    assert range_gets(h, seg("big")) == before + 1


async def test_ranges_of_uncacheable_keys_pass_through(tmp_path):
    h = Harness(tmp_path)
    key = "collections/c/manifest/00000000000000000001.json"
    await h.store.put(key, b"{}")
    assert await h.store.get_range(key, 0, 1) == b"{"
    assert await h.store.get_range(key, 0, 1) == b"{"
    assert range_gets(h, key) == 2 and h.events == []


async def test_range_cache_read_failure_falls_back_to_inner(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    await h.store.put(seg("f"), b"data")

    def broken_get(self, *args, **kwargs):
        raise diskcache.Timeout("database is locked")

    monkeypatch.setattr(diskcache.Cache, "get", broken_get)
    assert await h.store.get_range(seg("f"), 1, 3) == b"at"
    assert range_gets(h, seg("f")) == 1


async def test_cached_ranges_are_read_in_one_lookup_and_misses_are_left_to_get_range(tmp_path):
    h = Harness(tmp_path)
    big = bytes(range(256)) * 400                     # stored in a file by diskcache
    await h.inner.inner.put(seg("whole"), big)
    await h.inner.inner.put(seg("parts"), big)
    assert await h.store.cached_ranges(seg("whole"), [(0, 10)]) == [None]   # nothing cached yet
    await h.store.get(seg("whole"))                   # the whole object is cached
    await h.store.get_range(seg("parts"), 100, 200)   # only this range of the other one
    await h.store.fills_done()
    h.events.clear()
    assert await h.store.cached_ranges(seg("whole"), [(0, 10), (5000, 5100), (102_300, 102_500)]) == \
        [big[0:10], big[5000:5100], None]             # the last one runs past the object's end
    assert await h.store.cached_ranges(seg("parts"), [(100, 200), (200, 300)]) == [big[100:200], None]
    assert h.events == [("hit", 2), ("hit", 1)]
    assert h.inner_gets(seg("whole")) == 1            # no request to the store behind it
    await h.store.close()


@pytest.mark.parametrize("size", [300, 100_000])   # kept in SQLite / in a file by diskcache
async def test_cached_ranges_serve_sub_ranges_of_a_cached_enclosing_range(tmp_path, size):
    """A partition cached whole (warm-up) serves its codes, rows and documents, which are read
    as sub-ranges of it; a sub-range whose enclosing range is not cached is a miss."""
    h = Harness(tmp_path)
    data = os.urandom(3 * size)
    await h.inner.inner.put(seg("s"), data)
    await h.store.get_range(seg("s"), size, 2 * size)          # the middle "partition" only
    await h.store.fills_done()
    gets = range_gets(h, seg("s"))
    inside = [(size + 7, size + 40), (2 * size - 9, 2 * size)]
    found = await h.store.cached_ranges(seg("s"), [*inside, (5, 9)],
                                        [(size, 2 * size), (size, 2 * size), (0, size)])
    assert found == [data[size + 7 : size + 40], data[2 * size - 9 : 2 * size], None]
    assert await h.store.cached_ranges(seg("s"), inside) == [None, None]   # no container named: exact only
    assert range_gets(h, seg("s")) == gets                       # nothing read from the store behind
    await h.store.close()


async def test_cached_ranges_wait_for_the_fill_of_the_enclosing_range(tmp_path):
    h = Harness(tmp_path)
    data = os.urandom(100_000)
    await h.inner.inner.put(seg("s"), data)
    await h.store.get_range(seg("s"), 0, 50_000)   # its fill runs in the background
    assert await h.store.cached_ranges(seg("s"), [(10, 20)], [(0, 50_000)]) == [data[10:20]]
    await h.store.close()


@pytest.mark.parametrize("size", [10, OBJ], ids=["inline", "file"])
async def test_put_file_fills_the_cache_so_reads_never_reach_inner(tmp_path, size):
    data = os.urandom(size)
    source = tmp_path / "segment.tmp"
    source.write_bytes(data)
    by_file, by_put = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    await by_file.store.put_file(seg("f"), str(source))
    await by_put.store.put(seg("f"), data)
    # The same entry as put's: same cache volume, same kind of stored value (inline or a file).
    assert by_file.store.stats()["bytes"] == by_put.store.stats()["bytes"]
    assert by_file.store.stats()["entries"] == by_put.store.stats()["entries"] == 1
    stored = [h.store._cache.get(seg("f"), read=True) for h in (by_file, by_put)]
    assert [type(v) is bytes for v in stored] == [size < OBJ] * 2
    for value in stored:
        if not isinstance(value, bytes):
            value.close()
    # Ranges and the whole object are served from the cache, by every read path.
    assert await by_file.store.get_range(seg("f"), 3, 9) == data[3:9]
    assert await by_file.store.cached_ranges(seg("f"), [(0, 5), (size - 4, size)]) == [data[:5], data[-4:]]
    assert by_file.store.read_known_files(seg("f"), [(1, 7)], [(0, size)]) == [data[1:7] if size >= OBJ else None]
    assert await by_file.store.get(seg("f")) == data
    assert range_gets(by_file, seg("f")) == 0 and by_file.inner_gets(seg("f")) == 0
    assert by_file.inner.calls == [("put", seg("f"))]


async def test_put_file_streams_the_fill_from_the_file(tmp_path, monkeypatch):
    source = tmp_path / "segment.tmp"
    source.write_bytes(os.urandom(OBJ))
    stored = []
    real_set = diskcache.Cache.set

    def recording_set(self, key, value, *args, **kwargs):
        stored.append((key, type(value), kwargs.get("read")))
        return real_set(self, key, value, *args, **kwargs)

    monkeypatch.setattr(diskcache.Cache, "set", recording_set)
    h = Harness(tmp_path)
    await h.store.put_file(seg("s"), str(source))
    assert [(key, read) for key, _, read in stored if key == seg("s")] == [(seg("s"), True)]
    assert all(kind is not bytes for key, kind, _ in stored if key == seg("s"))
    assert await h.store.get(seg("s")) == source.read_bytes() and h.inner_gets(seg("s")) == 0


async def test_put_file_over_max_object_size_is_not_cached(tmp_path):
    source = tmp_path / "big.tmp"
    source.write_bytes(b"x" * 11)
    h = Harness(tmp_path, max_object_bytes=10)
    await h.store.put_file(seg("x"), str(source))
    assert h.store.stats()["entries"] == 0
    assert await h.store.get(seg("x")) == b"x" * 11 and h.inner_gets(seg("x")) == 1


async def test_put_file_overwrite_with_lost_response_leaves_no_stale_entry(tmp_path):
    h = Harness(tmp_path)
    await h.store.put(seg("o"), b"old")
    source = tmp_path / "new.tmp"
    source.write_bytes(b"new")
    h.inner.inject("lose_response", ops="put", times=1)
    with pytest.raises(TierDBError):
        await h.store.put_file(seg("o"), str(source))
    assert h.store.stats()["entries"] == 0
    assert await h.store.get(seg("o")) == b"new"
