"""The engine's lifetime inside the app: background recovery, readiness, shutdown.

Recovery runs as a background task so the process answers ``/health/live`` (and a 503 on
``/health/ready``) while collections load; every engine-backed route gets a 503 with
``Retry-After`` until recovery has finished.  Shutdown waits for an unfinished recovery, then
closes the engine (flushes the WAL, stops the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref

from .. import metrics
from ..config import Settings
from ..node import Engine, build_engine
from ..errors import TierDBError, unavailable

log = logging.getLogger("tierdb.api")

HOST_STATE_KEY = "engine_host"  # app.state[...] holds the app's EngineHost

_running_hosts: "weakref.WeakSet[EngineHost]" = weakref.WeakSet()


def request_shutdown() -> None:
    """Called by the server's SIGTERM/SIGINT handler before uvicorn drains in-flight requests:
    every running engine abandons its index builds at once (their rows are in the WAL), so a
    compaction request in flight ends quickly instead of holding up the shutdown."""
    for host in list(_running_hosts):
        host.begin_shutdown()


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, TierDBError) else f"{type(exc).__name__}: {exc}"


class EngineHost:
    """Holds the engine for the app and knows whether it is ready, starting or failed."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.startup_error: str | None = None
        self._started_at = time.monotonic()
        self._recovery: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    @property
    def uptime_secs(self) -> float:
        return time.monotonic() - self._started_at

    async def start(self) -> None:
        """Create the engine if none was given and start recovering it in the background."""
        self._started_at = time.monotonic()
        if self.engine is None:
            self.engine = build_engine(self.settings)
        metrics.register_engine_collector(self.engine.collection_stats)
        metrics.set_cache_budgets(self.settings.cache.ram_bytes, self.settings.cache.disk_bytes)
        _running_hosts.add(self)
        self._recovery = asyncio.create_task(self._recover(self.engine), name="tierdb-recovery")

    async def _recover(self, engine: Engine) -> None:
        began = time.perf_counter()
        try:
            await engine.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.startup_error = _describe(exc)
            log.exception("engine recovery failed; the server stays unready")
            return
        log.info("recovery finished", extra={"duration_ms": round((time.perf_counter() - began) * 1000, 1)})

    def begin_shutdown(self) -> None:
        if self.engine is not None:
            self.engine.begin_shutdown()

    async def stop(self) -> None:
        """Stop an unfinished recovery, then close the engine."""
        _running_hosts.discard(self)
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        metrics.unregister_engine_collector()
        if self.engine is not None:
            await self.engine.close()

    def require_ready(self) -> Engine:
        """The engine for a request; 503 while recovering or after a failed recovery."""
        if self.engine is not None and self.engine.ready:
            return self.engine
        if self.startup_error is not None:
            raise unavailable(f"the engine failed to start: {self.startup_error}")
        raise unavailable("the server is starting: collections are being recovered; retry shortly")
