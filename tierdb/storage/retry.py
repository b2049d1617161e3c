"""Retries with exponential backoff and full jitter, as a function and as a BlobStore wrapper.

Only errors marked transient are retried: kind UNAVAILABLE with context ``retryable=True``.
NOT_FOUND, PRECONDITION, INVALID and permanent errors (``retryable=False``: bad
credentials, missing bucket, ...) are raised at once.  When retries run out, the last
error is raised with context ``attempts`` set to the number of attempts made.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tierdb.config import RetrySettings
from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.base import BlobStore, ObjectInfo
from tierdb.storage.wrapper import WrapperStore, without_retries

logger = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[object]]
Rng = Callable[[], float]
# on_retry(op, retry_number, delay_secs, error): called before each backoff sleep;
# retry_number is 1 for the first retry.
OnRetry = Callable[[str, int, float, TierDBError], None]

_MAX_EXPONENT = 62  # keeps base * 2**n a finite float for any attempt count


def is_retryable(exc: BaseException) -> bool:
    return (
        isinstance(exc, TierDBError)
        and exc.kind is ErrorKind.UNAVAILABLE
        and exc.context.get("retryable") is True
    )


def backoff_delay(retry_index: int, settings: RetrySettings, rng: Rng = random.random) -> float:
    """Full jitter: ``rng() * min(max_backoff, base * 2**retry_index)``; index 0 = first retry."""
    ceiling = settings.base_backoff_secs * 2 ** min(retry_index, _MAX_EXPONENT)
    return rng() * min(settings.max_backoff_secs, ceiling)


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    *,
    op: str = "call",
    key: str = "",
    sleep: Sleep = asyncio.sleep,
    rng: Rng = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, fails permanently, or ``max_retries`` retries ran out."""
    max_retries = max(0, settings.max_retries)
    retry_index = 0
    while True:
        try:
            return await fn()
        except TierDBError as exc:
            attempts = retry_index + 1
            if not is_retryable(exc):
                if attempts > 1:
                    exc.context["attempts"] = attempts
                raise
            if retry_index >= max_retries:
                exc.context["attempts"] = attempts
                logger.error(
                    "%s of %r failed after %d attempts",
                    op,
                    key,
                    attempts,
                    extra={"op": op, "key": key, "attempts": attempts, "code": exc.context.get("code")},
                )
                raise
            delay = backoff_delay(retry_index, settings, rng)
            logger.warning(
                "%s of %r failed transiently, retrying in %.3fs",
                op,
                key,
                delay,
                extra={
                    "op": op,
                    "key": key,
                    "retry": retry_index + 1,
                    "delay_secs": delay,
                    "code": exc.context.get("code"),
                },
            )
            if on_retry is not None:
                on_retry(op, retry_index + 1, delay, exc)
            await sleep(delay)
            retry_index += 1


class RetryingStore(WrapperStore):
    """Wraps a BlobStore so every operation is retried by ``retry_call``.

    A conditional put is the subtle case: if an attempt fails transiently *after* the
    server stored the object (the response was lost), the retry finds the key taken and
    gets PRECONDITION.  On any PRECONDITION the store reads the object
    back and reports success if it holds exactly our bytes; otherwise another writer won
    and PRECONDITION stands.
    """

    def __init__(
        self,
        inner: BlobStore,
        settings: RetrySettings,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        on_retry: OnRetry | None = None,
    ) -> None:
        super().__init__(inner)
        self.settings = settings
        self._sleep = sleep
        self._rng = rng
        self._on_retry = on_retry

    def without_retries(self) -> BlobStore:
        return without_retries(self.inner)

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await retry_call(
            fn,
            self.settings,
            op=op,
            key=key,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=self._on_retry,
        )

    async def get(self, key: str) -> bytes:
        return await self._call("get", key, lambda: self.inner.get(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self._call("get_range", key, lambda: self.inner.get_range(key, start, end))

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if not if_absent:
            return await self._call("put", key, lambda: self.inner.put(key, data))

        async def attempt() -> None:
            try:
                await self.inner.put(key, data, if_absent=True)
            except TierDBError as exc:
                # Read back on every PRECONDITION, not only after an attempt we saw fail: the HTTP
                # client itself may resend a PUT whose reply was lost on a dropped connection.
                if exc.kind is ErrorKind.PRECONDITION and await self._holds(key, data):
                    logger.info(
                        "conditional put of %r had already succeeded (its response was lost)",
                        key,
                        extra={"op": "put", "key": key},
                    )
                    return
                raise

        await self._call("put", key, attempt)

    async def put_file(self, key: str, path: str) -> None:
        # Each attempt is a whole upload: a multipart upload that failed was aborted by the store.
        await self._call("put", key, lambda: self.inner.put_file(key, path))

    async def _holds(self, key: str, data: bytes) -> bool:
        # A transient failure here propagates and the whole conditional put is retried.
        try:
            return await self.inner.get(key) == data
        except TierDBError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return False
            raise

    async def delete(self, key: str) -> None:
        await self._call("delete", key, lambda: self.inner.delete(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self._call("list", prefix, lambda: self.inner.list(prefix))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call("head", key, lambda: self.inner.head(key))
