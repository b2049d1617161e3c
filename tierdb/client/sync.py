"""``TierDB``: the synchronous HTTP client.

    from tierdb import TierDB

    with TierDB("http://127.0.0.1:8080") as db:
        db.create_collection("docs", dimension=384)
        db.upsert("docs", ids, vectors, metadatas)          # numpy or lists; msgpack; batches of 1000
        hits = db.query("docs", vector=q, k=5, filter={"lang": "en"})
        print(hits[0].id, hits[0].distance, hits[0].metadata)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .. import __version__
from . import _calls as calls
from ._routing import Dispatch, Replicas, read_url_list
from .errors import ConnectionFailed, NotFound, RequestTimeout
from .types import CollectionInfo, CollectionStatus, CompactResult, DlqEntry, Document, Hit, WarmStatus

USER_AGENT = f"tierdb-python/{__version__}"
# Connection failures where the request never reached the server: safe to retry any call.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": USER_AGENT}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _admin_headers(call: calls.Call, admin_token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {admin_token}"} if call.admin and admin_token else {}


def _unreachable(where: str, exc: httpx.TransportError, attempts: int) -> ConnectionFailed:
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, _NOT_SENT):
        return RequestTimeout(
            0, "timeout", f"TierDB at {where} did not answer in time ({attempts} attempt(s), {what}); raise timeout= "
            "for long operations"
        )
    return ConnectionFailed(0, "connection_failed", f"cannot reach TierDB at {where} after {attempts} attempt(s): {what}")


def _may_try_again(call: calls.Call, exc: httpx.TransportError) -> bool:
    """A lost request may be sent again (to the same node or, for a read, to another one) when it
    is idempotent, or when it never reached the server."""
    return call.idempotent or isinstance(exc, _NOT_SENT)


def _should_try_elsewhere(call: calls.Call, status: int) -> bool:
    return status in calls.RETRY_STATUSES and call.idempotent


def document_not_found(name: str, doc_id: str) -> NotFound:
    return NotFound(404, "not_found", f"document {doc_id!r} not found in collection {name!r}")


class TierDB:
    """Synchronous client of a TierDB server.

    ``url``: the server (``http://host:8080``, a path prefix behind a proxy is kept).
    ``api_key``: sent as ``X-API-Key`` on data calls when the server requires keys.
    ``admin_token``: sent as ``Authorization: Bearer`` on the admin calls (status, dlq, compact, warm).
    ``timeout``: seconds per request.  ``retries``: how many times an idempotent call (reads,
    upsert, delete, query) is retried after a 429/503 or a lost connection, with exponential
    backoff and jitter, waiting at least the server's ``Retry-After``.  Calls that are not
    idempotent (create/delete collection, dlq retry/clear, compact) are retried only when the
    connection could not be opened at all, i.e. when the server never saw the request.

    ``read_urls``: read replicas (``tierdb serve --role reader``).  Reads (query, get, get_one,
    count, get/list collections, status) go round-robin over them; writes and admin mutations
    always go to ``url`` (the writer), so a write is never sent to two nodes.  A read that meets a
    connection error or a 429/503 moves straight on to the next replica and finally to ``url``;
    a replica that failed is tried last for ``replica_cooldown`` seconds.  Only when every node
    failed does the read wait (backoff) and go round again, up to ``retries`` times.
    ``read_consistency``: "eventual" (default: a replica answers from what it has applied, usually
    under a second behind the writer) or "strong" (read-your-writes: the node answering first
    catches up with the writer's latest acknowledged write, which costs the reader a few S3
    requests and some latency); every read method also takes ``consistency=`` for one call.

    Errors raise ``TierDBClientError`` subclasses (``NotFound``, ``InvalidRequest``, ``Conflict``,
    ``Unauthorized``, ``Forbidden``, ``Unavailable``, ``Fenced``, ``ReadOnly``, ``ConnectionFailed``, ...).
    Thread-safe; use it as a context manager or call ``close()``.
    """

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
        self._http = httpx.Client(headers=_headers(api_key), timeout=timeout)

    # -- plumbing ---------------------------------------------------------------------------------

    def _run(self, call: calls.Call) -> Any:
        content, headers = call.content()
        headers.update(_admin_headers(call, self.admin_token))
        dispatch = Dispatch(call, self._replicas, self.backoff)
        while True:
            url, wait = dispatch.next()
            if wait:
                time.sleep(wait)
            try:
                response = self._http.request(call.method, url + call.path, content=content, headers=headers)
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

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "TierDB":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.read_urls:
            return f"TierDB({self.url!r}, read_urls={self.read_urls!r})"
        return f"TierDB({self.url!r})"

    # -- collections ------------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        dimension: int,
        metric: str = "cosine",
        tiering_policy: str | None = None,
        hnsw: dict[str, int] | Any = None,
        replace: bool = False,
    ) -> CollectionInfo:
        """Create a collection. ``metric``: cosine | l2 | ip. ``tiering_policy``: memory |
        memory_s3 | s3_only (None: the server default). ``hnsw``: ``{"m", "ef_construction",
        "ef_search"}`` (any subset) or ``HnswParams``. Raises ``Conflict`` if the name is taken,
        or if S3 already holds it and ``replace`` is False (True takes the S3 copy over)."""
        return self._run(calls.create_collection(name, dimension, metric, tiering_policy, hnsw, replace))

    def get_collection(self, name: str, *, consistency: str | None = None) -> CollectionInfo:
        """Spec and document count. Raises ``NotFound``."""
        return self._run(calls.get_collection(name, self._consistency(consistency)))

    def list_collections(self, *, consistency: str | None = None) -> list[CollectionInfo]:
        return self._run(calls.list_collections(self._consistency(consistency)))

    def delete_collection(self, name: str, missing_ok: bool = False) -> None:
        """Drop a collection and all its data. Raises ``NotFound`` unless ``missing_ok``."""
        try:
            self._run(calls.delete_collection(name))
        except NotFound:
            if not missing_ok:
                raise

    def count(self, name: str, *, consistency: str | None = None) -> int:
        """Number of documents in the collection."""
        return self.get_collection(name, consistency=consistency).count

    # -- documents --------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = calls.DEFAULT_BATCH,
    ) -> int:
        """Insert or replace documents; returns how many were upserted.

        ``vectors``: a (n, dimension) numpy array, or a list of lists / arrays.  Sent as msgpack in
        requests of ``batch_size`` documents; each request is atomic and durable when it returns,
        the call as a whole is not (a failure leaves the earlier batches applied; calling again is
        safe, upserts are idempotent)."""
        return sum(self._run(calls.upsert(name, batch)) for batch in calls.upsert_batches(ids, vectors, metadatas, batch_size))

    def get(
        self, name: str, ids: Sequence[str], batch_size: int = calls.DEFAULT_BATCH, *, consistency: str | None = None
    ) -> list[Document]:
        """The documents found, in the order of ``ids``; missing ids are left out."""
        level = self._consistency(consistency)
        found: list[Document] = []
        for chunk in calls.chunks(calls.as_ids(ids), batch_size):
            found.extend(self._run(calls.get_many(name, chunk, level)))
        return found

    def get_one(self, name: str, id: str, *, consistency: str | None = None) -> Document:
        """One document. Raises ``NotFound`` if the collection or the document does not exist."""
        found = self.get(name, [id], consistency=consistency)
        if not found:
            raise document_not_found(name, id)
        return found[0]

    def delete(
        self,
        name: str,
        ids: Sequence[str] | None = None,
        filter: dict[str, Any] | None = None,
        batch_size: int = calls.DEFAULT_BATCH,
    ) -> int:
        """Delete by ``ids``, by metadata ``filter``, or both (the listed ids that match);
        returns how many documents were deleted."""
        id_list = calls.check_delete(ids, filter)
        if id_list is None:
            return self._run(calls.delete(name, None, filter))
        return sum(self._run(calls.delete(name, chunk, filter)) for chunk in calls.chunks(id_list, batch_size))

    def query(
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
        """k nearest neighbours sorted by distance. ``vector=`` returns ``list[Hit]``;
        ``vectors=`` (a batch) returns one list per query vector.  ``include``: any of
        "metadata", "vector".  ``ef``: HNSW search breadth (default: the collection's).
        ``nprobe``: partitions probed per partitioned segment (s3_only; default: the engine's
        calibrated value; hnswlib segments and the memtable ignore it).
        ``consistency``: "eventual" | "strong" (default: the client's ``read_consistency``)."""
        one, many = calls.query_vectors(vector, vectors)
        level = self._consistency(consistency)
        return self._run(calls.query(name, one, many, k, filter, calls.check_include(include), ef, level, nprobe))

    # -- admin ------------------------------------------------------------------------------------

    def status(self, name: str, *, consistency: str | None = None) -> CollectionStatus:
        """Operational status (admin): WAL, segments, upload lag, DLQ size, caches.  With
        ``read_urls`` it is the status of the node that answered (a replica, usually)."""
        return self._run(calls.status(name, self._consistency(consistency)))

    def dlq(self, name: str) -> list[DlqEntry]:
        """Entries of the dead-letter queue (uploads to S3 that failed; always empty for memory)."""
        return self._run(calls.dlq(name))

    def retry_dlq(self, name: str) -> int:
        """Re-enqueue every DLQ entry for upload; returns how many."""
        return self._run(calls.retry_dlq(name))

    def clear_dlq(self, name: str) -> int:
        """Drop the DLQ entries (the next upload is a full snapshot); returns how many."""
        return self._run(calls.clear_dlq(name))

    def warm(
        self,
        name: str,
        wait: bool = False,
        *,
        timeout: float | None = 3600.0,
        on_progress: Callable[[WarmStatus], None] | None = None,
    ) -> WarmStatus:
        """Pre-fetch the collection's segments from S3 into the disk cache of the node at ``url``
        (admin).  Returns the progress at once, or with ``wait`` polls that node's status until
        the warm is "done" or "failed" (or "idle": the node restarted meanwhile), calling
        ``on_progress`` after each poll; ``RequestTimeout`` after ``timeout`` seconds (None: no
        limit; the warm goes on on the server).  Asking while a warm runs returns its progress."""
        progress = self._run(calls.warm(name))
        if not wait:
            return progress
        waiting = calls.WarmWait(name, timeout)
        while progress.state not in calls.WARM_SETTLED:
            time.sleep(waiting.next_sleep(progress))
            progress = self._run(calls.warm_progress(name))
            if on_progress is not None:
                on_progress(progress)
        return progress

    def compact(self, name: str, full: bool = False) -> CompactResult:
        """Flush the memtable and merge segments now (``full``: merge every segment)."""
        return self._run(calls.compact(name, full))
