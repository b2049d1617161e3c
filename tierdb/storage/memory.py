"""An in-process BlobStore for tests, with the same semantics as the real ones."""

from __future__ import annotations

import asyncio

from tierdb.storage.base import ObjectInfo
from tierdb.storage.local import (
    local_file_error,
    object_exists,
    object_not_found,
    slice_range,
    validate_key,
    validate_prefix,
    validate_range,
)


class MemoryStore:
    """Objects in a dict.  Every method runs without awaiting, so each is atomic on the loop
    (``put_file`` reads its file in a worker thread first, then stores it without awaiting)."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._objects)} objects)"

    async def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            return self._objects[key]
        except KeyError:
            raise object_not_found(key) from None

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        validate_range(key, start, end)
        try:
            data = self._objects[key]
        except KeyError:
            raise object_not_found(key) from None
        return slice_range(key, data, start, end)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        validate_key(key)
        if if_absent and key in self._objects:
            raise object_exists(key)
        self._objects[key] = bytes(data)

    async def put_file(self, key: str, path: str) -> None:
        validate_key(key)
        try:
            data = await asyncio.to_thread(_read_file, path)
        except OSError as exc:
            raise local_file_error(exc, "put", key, path) from exc
        self._objects[key] = data

    async def delete(self, key: str) -> None:
        validate_key(key)
        self._objects.pop(key, None)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        return [
            ObjectInfo(key=k, size=len(v))
            for k, v in sorted(self._objects.items())
            if k.startswith(prefix)
        ]

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        data = self._objects.get(key)
        return None if data is None else ObjectInfo(key=key, size=len(data))

    async def close(self) -> None:
        return None


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
