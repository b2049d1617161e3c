"""The HTTP protocol without the I/O: how each client method becomes requests, and back.

``TierDB`` (sync) and ``AsyncTierDB`` build the same ``Call`` objects here and differ only in
how they send them.  Argument normalisation (numpy or lists, batching) is shared with the
embedded mode.
"""

from __future__ import annotations

import email.utils
import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import numpy as np

from . import types as t
from ..service import rules
from .errors import RequestTimeout, TierDBClientError, make_error

JSON = "application/json"
MSGPACK = "application/msgpack"
DEFAULT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request and how to turn its response into the method's result."""

    method: str
    path: str
    body: Any = None                  # sent as msgpack when ``msgpack`` else as JSON
    msgpack: bool = False
    accept_msgpack: bool = False
    idempotent: bool = True           # may be retried after a 429/503 or a lost connection
    admin: bool = False               # carries the admin token
    read: bool = False                # may be answered by a read replica (see _routing)
    headers: tuple[tuple[str, str], ...] = ()
    result: type | None = None        # decode a 2xx body into this type (None: ignore the body)
    pick: Callable[[Any], Any] = lambda value: value

    def content(self) -> tuple[bytes | None, dict[str, str]]:
        headers = {"accept": MSGPACK if self.accept_msgpack else JSON, **dict(self.headers)}
        if self.body is None:
            return None, headers
        if self.msgpack:
            headers["content-type"] = MSGPACK
            return _msgpack_encoder.encode(self.body), headers
        headers["content-type"] = JSON
        return _json_encoder.encode(self.body), headers


_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


@functools.cache
def _json_decoder(tp: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


@functools.cache
def _msgpack_decoder(tp: type) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp)


# -- responses ------------------------------------------------------------------------------------


def finish(call: Call, status: int, headers: Any, content: bytes) -> Any:
    """The method's result for a response, or the typed exception for an error status."""
    if status >= 400:
        raise error_from_response(status, headers, content)
    if call.result is None:
        return call.pick(None)
    media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    try:
        if "msgpack" in media_type:
            value = _msgpack_decoder(call.result).decode(content)
        else:
            value = _json_decoder(call.result).decode(content)
    except msgspec.DecodeError as exc:
        raise TierDBClientError(status, "bad_response", f"unexpected response from the server: {exc}") from None
    return call.pick(value)


def error_from_response(status: int, headers: Any, content: bytes) -> TierDBClientError:
    """The typed exception for an error response (a JSON error body, or anything a proxy sent)."""
    body: Any = None
    try:
        body = msgspec.json.decode(content) if content else None
    except msgspec.DecodeError:
        pass
    request_id = headers.get("x-request-id")
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        details = {k: v for k, v in body.items() if k not in ("error", "message", "request_id")}
        kind = body.get("error") if isinstance(body.get("error"), str) else None
        return make_error(status, kind, body["message"], body.get("request_id") or request_id, details)
    text = content.decode("utf-8", "replace").strip()[:500] or f"HTTP {status} with an empty body"
    return make_error(status, None, text, request_id)


# -- retries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter; a server's ``Retry-After`` is a floor (capped)."""

    retries: int = 3
    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 60.0
    # Injectable for tests: the jitter source (a float in [0, 1)) and the wall clock that an
    # HTTP-date ``Retry-After`` is measured against.
    jitter: Callable[[], float] = random.random
    now: Callable[[], float] = time.time

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (attempt counts from 0)."""
        ceiling = min(self.cap, self.base * (2**attempt))
        wait = ceiling / 2 + self.jitter() * ceiling / 2
        floor = parse_retry_after(retry_after, now=self.now)
        if floor is not None:
            wait = max(wait, min(floor, self.max_retry_after))
        return wait


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (seconds after ``now()``);
    None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


RETRY_STATUSES = frozenset({429, 503})


# -- read consistency -----------------------------------------------------------------------------

EVENTUAL = "eventual"
STRONG = "strong"
CONSISTENCIES = (EVENTUAL, STRONG)
# How a read other than a query asks for read-your-writes; a query says it in its body.
CONSISTENCY_HEADER = "x-tierdb-consistency"


def check_consistency(consistency: str | None, default: str = EVENTUAL) -> str:
    """``consistency`` of a read (None: ``default``), checked."""
    value = default if consistency is None else consistency
    if value not in CONSISTENCIES:
        raise ValueError(f"consistency must be one of {', '.join(CONSISTENCIES)}, got {value!r}")
    return value


def _consistency_headers(consistency: str) -> tuple[tuple[str, str], ...]:
    return ((CONSISTENCY_HEADER, STRONG),) if consistency == STRONG else ()


# -- arguments ------------------------------------------------------------------------------------


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def as_ids(ids: Any) -> list[str]:
    """A list of string ids; integers (also numpy integers) are converted with ``str``."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a list of strings, not a single string")
    out = []
    for doc_id in ids:
        if isinstance(doc_id, str):
            out.append(doc_id)
        elif isinstance(doc_id, (int, np.integer)) and not isinstance(doc_id, bool):
            out.append(str(doc_id))
        else:
            raise TypeError(f"ids must be strings (or integers), got {type(doc_id).__name__}")
    return out


def as_matrix(vectors: Any, rows: int | None = None) -> np.ndarray:
    """``vectors`` (numpy array, list of lists, list of arrays) as a 2-D float32 array."""
    try:
        with np.errstate(over="ignore"):
            matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vectors must be numbers of equal length per row: {exc}") from None
    if matrix.ndim == 1 and rows == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be 2-dimensional (rows x dimension), got shape {matrix.shape}")
    if rows is not None and matrix.shape[0] != rows:
        raise ValueError(f"got {rows} ids but {matrix.shape[0]} vectors")
    return matrix


def as_vector(vector: Any) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"vector must be 1-dimensional, got shape {array.shape}; use vectors= for a batch")
    return array.tolist()


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


@dataclass(frozen=True, slots=True)
class Batch:
    ids: list[str]
    vectors: np.ndarray
    metadatas: list[dict[str, Any] | None] | None


def upsert_batches(ids: Any, vectors: Any, metadatas: Sequence[Any] | None, batch_size: int) -> Iterator[Batch]:
    """Validate the arguments of ``upsert`` and cut them into batches (shared with embedded mode)."""
    check_batch_size(batch_size)
    id_list = as_ids(ids)
    matrix = as_matrix(vectors, len(id_list))
    metas = None
    if metadatas is not None:
        metas = list(metadatas)
        if len(metas) != len(id_list):
            raise ValueError(f"got {len(id_list)} ids but {len(metas)} metadatas")
        for i, meta in enumerate(metas):
            if meta is not None and not isinstance(meta, dict):
                raise TypeError(f"metadatas[{i}] must be a dict or None, got {type(meta).__name__}")
    for start in range(0, len(id_list), batch_size):
        end = start + batch_size
        yield Batch(id_list[start:end], matrix[start:end], metas[start:end] if metas is not None else None)


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    check_batch_size(size)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_include(include: Sequence[str]) -> list[str]:
    if isinstance(include, str):
        include = (include,)
    out = list(include)
    problem = rules.include_problem(out)
    if problem:
        raise ValueError(problem)
    return out


def query_vectors(vector: Any, vectors: Any) -> tuple[list[float] | None, list[list[float]] | None]:
    problem = rules.query_vectors_problem(vector, vectors, rules.keyword)
    if problem:
        raise ValueError(problem)
    if vector is not None:
        return as_vector(vector), None
    return None, as_matrix(vectors).tolist()


def check_delete(ids: Any, filter: dict[str, Any] | None) -> list[str] | None:
    problem = rules.delete_selector_problem(ids, filter, rules.keyword)
    if problem:
        raise ValueError(problem)
    return None if ids is None else as_ids(ids)


def hnsw_dict(hnsw: Any) -> dict[str, int] | None:
    if hnsw is None:
        return None
    if isinstance(hnsw, t.HnswParams):
        return msgspec.structs.asdict(hnsw)
    if isinstance(hnsw, dict):
        unknown = set(hnsw) - {"m", "ef_construction", "ef_search"}
        if unknown:
            raise ValueError(f"unknown hnsw parameter(s): {', '.join(sorted(unknown))}")
        return {k: v for k, v in hnsw.items() if v is not None}
    raise TypeError("hnsw must be a dict or HnswParams")


# -- the calls ------------------------------------------------------------------------------------


def create_collection(
    name: str, dimension: int, metric: str, tiering_policy: str | None, hnsw: Any, replace: bool = False
) -> Call:
    body: dict[str, Any] = {"name": name, "dimension": dimension, "metric": metric}
    if replace:
        body["replace"] = True
    if tiering_policy is not None:
        body["tiering_policy"] = tiering_policy
    params = hnsw_dict(hnsw)
    if params is not None:
        body["hnsw"] = params
    return Call("POST", "/v1/collections", body, idempotent=False, result=t.CollectionInfo)


def get_collection(name: str, consistency: str = EVENTUAL) -> Call:
    return Call(
        "GET", f"/v1/collections/{_path(name)}", read=True, headers=_consistency_headers(consistency),
        result=t.CollectionInfo,
    )


def list_collections(consistency: str = EVENTUAL) -> Call:
    return Call(
        "GET", "/v1/collections", read=True, headers=_consistency_headers(consistency),
        result=t._CollectionList, pick=lambda r: r.collections,
    )


def delete_collection(name: str) -> Call:
    return Call("DELETE", f"/v1/collections/{_path(name)}", idempotent=False)


def upsert(name: str, batch: Batch) -> Call:
    rows = batch.vectors.tolist()
    if batch.metadatas is None:
        documents = [{"id": i, "vector": v} for i, v in zip(batch.ids, rows)]
    else:
        documents = [
            {"id": i, "vector": v, "metadata": m} if m is not None else {"id": i, "vector": v}
            for i, v, m in zip(batch.ids, rows, batch.metadatas)
        ]
    return Call(
        "POST",
        f"/v1/collections/{_path(name)}/documents",
        {"documents": documents},
        msgpack=True,
        result=t._Upserted,
        pick=lambda r: r.upserted,
    )


def get_many(name: str, ids: list[str], consistency: str = EVENTUAL) -> Call:
    return Call(
        "POST",
        f"/v1/collections/{_path(name)}/documents/get",
        {"ids": ids},
        accept_msgpack=True,
        read=True,
        headers=_consistency_headers(consistency),
        result=t._Documents,
        pick=lambda r: r.documents,
    )


def delete(name: str, ids: list[str] | None, filter: dict[str, Any] | None) -> Call:
    body: dict[str, Any] = {}
    if ids is not None:
        body["ids"] = ids
    if filter is not None:
        body["filter"] = filter
    return Call(
        "POST", f"/v1/collections/{_path(name)}/documents/delete", body, result=t._Deleted, pick=lambda r: r.deleted
    )


def query(
    name: str,
    vector: list[float] | None,
    vectors: list[list[float]] | None,
    k: int,
    filter: dict[str, Any] | None,
    include: list[str],
    ef: int | None,
    consistency: str = EVENTUAL,
    nprobe: int | None = None,
) -> Call:
    body: dict[str, Any] = {"k": k, "include": include}
    if vector is not None:
        body["vector"] = vector
    else:
        body["vectors"] = vectors
    if filter is not None:
        body["filter"] = filter
    if ef is not None:
        body["ef"] = ef
    if nprobe is not None:
        body["nprobe"] = nprobe
    if consistency == STRONG:  # eventual is the server's default: not sent
        body["consistency"] = STRONG
    result = t._Hits if vector is not None else t._BatchHits
    return Call(
        "POST",
        f"/v1/collections/{_path(name)}/query",
        body,
        msgpack=True,
        accept_msgpack=True,
        read=True,
        result=result,
        pick=lambda r: r.results,
    )


def status(name: str, consistency: str = EVENTUAL) -> Call:
    return Call(
        "GET", f"/admin/collections/{_path(name)}/status", admin=True, read=True,
        headers=_consistency_headers(consistency), result=t.CollectionStatus,
    )


def warm(name: str) -> Call:
    """Start warming (or, while one runs, its progress).  Sent to the client's ``url`` only: the
    node asked is the node whose disk cache fills, and ``warm_progress`` must ask the same one."""
    return Call("POST", f"/admin/collections/{_path(name)}/warm", admin=True, result=t.WarmStatus)


def warm_progress(name: str) -> Call:
    """The ``warm`` of the status of the node at ``url`` (not a replica: not ``read``)."""
    return Call(
        "GET", f"/admin/collections/{_path(name)}/status", admin=True, result=t.CollectionStatus,
        pick=lambda status: status.warm,
    )


# A wait for a warm ends at "done" or "failed", or at "idle": the node no longer knows of the
# warm it started (it restarted, or reopened the collection), so nothing more will happen.
WARM_SETTLED = ("done", "failed", "idle")


@dataclass(slots=True)
class WarmWait:
    """Polling a warm until it finishes: how long to sleep next, and when to give up."""

    name: str
    timeout: float | None
    interval: float = 0.2
    max_interval: float = 2.0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def next_sleep(self, progress: t.WarmStatus) -> float:
        """Seconds to sleep before the next poll; raises ``RequestTimeout`` past the deadline."""
        waited = time.monotonic() - self.started
        if self.timeout is not None and waited >= self.timeout:
            raise RequestTimeout(
                0, "timeout",
                f"warming {self.name!r} had not finished after {self.timeout:g}s "
                f"({progress.segments_done}/{progress.segments_total} segments, "
                f"{progress.bytes_fetched}/{progress.bytes_total} bytes); it goes on on the server",
            )
        sleep, self.interval = self.interval, min(self.interval * 2, self.max_interval)
        if self.timeout is not None:
            sleep = min(sleep, self.timeout - waited)
        return max(sleep, 0.0)


def dlq(name: str) -> Call:
    return Call("GET", f"/admin/collections/{_path(name)}/dlq", admin=True, result=t._DlqList, pick=lambda r: r.entries)


def retry_dlq(name: str) -> Call:
    return Call(
        "POST", f"/admin/collections/{_path(name)}/dlq/retry", admin=True, idempotent=False,
        result=t._Retried, pick=lambda r: r.retried,
    )


def clear_dlq(name: str) -> Call:
    return Call(
        "DELETE", f"/admin/collections/{_path(name)}/dlq", admin=True, idempotent=False,
        result=t._Cleared, pick=lambda r: r.cleared,
    )


def compact(name: str, full: bool) -> Call:
    return Call(
        "POST", f"/admin/collections/{_path(name)}/compact", {"full": bool(full)}, admin=True,
        idempotent=False, result=t.CompactResult,
    )
