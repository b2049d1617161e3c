"""A BlobStore wrapper that counts requests per collection and operation.

Placed directly over the S3 store (under the retry wrapper) it counts every attempt, i.e.
every S3 request, in ``storage_s3_requests_total{collection, op}``.
"""

from __future__ import annotations

from tierdb import metrics
from tierdb.keys import collection_of
from tierdb.storage.base import ObjectInfo
from tierdb.storage.wrapper import WrapperStore


class MeteredStore(WrapperStore):
    def _count(self, op: str, key: str) -> None:
        metrics.S3_REQUESTS.labels(collection=collection_of(key), op=op).inc()

    async def get(self, key: str) -> bytes:
        self._count("get", key)
        return await super().get(key)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._count("put", key)
        await super().put(key, data, if_absent=if_absent)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await super().delete(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self._count("list", prefix)
        return await super().list(prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        self._count("head", key)
        return await super().head(key)
