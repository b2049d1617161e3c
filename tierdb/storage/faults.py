"""A BlobStore wrapper that injects faults, for tests.

    store = FaultInjectingStore(MemoryStore())
    store.fail_next(2, ops="put")                      # next two puts fail transiently
    store.inject("permanent", prefix="collections/a/") # every op under a prefix: 403-like
    store.inject("lose_response", ops="put", times=1)  # put succeeds, caller sees a 503
    store.inject("latency", delay=0.05)                # every op 50 ms slower
    store.fail_next(1, ops=("get", "get_range"))       # the next read, whole or by range
    store.clear()

Faults are checked in the order they were added; latency faults all apply, then the
first matching error fault (if any) fires.  ``calls`` records every (op, key) seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from tierdb.errors import ErrorKind, TierDBError
from tierdb.storage.base import BlobStore, ObjectInfo
from tierdb.storage.wrapper import WrapperStore

T = TypeVar("T")

FaultKind = Literal["transient", "permanent", "latency", "lose_response"]
# A range read is its own op: ``ops="get"`` does not reach it, the default (every op) does.
OPS = frozenset({"get", "get_range", "put", "delete", "list", "head"})
_KINDS = frozenset({"transient", "permanent", "latency", "lose_response"})


@dataclass
class Fault:
    kind: FaultKind
    ops: frozenset[str] = OPS
    prefix: str = ""
    remaining: int | None = None  # None: until removed
    delay: float = 0.0

    def matches(self, op: str, key: str) -> bool:
        return op in self.ops and key.startswith(self.prefix)


def transient_error(op: str, key: str, **context: object) -> TierDBError:
    return TierDBError(
        ErrorKind.UNAVAILABLE,
        f"injected transient fault: {op} of {key!r}",
        op=op, key=key, code="InjectedTransient", status=503, retryable=True, injected=True,
        **context,
    )


def permanent_error(op: str, key: str) -> TierDBError:
    return TierDBError(
        ErrorKind.UNAVAILABLE,
        f"injected permanent fault: {op} of {key!r}",
        op=op, key=key, code="InjectedPermanent", status=403, retryable=False, injected=True,
    )


class FaultInjectingStore(WrapperStore):
    def __init__(
        self, inner: BlobStore, *, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> None:
        super().__init__(inner)
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"FaultInjectingStore({self.inner!r}, {len(self.faults)} faults)"

    # -- programming faults ------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind,
        *,
        ops: str | Iterable[str] | None = None,
        prefix: str = "",
        times: int | None = None,
        delay: float = 0.0,
    ) -> Fault:
        if kind not in _KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        op_set = OPS if ops is None else frozenset([ops] if isinstance(ops, str) else ops)
        if not op_set <= OPS:
            raise ValueError(f"unknown ops {sorted(op_set - OPS)}")
        fault = Fault(kind, op_set, prefix, times, delay)
        self.faults.append(fault)
        return fault

    def fail_next(
        self,
        n: int,
        *,
        ops: str | Iterable[str] | None = None,
        prefix: str = "",
        kind: FaultKind = "transient",
    ) -> Fault:
        return self.inject(kind, ops=ops, prefix=prefix, times=n)

    def remove(self, fault: Fault) -> None:
        if fault in self.faults:
            self.faults.remove(fault)

    def clear(self) -> None:
        self.faults.clear()

    def count(self, op: str | None = None) -> int:
        return sum(1 for o, _ in self.calls if op is None or o == op)

    # -- BlobStore ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        return await self._apply("get", key, lambda: self.inner.get(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self._apply("get_range", key, lambda: self.inner.get_range(key, start, end))

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await self._apply("put", key, lambda: self.inner.put(key, data, if_absent=if_absent))

    async def put_file(self, key: str, path: str) -> None:
        # Fault rules (and ``calls``) see a file upload as a put.
        await self._apply("put", key, lambda: self.inner.put_file(key, path))

    async def delete(self, key: str) -> None:
        await self._apply("delete", key, lambda: self.inner.delete(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self._apply("list", prefix, lambda: self.inner.list(prefix))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._apply("head", key, lambda: self.inner.head(key))

    # -- internals ---------------------------------------------------------------------

    async def _apply(self, op: str, key: str, call: Callable[[], Awaitable[T]]) -> T:
        self.calls.append((op, key))
        for fault in [f for f in self.faults if f.kind == "latency" and f.matches(op, key)]:
            self._consume(fault)
            await self._sleep(fault.delay)
        fault = next(
            (f for f in self.faults if f.kind != "latency" and f.matches(op, key)), None
        )
        if fault is None:
            return await call()
        self._consume(fault)
        if fault.kind == "permanent":
            raise permanent_error(op, key)
        if fault.kind == "lose_response":
            await call()
            raise transient_error(op, key, response_lost=True)
        raise transient_error(op, key)

    def _consume(self, fault: Fault) -> None:
        if fault.remaining is None:
            return
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.remove(fault)
