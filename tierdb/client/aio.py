"""``AsyncTierDB``: the asyncio HTTP client, with the same methods as ``TierDB``.

    async with AsyncTierDB("http://127.0.0.1:8080") as db:
        await db.upsert("docs", ids, vectors)
        hits = await db.query("docs", vector=q, k=5)

See ``TierDB`` (tierdb/client/sync.py) for what every method does; retries, errors and types
are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from . import _calls as calls
from .errors import NotFound
from .sync import _NOT_SENT, _admin_headers, _headers, _unreachable, document_not_found
from .types import CollectionInfo, CollectionStatus, CompactResult, DlqEntry, Document, Hit


class AsyncTierDB:
    """Asyncio client of a TierDB server; same arguments and methods as ``TierDB``, awaited."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        *,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.backoff = calls.Backoff(retries=retries, base=backoff, cap=max_backoff)
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    # -- plumbing ---------------------------------------------------------------------------------

    async def _run(self, call: calls.Call) -> Any:
        content, headers = call.content()
        headers.update(_admin_headers(call, self.admin_token))
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, content=content, headers=headers)
            except httpx.TransportError as exc:
                retryable = isinstance(exc, _NOT_SENT) or call.idempotent
                if not retryable or attempt >= self.backoff.retries:
                    raise _unreachable(self.url, exc, attempt + 1) from exc
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            if (
                response.status_code in calls.RETRY_STATUSES
                and call.idempotent
                and attempt < self.backoff.retries
            ):
                await asyncio.sleep(self.backoff.delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return calls.finish(call, response.status_code, response.headers, response.content)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncTierDB":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncTierDB({self.url!r})"

    # -- collections ------------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dimension: int,
        metric: str = "cosine",
        tiering_policy: str | None = None,
        hnsw: dict[str, int] | Any = None,
        replace: bool = False,
    ) -> CollectionInfo:
        return await self._run(calls.create_collection(name, dimension, metric, tiering_policy, hnsw, replace))

    async def get_collection(self, name: str) -> CollectionInfo:
        return await self._run(calls.get_collection(name))

    async def list_collections(self) -> list[CollectionInfo]:
        return await self._run(calls.list_collections())

    async def delete_collection(self, name: str, missing_ok: bool = False) -> None:
        try:
            await self._run(calls.delete_collection(name))
        except NotFound:
            if not missing_ok:
                raise

    async def count(self, name: str) -> int:
        return (await self.get_collection(name)).count

    # -- documents --------------------------------------------------------------------------------

    async def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = calls.DEFAULT_BATCH,
    ) -> int:
        total = 0
        for batch in calls.upsert_batches(ids, vectors, metadatas, batch_size):
            total += await self._run(calls.upsert(name, batch))
        return total

    async def get(self, name: str, ids: Sequence[str], batch_size: int = calls.DEFAULT_BATCH) -> list[Document]:
        found: list[Document] = []
        for chunk in calls.chunks(calls.as_ids(ids), batch_size):
            found.extend(await self._run(calls.get_many(name, chunk)))
        return found

    async def get_one(self, name: str, id: str) -> Document:
        found = await self.get(name, [id])
        if not found:
            raise document_not_found(name, id)
        return found[0]

    async def delete(
        self,
        name: str,
        ids: Sequence[str] | None = None,
        filter: dict[str, Any] | None = None,
        batch_size: int = calls.DEFAULT_BATCH,
    ) -> int:
        id_list = calls.check_delete(ids, filter)
        if id_list is None:
            return await self._run(calls.delete(name, None, filter))
        total = 0
        for chunk in calls.chunks(id_list, batch_size):
            total += await self._run(calls.delete(name, chunk, filter))
        return total

    async def query(
        self,
        name: str,
        vector: Any = None,
        vectors: Any = None,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        include: Sequence[str] = ("metadata",),
        ef: int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        one, many = calls.query_vectors(vector, vectors)
        return await self._run(calls.query(name, one, many, k, filter, calls.check_include(include), ef))

    # -- admin ------------------------------------------------------------------------------------

    async def status(self, name: str) -> CollectionStatus:
        return await self._run(calls.status(name))

    async def dlq(self, name: str) -> list[DlqEntry]:
        return await self._run(calls.dlq(name))

    async def retry_dlq(self, name: str) -> int:
        return await self._run(calls.retry_dlq(name))

    async def clear_dlq(self, name: str) -> int:
        return await self._run(calls.clear_dlq(name))

    async def compact(self, name: str, full: bool = False) -> CompactResult:
        return await self._run(calls.compact(name, full))
