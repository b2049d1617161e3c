"""APScheduler (AsyncIOScheduler) wiring for the background workers.

APScheduler only provides the clock.  Each tick starts the job's work as a task of its own and
returns at once, so:

- a tick while the previous run is still going is skipped quietly (DEBUG) instead of APScheduler's
  "maximum number of running instances reached" WARNING every interval during a bulk import;
  at most one run of a job exists at any time;
- shutdown never cancels a run half-way through (APScheduler's executor cancels the coroutines it
  awaits): ``WorkerScheduler.stop`` stops the clock, then gives the running work a bounded time
  to finish and only then cancels it, logging at INFO — a cancelled job at shutdown is expected.

Real APScheduler problems (a misconfigured job, the scheduler itself failing) still log at its
own levels: nothing of APScheduler's logging is filtered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[Any]]


class BackgroundJob:
    """One periodic worker: at most one run at a time."""

    def __init__(self, name: str, fn: JobFn) -> None:
        self.name = name
        self._fn = fn
        self._task: asyncio.Task[None] | None = None
        self.skipped_ticks = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def tick(self) -> None:
        """Called by APScheduler: start a run unless one is still going."""
        if self.running:
            self.skipped_ticks += 1
            log.debug("previous run still going; tick skipped", extra={"job": self.name})
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tierdb-job-{self.name}")

    async def _run(self) -> None:
        try:
            await self._fn()
        except asyncio.CancelledError:
            log.info("job run cancelled by shutdown", extra={"job": self.name})
        except Exception:
            log.exception("job run crashed", extra={"job": self.name})

    async def finish(self, timeout_secs: float) -> bool:
        """Wait up to timeout_secs for the current run; cancel it after that. True if it finished."""
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=max(timeout_secs, 0.0))
        if done:
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False


class WorkerScheduler:
    """The background jobs of an engine on one AsyncIOScheduler."""

    def __init__(self, jobs: list[tuple[str, JobFn, float]]) -> None:
        """jobs: (id, coroutine function, interval in seconds)."""
        self._scheduler = AsyncIOScheduler()
        self.jobs: dict[str, BackgroundJob] = {}
        for job_id, fn, interval in jobs:
            job = BackgroundJob(job_id, fn)
            self.jobs[job_id] = job
            self._scheduler.add_job(
                job.tick,
                "interval",
                seconds=interval,
                id=job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
            )

    def start(self) -> None:
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return self._scheduler.running

    async def stop(self, timeout_secs: float) -> None:
        """Stop the clock, then let running jobs finish within timeout_secs (cancelled after)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        for job in self.jobs.values():
            if not await job.finish(deadline - loop.time()):
                log.info("job did not finish before shutdown; it resumes at the next start",
                         extra={"job": job.name, "timeout_secs": timeout_secs})


def build_scheduler(jobs: list[tuple[str, JobFn, float]]) -> WorkerScheduler:
    return WorkerScheduler(jobs)
