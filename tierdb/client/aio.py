"""``AsyncTierDB``: the asyncio HTTP client, with the same methods as ``TierDB``.

    async with AsyncTierDB("http://127.0.0.1:8080") as db:
        await db.upsert("docs", ids, vectors)
        hits = await db.query("docs", vector=q, k=5)

See ``TierDB`` (tierdb/client/sync.py) for what every method does; retries, errors and types
are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from . import _calls as calls
from ._routing import Dispatch, Replicas, read_url_list
from .errors import NotFound
from .sync import _admin_headers, _headers, _may_try_again, _should_try_elsewhere, _unreachable, document_not_found
from .types import CollectionInfo, CollectionStatus, CompactResult, DlqEntry, Document, Hit, WarmStatus


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
        read_urls: Sequence[str] | None = None,
        read_consistency: str = calls.EVENTUAL,
        replica_cooldown: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.read_urls = read_url_list(self.url, read_urls)
        self.read_consistency = calls.check_consistency(read_consistency)
        self.admin_token = admin_token
        self.backoff = calls.Backoff(retries=retries, base=backoff, cap=max_backoff)
        self._replicas = Replicas(self.url, self.read_urls, replica_cooldown)
        self._http = httpx.AsyncClient(headers=_headers(api_key), timeout=timeout)

    # -- plumbing ---------------------------------------------------------------------------------

    async def _run(self, call: calls.Call) -> Any:
        content, headers = call.content()
        headers.update(_admin_headers(call, self.admin_token))
        dispatch = Dispatch(call, self._replicas, self.backoff)
        while True:
            url, wait = dispatch.next()
            if wait:
                await asyncio.sleep(wait)
            try:
                response = await self._http.request(call.method, url + call.path, content=content, headers=headers)
            except httpx.TransportError as exc:
                if _may_try_again(call, exc) and dispatch.failed(url):
                    continue
                raise _unreachable(dispatch.where(), exc, dispatch.sent) from exc
            if _should_try_elsewhere(call, response.status_code) and dispatch.failed(
                url, response.headers.get("retry-after")
            ):
                continue
            dispatch.answered(url)
            return calls.finish(call, response.status_code, response.headers, response.content)

    def _consistency(self, consistency: str | None) -> str:
        return calls.check_consistency(consistency, self.read_consistency)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncTierDB":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        if self.read_urls:
            return f"AsyncTierDB({self.url!r}, read_urls={self.read_urls!r})"
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

    async def get_collection(self, name: str, *, consistency: str | None = None) -> CollectionInfo:
        return await self._run(calls.get_collection(name, self._consistency(consistency)))

    async def list_collections(self, *, consistency: str | None = None) -> list[CollectionInfo]:
        return await self._run(calls.list_collections(self._consistency(consistency)))

    async def delete_collection(self, name: str, missing_ok: bool = False) -> None:
        try:
            await self._run(calls.delete_collection(name))
        except NotFound:
            if not missing_ok:
                raise

    async def count(self, name: str, *, consistency: str | None = None) -> int:
        return (await self.get_collection(name, consistency=consistency)).count

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

    async def get(
        self, name: str, ids: Sequence[str], batch_size: int = calls.DEFAULT_BATCH, *, consistency: str | None = None
    ) -> list[Document]:
        level = self._consistency(consistency)
        found: list[Document] = []
        for chunk in calls.chunks(calls.as_ids(ids), batch_size):
            found.extend(await self._run(calls.get_many(name, chunk, level)))
        return found

    async def get_one(self, name: str, id: str, *, consistency: str | None = None) -> Document:
        found = await self.get(name, [id], consistency=consistency)
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
        *,
        nprobe: int | None = None,
        consistency: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        one, many = calls.query_vectors(vector, vectors)
        level = self._consistency(consistency)
        return await self._run(calls.query(name, one, many, k, filter, calls.check_include(include), ef, level, nprobe))

    # -- admin ------------------------------------------------------------------------------------

    async def status(self, name: str, *, consistency: str | None = None) -> CollectionStatus:
        return await self._run(calls.status(name, self._consistency(consistency)))

    async def dlq(self, name: str) -> list[DlqEntry]:
        return await self._run(calls.dlq(name))

    async def retry_dlq(self, name: str) -> int:
        return await self._run(calls.retry_dlq(name))

    async def clear_dlq(self, name: str) -> int:
        return await self._run(calls.clear_dlq(name))

    async def warm(
        self,
        name: str,
        wait: bool = False,
        *,
        timeout: float | None = 3600.0,
        on_progress: Callable[[WarmStatus], None] | None = None,
    ) -> WarmStatus:
        progress = await self._run(calls.warm(name))
        if not wait:
            return progress
        waiting = calls.WarmWait(name, timeout)
        while progress.state not in calls.WARM_SETTLED:
            await asyncio.sleep(waiting.next_sleep(progress))
            progress = await self._run(calls.warm_progress(name))
            if on_progress is not None:
                on_progress(progress)
        return progress

    async def compact(self, name: str, full: bool = False) -> CompactResult:
        return await self._run(calls.compact(name, full))
