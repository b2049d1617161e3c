"""GroupCommitter: writers that arrive while a batch is being made durable share the next
one; each writer gets its own result or error; a failed commit fails its whole batch and no
other; a cancelled writer's op is still committed; drain waits and then refuses writes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tierdb.engine.group_commit import GroupCommitter
from tierdb.errors import ErrorKind, TierDBError

DEADLINE = 30.0


class Durable:
    """The commit function: records each batch; can hold a batch or fail it (fault injection)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_next: BaseException | None = None

    def __call__(self, ops: list[int]) -> list[object]:
        self.entered.set()
        assert self.release.wait(DEADLINE)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.batches.append(list(ops))
        return [ValueError(f"op {op} rejected") if op < 0 else op * 10 for op in ops]

    def hold(self) -> None:
        self.entered.clear()
        self.release.clear()


async def wait_entered(durable: Durable) -> None:
    assert await asyncio.to_thread(durable.entered.wait, DEADLINE)


async def test_writers_arriving_during_a_commit_share_the_next_batch():
    durable = Durable()
    committer = GroupCommitter(durable)
    durable.hold()
    first = asyncio.create_task(committer.submit(1))
    await wait_entered(durable)                      # batch [1] is being made durable
    later = [asyncio.create_task(committer.submit(op)) for op in range(2, 7)]
    await asyncio.sleep(0)
    durable.release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert durable.batches == [[1], [2, 3, 4, 5, 6]]


async def test_each_writer_gets_its_own_error():
    durable = Durable()
    committer = GroupCommitter(durable)
    results = await asyncio.gather(*(committer.submit(op) for op in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and "op -2" in str(results[1])
    assert durable.batches == [[1, -2, 3]]


async def test_a_failed_commit_fails_its_batch_only():
    durable = Durable()
    committer = GroupCommitter(durable)
    durable.fail_next = OSError("injected: fsync failed")
    results = await asyncio.gather(*(committer.submit(op) for op in (1, 2)), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    assert durable.batches == []
    assert await committer.submit(3) == 30            # the next batch is unaffected
    assert durable.batches == [[3]]


async def test_a_cancelled_writer_is_still_committed():
    durable = Durable()
    committer = GroupCommitter(durable)
    durable.hold()
    writer = asyncio.create_task(committer.submit(1))
    other = asyncio.create_task(committer.submit(2))
    await wait_entered(durable)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    durable.release.set()
    assert await other == 20
    assert durable.batches == [[1, 2]]                # never half-applied


async def test_drain_waits_for_queued_writes_then_refuses_new_ones():
    durable = Durable()
    committer = GroupCommitter(durable)
    durable.hold()
    writers = [asyncio.create_task(committer.submit(op)) for op in (1, 2)]
    await wait_entered(durable)
    queued = asyncio.create_task(committer.submit(3))
    await asyncio.sleep(0)
    drain = asyncio.create_task(committer.drain())
    await asyncio.sleep(0.05)
    assert not drain.done()
    durable.release.set()
    await asyncio.wait_for(drain, DEADLINE)
    assert await asyncio.gather(*writers, queued) == [10, 20, 30]
    assert durable.batches == [[1, 2], [3]]
    with pytest.raises(TierDBError) as refused:
        await committer.submit(4)
    assert refused.value.kind is ErrorKind.UNAVAILABLE
    assert durable.batches == [[1, 2], [3]]


async def test_a_window_collects_writers_into_one_batch():
    durable = Durable()
    committer = GroupCommitter(durable, window_secs=0.05)
    first = asyncio.create_task(committer.submit(1))
    await asyncio.sleep(0)                           # the runner now waits out the window
    rest = [asyncio.create_task(committer.submit(op)) for op in (2, 3)]
    assert await asyncio.gather(first, *rest) == [10, 20, 30]
    assert durable.batches == [[1, 2, 3]]
