"""The BlobStore protocol: the only thing the engine and workers know about object storage.

Every implementation (local directory, memory, S3) and every wrapper (retry, disk cache,
metrics, fault injection; all built on ``wrapper.WrapperStore``) satisfies it and passes the
contract in ``tierdb.testing.store``.  Keys are relative ("collections/x/segments/ab.seg",
laid out by ``tierdb.keys``); a store maps them under its root/prefix.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int
    etag: str = ""


class BlobStore(Protocol):
    """Async object storage.

    Errors are TierDBError: NOT_FOUND for a missing key, PRECONDITION when a put with
    ``if_absent=True`` finds the key already there, UNAVAILABLE for transient failures
    (retryable: 5xx, throttling, timeouts, connection errors) and other kinds for
    permanent ones (context ``retryable=False``).
    """

    async def get(self, key: str) -> bytes: ...

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object, in one request (S3: ``Range: bytes=start-(end-1)``).

        S3's rules: an ``end`` past the object is clamped (the answer is shorter); a ``start``
        at or past the end of the object is INVALID (S3's 416), as is a range that is not
        ``0 <= start < end`` (an empty range cannot be sent; ``ranges.get_ranges`` answers
        those without a request).  A missing key is NOT_FOUND, as for ``get``.
        """

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...

    async def put_file(self, key: str, path: str) -> None:
        """The object at ``key`` becomes the bytes of the local file ``path`` (which the caller
        does not change or delete until this returns).  Never holds more than one part of it in
        RAM (S3: a multipart upload for a file larger than one part).  Overwrites like ``put``
        without ``if_absent``; there is no ``if_absent`` variant."""

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with prefix, sorted by key (paginates internally)."""

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def close(self) -> None: ...
