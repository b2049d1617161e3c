"""Embedded mode: the TierDB engine inside your process, no server.

    import tierdb

    with tierdb.open("./data") as db:                   # policy="memory" by default
        db.create_collection("docs", dimension=384)
        db.upsert("docs", ids, vectors, metadatas)
        hits = db.query("docs", vector=q, k=5)

``open`` returns an ``EmbeddedTierDB`` with the same methods, results and exceptions as the HTTP
client ``TierDB``, so code can switch between the two.  The engine runs on a private asyncio
event loop in a background thread (its compaction worker included); every method blocks until
the engine has answered, and ``close()`` shuts the engine down cleanly.  Writes are durable when
a method returns, exactly as on a server.

One process at a time may open a data directory: do not point a server and an embedded engine
(or two embedded engines) at the same ``path``.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .client import _calls as calls
from .client import types as t
from .client.errors import make_error
from .client.sync import document_not_found
from .tiering import DEFAULT_POLICY

__all__ = ["EmbeddedTierDB", "open"]


def _setting_key(key: str) -> str:
    """``compaction_threshold_ops`` or ``compaction.threshold_ops`` -> ``compaction.threshold_ops``."""
    from .config import SECTION_TYPES

    if "." in key:
        return key
    section, _, rest = key.partition("_")
    if section not in SECTION_TYPES or not rest:
        raise TypeError(
            f"unknown setting {key!r}: write <section>_<key> (e.g. compaction_threshold_ops) for one of the "
            f"sections {', '.join(SECTION_TYPES)}; see config/tierdb.example.toml"
        )
    return f"{section}.{rest}"


def open(  # noqa: A001 - tierdb.open is the public name
    path: str | Any,
    policy: str = DEFAULT_POLICY,
    *,
    config: str | None = None,
    **settings: Any,
) -> "EmbeddedTierDB":
    """Open (or create) a TierDB data directory in this process.

    ``policy``: the default tiering policy of new collections (memory | memory_s3 | s3_only;
    the S3 policies need ``s3_bucket=...`` and usually ``s3_endpoint=...``).  ``config``: an
    optional TOML file as the server reads it.  Any other setting is a keyword argument named
    ``<section>_<key>``, e.g. ``compaction_threshold_ops=20_000, index_threshold=5_000``.
    ``TIERDB_*`` environment variables are not read: an embedded engine is configured by its
    caller.  A bad value raises ``tierdb.config.ConfigError`` (a ``ValueError``).
    """
    from .config import load_settings

    overrides = {_setting_key(key): value for key, value in settings.items()}
    overrides["storage.data_dir"] = str(path)
    overrides["storage.tiering_policy"] = policy
    return EmbeddedTierDB(load_settings(config, env={}, overrides=overrides))


class _Runtime:
    """The engine's private event loop and thread, and how to shut them down exactly once.

    Kept apart from ``EmbeddedTierDB`` so that shutting down at interpreter exit or when the
    object is garbage-collected does not keep the object itself alive."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tierdb-embedded", daemon=True)
        self.engine: Any = None
        self.closed = False
        self.lock = threading.Lock()
        self.thread.start()

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def shutdown(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            engine, self.engine = self.engine, None
            try:
                if engine is not None:
                    self.submit(engine.close())
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join()
                self.loop.close()

    def close_at_exit(self) -> None:
        """Shut down before the interpreter stops its thread pools (which ``atexit`` runs after:
        the engine's final WAL close goes through one), falling back on ``atexit``."""
        try:
            threading._register_atexit(self.shutdown)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):
            atexit.register(self.shutdown)


class EmbeddedTierDB:
    """The TierDB engine in-process, behind the interface of ``tierdb.TierDB``.

    Build it with ``tierdb.open(path, ...)``.  Thread-safe: calls from several threads are
    served concurrently by the engine (writes share group commits, queries run in threads).
    An instance that is never closed is shut down cleanly when it is garbage-collected or when
    the interpreter exits.
    """

    def __init__(self, settings: Any) -> None:
        from .node import Engine
        from .process_memory import release_freed_memory
        from .service.limits import Limits

        self.settings = settings
        self._limits = Limits.of(settings)
        self.path = settings.storage.data_dir
        self._rt = _Runtime()
        self.engine = Engine(settings)
        try:
            self._rt.submit(self.engine.start())
            self._rt.submit(asyncio.to_thread(release_freed_memory))  # recovery's read buffers
        except BaseException:
            self._rt.shutdown()
            raise
        self._rt.engine = self.engine
        self._rt.close_at_exit()
        weakref.finalize(self, self._rt.shutdown)

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the engine's loop (awaiting it if it is a coroutine function);
        engine errors become the client's typed exceptions."""
        from .errors import TierDBError

        if self._rt.closed:
            raise RuntimeError("this TierDB database is closed")

        async def run() -> Any:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        try:
            return self._rt.submit(run())
        except TierDBError as exc:
            raise _client_error(exc) from None

    def _call_here(self, fn: Callable[[], Any]) -> Any:
        """Run the thread-safe, blocking engine call ``fn`` in the calling thread; engine errors
        become the client's typed exceptions."""
        if self._rt.closed:
            raise RuntimeError("this TierDB database is closed")
        return self._check(fn)

    def _check(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a service-layer check in the calling thread; its error as the client's exception."""
        from .errors import TierDBError

        try:
            return fn(*args)
        except TierDBError as exc:
            raise _client_error(exc) from None

    def _collection(self, name: str) -> Any:
        return self.engine.get_collection(name)

    def _check_query(self, k: Any, ef: Any, nprobe: Any, batch: list[list[float]] | None) -> None:
        """The checks the REST API makes before a query reaches the engine, in the same order."""
        self._limits.check_k(k)
        self._limits.check_ef(ef)
        self._limits.check_nprobe(nprobe)
        if batch is not None:
            self._limits.check_query_vectors("vectors", len(batch))

    def close(self) -> None:
        """Shut the engine down (queued writes committed, WAL closed). Idempotent."""
        self._rt.shutdown()

    def __enter__(self) -> "EmbeddedTierDB":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"tierdb.open({self.path!r})"

    # -- collections ------------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        dimension: int,
        metric: str = "cosine",
        tiering_policy: str | None = None,
        hnsw: dict[str, int] | Any = None,
        replace: bool = False,
    ) -> t.CollectionInfo:
        from .service.spec import request_spec

        params = calls.hnsw_dict(hnsw)
        spec = self._check(request_spec, self.settings, name, dimension, metric, tiering_policy, params)
        return _convert(self._call(self.engine.create_collection, spec, replace=replace), t.CollectionInfo)

    # ``consistency`` (every read): accepted for the HTTP clients' interface and checked, else
    # ignored: one node in-process is always strongly consistent.

    def get_collection(self, name: str, *, consistency: str | None = None) -> t.CollectionInfo:
        calls.check_consistency(consistency)
        return _convert(self._call(lambda: self._collection(name).info()), t.CollectionInfo)

    def list_collections(self, *, consistency: str | None = None) -> list[t.CollectionInfo]:
        calls.check_consistency(consistency)
        return _convert(self._call(self.engine.list_collections), list[t.CollectionInfo])

    def delete_collection(self, name: str, missing_ok: bool = False) -> None:
        from .client.errors import NotFound

        try:
            self._call(self.engine.drop_collection, name)
        except NotFound:
            if not missing_ok:
                raise

    def count(self, name: str, *, consistency: str | None = None) -> int:
        calls.check_consistency(consistency)
        return self._call(lambda: self._collection(name).count())

    # -- documents --------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = calls.DEFAULT_BATCH,
    ) -> int:
        total = 0
        for batch in calls.upsert_batches(ids, vectors, metadatas, batch_size):
            self._check(self._limits.check_batch, "documents", len(batch.ids))
            total += self._call(lambda b=batch: self._collection(name).upsert(b.ids, b.vectors, b.metadatas))
        return total

    def get(
        self, name: str, ids: Sequence[str], batch_size: int = calls.DEFAULT_BATCH, *, consistency: str | None = None
    ) -> list[t.Document]:
        calls.check_consistency(consistency)
        found: list[t.Document] = []
        for chunk in calls.chunks(calls.as_ids(ids), batch_size):
            self._check(self._limits.check_batch, "ids", len(chunk))
            found.extend(_convert(self._call(lambda c=chunk: self._collection(name).get(c)), list[t.Document]))
        return found

    def get_one(self, name: str, id: str, *, consistency: str | None = None) -> t.Document:
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
        id_list = calls.check_delete(ids, filter)
        if id_list is None:
            return self._call(lambda: self._collection(name).delete(ids=None, filter=filter))
        total = 0
        for chunk in calls.chunks(id_list, batch_size):
            self._check(self._limits.check_batch, "ids", len(chunk))
            total += self._call(lambda c=chunk: self._collection(name).delete(ids=c, filter=filter))
        return total

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
    ) -> list[t.Hit] | list[list[t.Hit]]:
        calls.check_consistency(consistency)
        one, many = calls.query_vectors(vector, vectors)
        fields = calls.check_include(include)
        self._check(self._check_query, k, ef, nprobe, many)
        # In the calling thread: a query takes only the collection's thread-safe read path, so it
        # needs no hop to the engine's loop and none to a worker thread.
        results = self._call_here(
            lambda: self._collection(name).query_blocking(
                [one] if one is not None else many,
                k,
                filter=filter,
                include_metadata="metadata" in fields,
                include_vector="vector" in fields,
                ef=ef,
                nprobe=nprobe,
            )
        )
        hits = _convert(results, list[list[t.Hit]])
        return hits[0] if one is not None else hits

    # -- admin ------------------------------------------------------------------------------------

    def status(self, name: str, *, consistency: str | None = None) -> t.CollectionStatus:
        calls.check_consistency(consistency)
        return _convert(self._call(lambda: self._collection(name).stats()), t.CollectionStatus)

    def dlq(self, name: str) -> list[t.DlqEntry]:
        return _convert(self._call(lambda: self._collection(name).dlq_entries()), list[t.DlqEntry])

    def retry_dlq(self, name: str) -> int:
        return self._call(lambda: self._collection(name).dlq_retry())

    def clear_dlq(self, name: str) -> int:
        return self._call(lambda: self._collection(name).dlq_clear())

    def compact(self, name: str, full: bool = False) -> t.CompactResult:
        return _convert(self._call(lambda: self._collection(name).compact(full=full)), t.CompactResult)

    def warm(
        self,
        name: str,
        wait: bool = False,
        *,
        timeout: float | None = 3600.0,
        on_progress: Callable[[t.WarmStatus], None] | None = None,
    ) -> t.WarmStatus:
        """As ``TierDB.warm``: pre-fetch the collection's segments into the disk cache."""
        progress = _convert(self._call(lambda: self._collection(name).start_warm()), t.WarmStatus)
        if not wait:
            return progress
        waiting = calls.WarmWait(name, timeout)
        while progress.state not in calls.WARM_SETTLED:
            time.sleep(waiting.next_sleep(progress))
            progress = _convert(self._call(lambda: self._collection(name).stats().warm), t.WarmStatus)
            if on_progress is not None:
                on_progress(progress)
        return progress


def _convert(value: Any, tp: Any) -> Any:
    """An engine value (Structs, dicts, numpy scalars) as the client type ``tp``."""
    return msgspec.convert(msgspec.to_builtins(value, enc_hook=_enc_hook), tp)


def _enc_hook(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)
    if tolist is None:
        raise TypeError(f"cannot convert {type(obj).__name__}")
    return tolist()


def _client_error(exc: Any) -> Exception:
    """An engine ``TierDBError`` as the exception the HTTP client raises for the same error."""
    context = {k: v for k, v in exc.context.items() if isinstance(v, (str, int, float, bool))}
    return make_error(exc.status_code, exc.kind.value, exc.message, None, context)
