"""The behaviour every BlobStore (and every wrapper) must have, as a pytest base class.

Subclass ``BlobStoreContract`` in a ``Test*`` class and override the ``store`` fixture:

    class TestMemoryStore(BlobStoreContract):
        @pytest.fixture
        async def store(self):
            yield MemoryStore()

Every test is behavioural: it writes, reads, lists and deletes through the store and checks
what comes back.  Class attributes tune the cost for slow backends.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from tierdb import keys
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.base import BlobStore, ObjectInfo
from tierdb.storage.ranges import get_ranges

# Keys of the real layout, so that wrappers that treat some objects specially (the disk
# cache keeps segments and WAL objects) take those paths too.
SEGMENT = keys.segment_key("c", "ab" * 16)
WAL = keys.wal_key("c", 1)

# Larger than diskcache's inline limit (32 KiB), so a cached copy is a file read by range.
RANGE_DATA = os.urandom(100_000)
BAD_RANGES = [
    pytest.param(5, 5, id="empty"),
    pytest.param(6, 5, id="reversed"),
    pytest.param(-1, 3, id="negative"),
    pytest.param(True, 3, id="bool"),
    pytest.param(0.0, 3, id="float"),
    pytest.param("0", 3, id="str"),
    pytest.param(0, None, id="none"),
]

PAYLOADS = [
    pytest.param(b"", id="empty"),
    pytest.param(bytes(range(256)), id="all-bytes"),
    pytest.param(b"\x00" * 10, id="nuls"),
    pytest.param(os.urandom(1 << 20), id="1MiB-random"),
]


MiB = 1 << 20


def lower_part_size(store: BlobStore, part_size: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Set ``part_size`` (S3Store's multipart threshold) of the store at the bottom of a stack of
    wrappers, for this test only; False if that store has none."""
    while not hasattr(store, "part_size") and hasattr(store, "inner"):
        store = store.inner  # type: ignore[attr-defined]
    if not hasattr(store, "part_size"):
        return False
    monkeypatch.setattr(store, "part_size", part_size)
    return True


def write_file(directory, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


class BlobStoreContract:
    concurrent_writers = 5      # conditional puts racing for one key
    many_keys = 30              # keys in the listing test; use a small page size to paginate

    @pytest.fixture
    async def store(self) -> BlobStore:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.mark.parametrize("data", PAYLOADS)
    async def test_put_get_roundtrip(self, store: BlobStore, data: bytes) -> None:
        await store.put("collections/c/segments/a.seg", data)
        assert await store.get("collections/c/segments/a.seg") == data

    async def test_overwrite_without_if_absent(self, store: BlobStore) -> None:
        await store.put("k/obj", b"one")
        await store.put("k/obj", b"two!")
        assert await store.get("k/obj") == b"two!"
        assert (await store.head("k/obj")).size == 4

    async def test_put_keeps_its_own_copy_and_get_returns_bytes(self, store: BlobStore) -> None:
        for key in (SEGMENT, "k/buffer"):
            buffer = bytearray(b"original")
            await store.put(key, buffer)
            buffer[:] = b"changed!"
            for _ in range(2):  # a cache fill, then a cache hit
                data = await store.get(key)
                assert type(data) is bytes and data == b"original", (key, data)

    @pytest.mark.parametrize("key", [SEGMENT, WAL])
    async def test_immutable_object_lifecycle(self, store: BlobStore, key: str) -> None:
        await store.put(key, b"v1", if_absent=True)
        assert await store.get(key) == b"v1"
        assert await store.get(key) == b"v1"
        await store.put(key, b"v2")  # overwrites are allowed even for write-once objects
        assert await store.get(key) == b"v2"
        await store.delete(key)
        assert await store.head(key) is None
        with pytest.raises(TierDBError) as info:
            await store.get(key)
        assert info.value.kind is ErrorKind.NOT_FOUND
        assert [i.key for i in await store.list(keys.collection_prefix("c"))] == []
        await store.put(key, b"v3", if_absent=True)
        assert await store.get(key) == b"v3"
        assert (await store.head(key)).size == 2

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    @pytest.mark.parametrize("data", [b"", b"0123456789", RANGE_DATA], ids=["empty", "tiny", "100KB"])
    async def test_put_file_roundtrip(self, store: BlobStore, tmp_path, key: str, data: bytes) -> None:
        await store.put_file(key, write_file(tmp_path, "src", data))
        for _ in range(2):  # a cache fill, then a cache hit
            assert await store.get(key) == data
        assert (await store.head(key)).size == len(data)
        if data:
            assert await store.get_range(key, 1, len(data) - 1) == data[1:-1]
            assert await store.get_range(key, len(data) - 3, len(data) + 10) == data[-3:]

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_put_file_larger_than_a_part(self, store: BlobStore, tmp_path, monkeypatch, key: str) -> None:
        # Where the store uploads in parts (S3), 5 MiB parts: 11 MiB is a multipart upload of 3.
        lower_part_size(store, 5 * MiB, monkeypatch)
        data = os.urandom(11 * MiB)
        await store.put_file(key, write_file(tmp_path, "big", data))
        assert (await store.head(key)).size == len(data)
        for start, end in [(5 * MiB - 7, 5 * MiB + 9), (0, 100), (10 * MiB, 11 * MiB), (11 * MiB - 1, 12 * MiB)]:
            assert await store.get_range(key, start, end) == data[start:end], (start, end)
        assert await store.get(key) == data

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_put_file_overwrites(self, store: BlobStore, tmp_path, key: str) -> None:
        await store.put(key, b"version-one")
        assert await store.get_range(key, 0, 7) == b"version"  # cached, where there is a cache
        await store.put_file(key, write_file(tmp_path, "two", b"VERSION-TWO"))
        assert await store.get_range(key, 0, 7) == b"VERSION"
        assert await store.get(key) == b"VERSION-TWO"
        await store.put_file(key, write_file(tmp_path, "three", b"3"))
        assert await store.get(key) == b"3"
        assert (await store.head(key)).size == 1

    async def test_put_file_of_a_missing_file_fails_and_writes_nothing(self, store: BlobStore, tmp_path) -> None:
        missing = str(tmp_path / "not-there")
        with pytest.raises(TierDBError) as info:
            await store.put_file(SEGMENT, missing)
        assert info.value.context.get("retryable") is False
        assert missing in str(info.value)
        assert await store.head(SEGMENT) is None

    async def test_put_file_rejects_invalid_keys(self, store: BlobStore, tmp_path) -> None:
        path = write_file(tmp_path, "src", b"x")
        for bad in ("", "/abs/key", "a/../b", "dir/"):
            with pytest.raises(TierDBError) as info:
                await store.put_file(bad, path)
            assert info.value.kind is ErrorKind.INVALID
        assert await store.list("") == []

    async def test_if_absent_on_new_key(self, store: BlobStore) -> None:
        await store.put("k/new", b"x", if_absent=True)
        assert await store.get("k/new") == b"x"

    async def test_if_absent_on_existing_key_keeps_old_content(self, store: BlobStore) -> None:
        await store.put("m/00000000000000000001.json", b"old")
        with pytest.raises(TierDBError) as info:
            await store.put("m/00000000000000000001.json", b"new", if_absent=True)
        assert info.value.kind is ErrorKind.PRECONDITION
        assert "m/00000000000000000001.json" in str(info.value)
        assert await store.get("m/00000000000000000001.json") == b"old"

    async def test_concurrent_if_absent_only_one_wins(self, store: BlobStore) -> None:
        key = "m/00000000000000000007.json"
        payloads = [f"writer-{i}".encode() for i in range(self.concurrent_writers)]
        results = await asyncio.gather(
            *(store.put(key, p, if_absent=True) for p in payloads), return_exceptions=True
        )
        winners = [p for p, r in zip(payloads, results) if r is None]
        losers = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert all(isinstance(r, TierDBError) and r.kind is ErrorKind.PRECONDITION for r in losers)
        assert await store.get(key) == winners[0]

    async def test_get_missing_is_not_found(self, store: BlobStore) -> None:
        with pytest.raises(TierDBError) as info:
            await store.get("nope/missing.seg")
        assert info.value.kind is ErrorKind.NOT_FOUND
        assert "nope/missing.seg" in str(info.value)

    async def test_delete_is_idempotent(self, store: BlobStore) -> None:
        await store.delete("d/never-existed")
        await store.put("d/x", b"1")
        await store.delete("d/x")
        await store.delete("d/x")
        assert await store.head("d/x") is None
        with pytest.raises(TierDBError) as info:
            await store.get("d/x")
        assert info.value.kind is ErrorKind.NOT_FOUND
        await store.put("d/x", b"2", if_absent=True)  # the key is free again
        assert await store.get("d/x") == b"2"

    async def test_head(self, store: BlobStore) -> None:
        assert await store.head("h/missing") is None
        await store.put("h/obj", b"12345")
        info = await store.head("h/obj")
        assert info is not None and info.key == "h/obj" and info.size == 5
        await store.put("h/empty", b"")
        assert (await store.head("h/empty")).size == 0

    async def test_list_by_prefix_sorted(self, store: BlobStore) -> None:
        names = ["collections/a/wal/2.wal", "collections/a/wal/10.wal", "collections/a/x.seg",
                 "collections/ab/y.seg", "collections/b/z.seg", "other/q"]
        for name in random.sample(names, len(names)):
            await store.put(name, name.encode())
        listed = await store.list("collections/a/")
        assert [i.key for i in listed] == sorted(names[:3])
        assert all(i.size == len(i.key) for i in listed)
        # a partial last segment is a plain string prefix, as in S3
        assert [i.key for i in await store.list("collections/a")] == sorted(names[:4])
        assert [i.key for i in await store.list("collections/a/wal/1")] == ["collections/a/wal/10.wal"]
        assert [i.key for i in await store.list("")] == sorted(names)
        assert await store.list("nothing/here/") == []

    async def test_list_many_keys_paginates(self, store: BlobStore) -> None:
        keys = [f"many/{i:05d}.wal" for i in range(self.many_keys)]
        sem = asyncio.Semaphore(32)

        async def put(k: str) -> None:
            async with sem:
                await store.put(k, b"")

        await asyncio.gather(*(put(k) for k in keys))
        await store.put("manyx/other", b"")
        listed = await store.list("many/")
        assert listed == [ObjectInfo(key=k, size=0, etag=i.etag) for k, i in zip(keys, listed)]

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_get_range_slices(self, store: BlobStore, key: str) -> None:
        data, n = RANGE_DATA, len(RANGE_DATA)
        await store.put(key, data)
        cases = [(0, n), (0, 1), (n - 1, n), (1, n - 1), (40_000, 40_017), (70_000, 99_999)]
        for _ in range(2):  # a cache fill, then a cache hit
            for start, end in cases:
                got = await store.get_range(key, start, end)
                assert type(got) is bytes and got == data[start:end], (start, end)
        await store.get(key)  # a cache holding the whole object serves every range of it
        for start, end in [*cases, (12_345, 54_321)]:
            assert await store.get_range(key, start, end) == data[start:end], (start, end)

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_get_range_end_past_the_object_is_clamped(self, store: BlobStore, key: str) -> None:
        await store.put(key, b"0123456789")
        assert await store.get_range(key, 7, 11) == b"789"
        assert await store.get_range(key, 9, 1 << 40) == b"9"
        assert await store.get_range(key, 0, 1 << 40) == b"0123456789"

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_get_range_start_past_the_object_is_invalid(self, store: BlobStore, key: str) -> None:
        await store.put(key, b"0123456789")
        await store.put(key + "-empty", b"")
        for _ in range(2):  # before and after the whole object is cached
            for k, start, end in [(key, 10, 11), (key, 15, 20), (key + "-empty", 0, 1)]:
                with pytest.raises(TierDBError) as info:
                    await store.get_range(k, start, end)
                assert info.value.kind is ErrorKind.INVALID, (k, start, end)
                assert k in str(info.value)
            await store.get(key)
            await store.get(key + "-empty")
        assert await store.get(key) == b"0123456789"

    @pytest.mark.parametrize(("start", "end"), BAD_RANGES)
    async def test_get_range_rejects_bad_ranges(self, store: BlobStore, start, end) -> None:
        for key in (SEGMENT, "k/plain"):
            await store.put(key, b"0123456789")
            with pytest.raises(TierDBError) as info:
                await store.get_range(key, start, end)
            assert info.value.kind is ErrorKind.INVALID
            assert await store.get_range(key, 0, 10) == b"0123456789"

    @pytest.mark.parametrize("key", [SEGMENT, "nope/missing.seg"])
    async def test_get_range_missing_is_not_found(self, store: BlobStore, key: str) -> None:
        with pytest.raises(TierDBError) as info:
            await store.get_range(key, 0, 10)
        assert info.value.kind is ErrorKind.NOT_FOUND
        assert key in str(info.value)

    @pytest.mark.parametrize("key", [SEGMENT, "k/plain"])
    async def test_get_range_sees_overwrite_and_delete(self, store: BlobStore, key: str) -> None:
        await store.put(key, b"version-one")
        assert await store.get_range(key, 0, 7) == b"version"
        assert await store.get_range(key, 8, 11) == b"one"
        await store.put(key, b"VERSION-TWO")
        assert await store.get_range(key, 0, 7) == b"VERSION"
        assert await store.get_range(key, 8, 11) == b"TWO"
        await store.delete(key)
        with pytest.raises(TierDBError) as info:
            await store.get_range(key, 8, 11)
        assert info.value.kind is ErrorKind.NOT_FOUND

    async def test_concurrent_get_ranges(self, store: BlobStore) -> None:
        data, n = RANGE_DATA, len(RANGE_DATA)
        await store.put(SEGMENT, data)
        rng = random.Random(11)
        ranges = [(s, s + rng.randint(1, 5000)) for s in (rng.randrange(n) for _ in range(40))]
        got = await asyncio.gather(*(store.get_range(SEGMENT, s, e) for s, e in ranges))
        assert got == [data[s:e] for s, e in ranges]

    async def test_get_ranges_coalesces_and_cuts_back(self, store: BlobStore) -> None:
        data, n = RANGE_DATA, len(RANGE_DATA)
        await store.put(SEGMENT, data)
        ranges = [(90_000, 95_000), (0, 10), (10, 10), (20, 30), (5, 25), (n - 3, n + 50)]
        got = await get_ranges(store, SEGMENT, ranges, max_gap=16)
        assert got == [data[s:e] for s, e in ranges]

    @pytest.mark.parametrize(
        "bad",
        ["", "/abs/key", "../escape", "a/../../b", "a/./b", "a//b", "a\\b", "a\x00b", "dir/",
         "a/.hidden"],
    )
    async def test_invalid_keys_rejected(self, store: BlobStore, bad: str) -> None:
        calls = (
            lambda: store.get(bad),
            lambda: store.put(bad, b"x"),
            lambda: store.put(bad, b"x", if_absent=True),
            lambda: store.delete(bad),
            lambda: store.head(bad),
            lambda: store.get_range(bad, 0, 1),
        )
        for call in calls:
            with pytest.raises(TierDBError) as info:
                await call()
            assert info.value.kind is ErrorKind.INVALID

    @pytest.mark.parametrize("bad", ["/abs", "../up/", "a\x00", "a//"])
    async def test_invalid_list_prefix_rejected(self, store: BlobStore, bad: str) -> None:
        with pytest.raises(TierDBError) as info:
            await store.list(bad)
        assert info.value.kind is ErrorKind.INVALID
