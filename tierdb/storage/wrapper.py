"""The base of every BlobStore wrapper (retry, metering, disk cache, fault injection).

A wrapper holds the store it wraps in ``inner`` and, unless it overrides a method, passes the
call through unchanged; a subclass overrides only the operations it changes.
"""

from __future__ import annotations

import copy

from tierdb.storage.base import BlobStore, ObjectInfo


class WrapperStore:
    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self.inner.get_range(key, start, end)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await self.inner.put(key, data, if_absent=if_absent)

    async def put_file(self, key: str, path: str) -> None:
        await self.inner.put_file(key, path)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self.inner.list(prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    async def close(self) -> None:
        await self.inner.close()

    def without_retries(self) -> BlobStore:
        """This stack with every retry layer left out: each call is a single attempt.

        Layers without retries below them are returned as they are; a layer above a retry
        layer is returned as a shallow copy over the stack without retries, sharing this
        layer's state.  Such a view is for one-off calls (a health probe): close the
        original stack, never the view.
        """
        bare = without_retries(self.inner)
        if bare is self.inner:
            return self
        view = copy.copy(self)
        view.inner = bare
        return view


def without_retries(store: BlobStore) -> BlobStore:
    """``store`` with every retry layer left out (see ``WrapperStore.without_retries``)."""
    return store.without_retries() if isinstance(store, WrapperStore) else store


class BorrowedStore(WrapperStore):
    """A store used by a wrapper that must not close it: ``close()`` leaves ``inner`` open.

    The node's one S3 client sits below every collection's disk cache; closing (dropping) one
    collection's cache must not close the client the other collections are still using.
    """

    async def close(self) -> None:
        pass
