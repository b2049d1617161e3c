"""Group commit: concurrent writers share one durable write (one fsync or one S3 PUT).

Writers ``await submit(op)``.  While a batch is being made durable in a worker thread, new ops
queue up; the next batch takes all of them.  ``commit_fn`` runs in a thread, receives the ops in
submission order and returns one result per op (a value or an exception instance).
An op whose caller was cancelled is still committed: cancellation never half-applies a write.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, TypeVar

Op = TypeVar("Op")


class GroupCommitter(Generic[Op]):
    def __init__(self, commit_fn: Callable[[list[Op]], list[Any]], *, window_secs: float = 0.0) -> None:
        self._commit_fn = commit_fn
        self._window = window_secs
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, op: Op) -> Any:
        if self._closed:
            from ..errors import unavailable

            raise unavailable("the collection is closing; write not accepted")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            if self._window:
                await asyncio.sleep(self._window)
            while self._pending:
                batch, self._pending = self._pending, []
                ops = [op for op, _ in batch]
                try:
                    results = await asyncio.to_thread(self._commit_fn, ops)
                except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._runner = None

    async def drain(self) -> None:
        """Stop accepting writes and wait for everything queued to be committed."""
        self._closed = True
        while self._runner is not None:
            await asyncio.shield(self._runner)
