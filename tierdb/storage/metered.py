"""A BlobStore wrapper that counts requests per collection and operation.

Placed directly over the S3 store (under the retry wrapper) it counts every attempt, i.e.
every S3 request, in ``storage_s3_requests_total{collection, op}`` (a range GET is op
``get_range``), and the object bytes that reads returned in
``storage_s3_bytes_fetched_total{collection, op}``.  A ``put_file`` counts the requests a
successful upload of that file sends (``upload_requests`` of the store below: one PUT, or a
multipart upload's create, parts and complete), all as op ``put``.
"""

from __future__ import annotations

import asyncio
import os

from tierdb import metrics
from tierdb.keys import collection_of
from tierdb.storage.base import ObjectInfo
from tierdb.storage.wrapper import WrapperStore


class MeteredStore(WrapperStore):
    def _count(self, op: str, key: str, requests: int = 1) -> None:
        metrics.S3_REQUESTS.labels(collection=collection_of(key), op=op).inc(requests)

    def _fetched(self, op: str, key: str, data: bytes) -> bytes:
        metrics.S3_BYTES_FETCHED.labels(collection=collection_of(key), op=op).inc(len(data))
        return data

    async def get(self, key: str) -> bytes:
        self._count("get", key)
        return self._fetched("get", key, await super().get(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        self._count("get_range", key)
        return self._fetched("get_range", key, await super().get_range(key, start, end))

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._count("put", key)
        await super().put(key, data, if_absent=if_absent)

    async def put_file(self, key: str, path: str) -> None:
        upload_requests = getattr(self.inner, "upload_requests", None)
        requests = 1
        if upload_requests is not None:
            try:
                requests = upload_requests(await asyncio.to_thread(os.path.getsize, path))
            except OSError:
                pass  # the store below reports the unreadable file
        self._count("put", key, requests)
        await super().put_file(key, path)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await super().delete(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self._count("list", prefix)
        return await super().list(prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        self._count("head", key)
        return await super().head(key)
