import pytest

from tierdb.testing.store import BlobStoreContract
from tierdb.storage.memory import MemoryStore


class TestMemoryStore(BlobStoreContract):
    many_keys = 2500

    @pytest.fixture
    async def store(self):
        yield MemoryStore()


async def test_stored_bytes_are_a_copy():
    store = MemoryStore()
    buf = bytearray(b"abc")
    await store.put("k", buf)
    buf[0] = ord("z")
    assert await store.get("k") == b"abc"
