"""A reader's S3 store refuses every write: "a reader never writes to S3" is enforced."""

from __future__ import annotations

import pytest

from tierdb.storage.local import LocalStore
from tierdb.storage.readonly import ReadOnlyStore, ReadOnlyStoreViolation


async def test_reads_pass_through_and_writes_raise_without_touching_the_store(tmp_path):
    inner = LocalStore(str(tmp_path))
    await inner.put("collections/c/wal/00000000000000000001.wal", b"x")
    store = ReadOnlyStore(inner)
    assert await store.get("collections/c/wal/00000000000000000001.wal") == b"x"
    with pytest.raises(ReadOnlyStoreViolation):
        await store.put("collections/c/wal/00000000000000000002.wal", b"y")
    with pytest.raises(ReadOnlyStoreViolation):
        await store.delete("collections/c/wal/00000000000000000001.wal")
    assert [i.key for i in await inner.list("collections/")] == ["collections/c/wal/00000000000000000001.wal"]


async def test_put_file_raises_without_touching_the_store(tmp_path):
    inner = LocalStore(str(tmp_path / "root"))
    source = tmp_path / "segment.tmp"
    source.write_bytes(b"y")
    with pytest.raises(ReadOnlyStoreViolation):
        await ReadOnlyStore(inner).put_file("collections/c/segments/a.seg", str(source))
    assert await inner.list("") == []
