"""A BlobStore wrapper that counts requests per collection and operation.

Placed directly over the S3 store (under the retry wrapper) it counts every attempt, i.e.
every S3 request, in ``storage_s3_requests_total{collection, op}``.
"""

from __future__ import annotations

from .. import metrics
from .base import BlobStore, ObjectInfo


def collection_of(key: str) -> str:
    parts = key.split("/", 2)
    return parts[1] if len(parts) > 2 and parts[0] == "collections" else ""


class MeteredStore:
    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    def _count(self, op: str, key: str) -> None:
        metrics.S3_REQUESTS.labels(collection=collection_of(key), op=op).inc()

    async def get(self, key: str) -> bytes:
        self._count("get", key)
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._count("put", key)
        await self.inner.put(key, data, if_absent=if_absent)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self._count("list", prefix)
        return await self.inner.list(prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        self._count("head", key)
        return await self.inner.head(key)

    async def close(self) -> None:
        await self.inner.close()
