import asyncio
import errno
import os
import threading

import pytest

from tierdb.testing.store import BlobStoreContract
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage import local as local_module
from tierdb.storage.local import LocalStore


class TestLocalStore(BlobStoreContract):
    concurrent_writers = 8
    many_keys = 300

    @pytest.fixture
    async def store(self, tmp_path):
        yield LocalStore(str(tmp_path / "root"))


def _all_files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


async def test_objects_are_files_under_root_and_survive_reopen(tmp_path):
    root = str(tmp_path)
    await LocalStore(root).put("collections/c/wal/1.wal", b"abc")
    assert open(tmp_path / "collections/c/wal/1.wal", "rb").read() == b"abc"
    assert await LocalStore(root).get("collections/c/wal/1.wal") == b"abc"


async def test_no_temp_files_left_behind(tmp_path):
    store = LocalStore(str(tmp_path))
    await store.put("a/b", b"1")
    await store.put("a/b", b"2")
    with pytest.raises(TierDBError):
        await store.put("a/b", b"3", if_absent=True)
    assert _all_files(tmp_path) == ["a/b"]


async def test_list_ignores_temp_and_hidden_files(tmp_path):
    store = LocalStore(str(tmp_path))
    await store.put("a/x.seg", b"1")
    (tmp_path / "a" / ".x.seg.k2j3.tmp").write_bytes(b"partial")
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "a" / ".hidden" / "y.seg").write_bytes(b"?")
    assert [i.key for i in await store.list("")] == ["a/x.seg"]


async def test_missing_root_reads_as_empty(tmp_path):
    store = LocalStore(str(tmp_path / "does-not-exist"))
    assert await store.list("") == []
    assert await store.head("a") is None
    with pytest.raises(TierDBError) as info:
        await store.get("a")
    assert info.value.kind is ErrorKind.NOT_FOUND


async def test_key_cannot_be_object_and_prefix(tmp_path):
    store = LocalStore(str(tmp_path))
    await store.put("a/b", b"file")
    for key in ("a/b/c", "a/b/c/d"):
        with pytest.raises(TierDBError) as info:
            await store.put(key, b"x")
        assert info.value.kind is ErrorKind.INVALID
    await store.put("d/e/f", b"x")
    for if_absent in (False, True):
        with pytest.raises(TierDBError) as info:
            await store.put("d/e", b"x", if_absent=if_absent)
        assert info.value.kind is ErrorKind.INVALID
    # a directory is not an object
    assert await store.head("d/e") is None
    with pytest.raises(TierDBError) as info:
        await store.get("d/e")
    assert info.value.kind is ErrorKind.NOT_FOUND


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
async def test_disk_full_or_readonly_is_insufficient_storage(tmp_path, monkeypatch, code):
    store = LocalStore(str(tmp_path))
    await store.put("a/b", b"old")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_module.os, "fsync", failing_fsync)
    with pytest.raises(TierDBError) as info:
        await store.put("a/b", b"new")
    err = info.value
    assert err.kind is ErrorKind.INSUFFICIENT_STORAGE and err.status_code == 507
    assert str(tmp_path / "a" / "b") in str(err)
    assert err.context["retryable"] is False
    monkeypatch.undo()
    assert await store.get("a/b") == b"old"
    assert _all_files(tmp_path) == ["a/b"]


async def test_concurrent_writers_creating_the_same_directories(tmp_path):
    # regression: a directory created by another writer mid-check was taken for a file
    for round in range(20):
        store = LocalStore(str(tmp_path / f"r{round}"))
        results = await asyncio.gather(
            *(store.put(f"a/b/c/k{i % 2}", b"x", if_absent=True) for i in range(8)),
            return_exceptions=True,
        )
        assert all(r is None or r.kind is ErrorKind.PRECONDITION for r in results), results
        assert sum(r is None for r in results) == 2


async def test_directory_created_by_another_writer_mid_put(tmp_path, monkeypatch):
    real_mkdir = os.mkdir

    def lose_the_race(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)  # "another writer" got there first
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)

    monkeypatch.setattr(local_module.os, "mkdir", lose_the_race)
    store = LocalStore(str(tmp_path))
    await store.put("x/y/z", b"ok")
    assert await store.get("x/y/z") == b"ok"


async def test_mkdir_on_readonly_fs_names_the_directory(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))

    def readonly_mkdir(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(local_module.os, "mkdir", readonly_mkdir)
    with pytest.raises(TierDBError) as info:
        await store.put("new/dir/obj", b"x")
    assert info.value.kind is ErrorKind.INSUFFICIENT_STORAGE
    assert str(tmp_path / "new") in str(info.value)


async def test_read_permission_denied_is_reported_with_path(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    await store.put("a/b", b"x")

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(local_module, "open", denied, raising=False)
    with pytest.raises(TierDBError) as info:
        await store.get("a/b")
    assert info.value.kind is ErrorKind.INSUFFICIENT_STORAGE
    assert str(tmp_path / "a" / "b") in str(info.value)


async def test_fsync_can_be_disabled(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(local_module.os, "fsync", lambda fd: calls.append(fd))
    store = LocalStore(str(tmp_path), fsync=False)
    await store.put("a/b", b"x")
    assert calls == []
    await LocalStore(str(tmp_path)).put("a/c", b"x")
    assert len(calls) >= 2  # the file and its directory


async def test_range_read_reads_only_the_range_off_the_event_loop(tmp_path, monkeypatch):
    store = LocalStore(str(tmp_path))
    data = os.urandom(1 << 20)
    await store.put("collections/c/segments/x.seg", data)
    reads = []
    real_pread = os.pread

    def recording_pread(fd, n, offset):
        reads.append((n, offset, threading.current_thread() is threading.main_thread()))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", recording_pread)
    assert await store.get_range("collections/c/segments/x.seg", 4096, 8192) == data[4096:8192]
    assert reads == [(4096, 4096, False)]


async def test_range_of_a_directory_is_not_found(tmp_path):
    store = LocalStore(str(tmp_path))
    await store.put("a/b/c", b"x")
    for key in ("a/b", "a/b/c/d"):
        with pytest.raises(TierDBError) as info:
            await store.get_range(key, 0, 1)
        assert info.value.kind is ErrorKind.NOT_FOUND


async def test_put_file_publishes_atomically_and_durably(tmp_path, monkeypatch):
    root = tmp_path / "root"
    store = LocalStore(str(root))
    await store.put("a/b", b"old")
    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    with pytest.raises(TierDBError) as info:
        await store.put_file("a/b", str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(info.value)
    assert await store.get("a/b") == b"old" and _all_files(root) == ["a/b"]  # no temp file left
    source = tmp_path / "src"
    source.write_bytes(os.urandom(3 << 20))  # more than one copy chunk
    await store.put_file("a/b", str(source))
    assert await store.get("a/b") == source.read_bytes() and _all_files(root) == ["a/b"]
    assert len(fsynced) >= 2  # the new file, then its directory
