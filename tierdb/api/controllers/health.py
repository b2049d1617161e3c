"""/health, /health/live, /health/ready."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tempfile

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from ... import __version__
from ..auth import require_status_access
from ..lifecycle import EngineHost
from ..schemas import HealthChecks, HealthReport, ProbeStatus, S3Check

log = logging.getLogger("tierdb.api")

_BAD_COLLECTION_STATES = frozenset({"failed", "fenced"})
# The data directory exists but takes no write (read-only mount, no permission, disk full):
# the node still serves reads, so it is degraded, not unhealthy.
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


class DataDirCheck:
    def __init__(self, writable: bool, error: str | None = None, serves_reads: bool = False) -> None:
        self.writable = writable
        self.error = error
        self.serves_reads = serves_reads


def _probe_writable(directory: str) -> DataDirCheck:
    """Really write a file: catches read-only mounts and full disks that os.access misses."""
    if not os.path.isdir(directory):
        return DataDirCheck(False, f"data directory {directory} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".health-") as probe:
            probe.write(b"ok")
            probe.flush()
        return DataDirCheck(True)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        kind = "read-only" if exc.errno == errno.EROFS else "not writable"
        return DataDirCheck(
            False,
            f"data directory {directory} is {kind}: {os.strerror(exc.errno or 0)} ({code}); "
            "reads are served, writes fail with 507",
            serves_reads=exc.errno in _READ_ONLY_ERRNOS,
        )


def _collection_states(host: EngineHost) -> dict[str, str] | None:
    """name -> state; None when the engine cannot report (which makes the node unhealthy)."""
    if host.engine is None:
        return {}
    try:
        return {stats.name: stats.state for stats in host.engine.collection_stats()}
    except Exception:
        log.exception("health check: reading collection states failed")
        return None


def _status(host: EngineHost, data_dir: DataDirCheck, states: dict[str, str] | None, s3: S3Check | None) -> str:
    if host.startup_error is not None or states is None:
        return "unhealthy"
    if not data_dir.writable and not (data_dir.serves_reads and host.ready):
        return "unhealthy"
    if not host.ready:
        return "starting"
    if not data_dir.writable:
        return "degraded"
    if any(state in _BAD_COLLECTION_STATES for state in states.values()):
        return "degraded"
    if s3 is not None and not s3.reachable:
        return "degraded"  # memory_s3 keeps acknowledging locally; s3_only writes fail with 503
    return "ok"


async def _probe_s3(host: EngineHost) -> S3Check | None:
    if host.engine is None or not host.ready:
        return None
    found = await host.engine.probe_s3()
    return None if found is None else S3Check(**found)


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/", summary="Health report", guards=[require_status_access])
    async def health(self, host: NamedDependency[EngineHost]) -> Response[HealthReport]:
        """503 when the node cannot serve (starting, failed recovery, data dir missing);
        ``degraded`` (200) when some collection failed or is fenced while others serve, or the
        data directory takes no writes (read-only, full: ``data_dir_error`` says why) while
        reads are served."""
        data_dir = await asyncio.to_thread(_probe_writable, host.settings.storage.data_dir)
        states = _collection_states(host)
        s3 = await _probe_s3(host)
        status = _status(host, data_dir, states, s3)
        report = HealthReport(
            status=status,  # type: ignore[arg-type]
            version=__version__,
            uptime_secs=round(host.uptime_secs, 3),
            ready=host.ready,
            role=host.settings.node.role,
            checks=HealthChecks(
                data_dir_writable=data_dir.writable,
                data_dir_error=data_dir.error,
                collections=states or {},
                startup_error=host.startup_error,
                scheduler_running=host.engine is not None and host.engine.scheduler_running,
                s3=s3,
            ),
        )
        return Response(report, status_code=200 if status in ("ok", "degraded") else 503)

    @get("/live", summary="Liveness: 200 while the process runs", sync_to_thread=False)
    def live(self) -> ProbeStatus:
        return ProbeStatus(status="alive")

    @get("/ready", summary="Readiness: 200 once recovery has finished", sync_to_thread=False)
    def ready(self, host: NamedDependency[EngineHost]) -> Response[ProbeStatus]:
        if host.ready:
            return Response(ProbeStatus(status="ready"))
        status = "failed" if host.startup_error is not None else "starting"
        return Response(ProbeStatus(status=status), status_code=503)
