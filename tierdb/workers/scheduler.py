"""APScheduler (AsyncIOScheduler) wiring for the background workers.

Every job runs with ``max_instances=1`` and ``coalesce=True``: a slow run is never doubled up,
and missed runs collapse into one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

if TYPE_CHECKING:
    from ..engine.engine import Engine


def build_scheduler(jobs: list[tuple[str, Callable[[], Awaitable[Any]], float]]) -> AsyncIOScheduler:
    """jobs: (id, coroutine function, interval in seconds)."""
    scheduler = AsyncIOScheduler()
    for job_id, fn, interval in jobs:
        scheduler.add_job(
            fn,
            "interval",
            seconds=interval,
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
        )
    return scheduler
