"""The reader's follow loop (node/reader.py Follower.run): a backlog of WAL objects is applied
back to back, not one per ``node.poll_min_secs``, so a writer that commits more than 1/poll_min
WAL objects per second (s3_only: one per commit batch) cannot leave readers ever further behind."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from tierdb.config import Settings
from tierdb.node import reader as reader_module
from tierdb.node.reader import Follower


class BacklogReplica:
    """``waiting`` WAL objects are there to apply; then nothing new and no newer manifest."""

    def __init__(self, waiting: int) -> None:
        self.name = "c"
        self.waiting = waiting
        self.applied = 0
        self.describe_following = None
        self.manifest = None
        self.applied_seq = 0
        self.state = "ready"

    async def follow_wal(self) -> int:
        if self.applied < self.waiting:
            self.applied += 1
            return 1
        return 0

    async def newer_manifest(self, known_newest: int = 0) -> int | None:
        return None

    async def close(self) -> None:
        self.closed = True
        self.state = "closed"


def test_a_backlog_of_wal_objects_is_applied_without_sleeping_between_objects(monkeypatch):
    settings = Settings()
    replica = BacklogReplica(waiting=40)
    follower = Follower(SimpleNamespace(settings=settings), replica)
    slept_before_drained: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(secs: float) -> None:   # the loop's waits, recorded instead of waited
        if replica.applied < replica.waiting:
            slept_before_drained.append(secs)
        await real_sleep(0)

    monkeypatch.setattr(reader_module.asyncio, "sleep", recording_sleep)

    async def run_until_drained() -> None:
        task = asyncio.create_task(follower.run())
        while replica.applied < replica.waiting:
            await real_sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run_until_drained())
    assert replica.applied == 40
    # 40 objects at poll_min_secs (0.1 s) each would be 4 s behind; none of that wait is allowed
    assert sum(slept_before_drained) == 0, slept_before_drained


def test_after_the_backlog_polls_every_poll_min_then_backs_off_to_poll_max():
    settings = Settings()
    follower = Follower(SimpleNamespace(settings=settings), BacklogReplica(waiting=0))
    node = settings.node
    assert follower._next_interval(True) == 0.0                    # more may be waiting: poll at once
    assert follower._next_interval(False) == node.poll_min_secs     # within the busy window
    follower.last_progress -= node.busy_window_secs + 1
    intervals = [follower._next_interval(False) for _ in range(12)]
    assert intervals[0] == 2 * node.poll_min_secs
    assert intervals == sorted(intervals) and intervals[-1] == node.poll_max_secs


class StuckReplica(BacklogReplica):
    """S3 is down: the next WAL GET is stuck in the store's retries for a long time."""

    async def follow_wal(self) -> int:
        await asyncio.sleep(3600)
        return 0


def test_a_strong_read_answers_503_in_time_while_a_poll_is_stuck_in_s3_retries(monkeypatch):
    import pytest

    from tierdb.errors import ErrorKind, TierDBError

    monkeypatch.setattr(reader_module, "STRONG_READ_TIMEOUT_SECS", 0.2)
    follower = Follower(SimpleNamespace(settings=Settings()), StuckReplica(waiting=0))

    async def strong_read() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TierDBError) as caught:
            await asyncio.wait_for(follower.catch_up(), 30)   # the safety net, never the answer
        assert caught.value.kind is ErrorKind.UNAVAILABLE and "strong read" in caught.value.message
        assert not follower.lock.locked(), "the cancelled poll must release the follower's lock"
        return loop.time() - started

    assert asyncio.run(strong_read()) < 10


class SwitchingReplica(BacklogReplica):
    """Announces a newer manifest once its backlog is applied."""

    async def newer_manifest(self, known_newest: int = 0) -> int | None:
        return 2


def test_opening_a_newer_manifest_does_not_stall_following(monkeypatch):
    """Decoding a newer manifest's segments takes a while: meanwhile the current replica keeps
    applying WAL objects; then the fresh replica replays what arrived and is swapped in."""
    monkeypatch.setattr(reader_module, "RETIRED_REPLICA_GRACE_SECS", 0)
    old = SwitchingReplica(waiting=0)
    fresh = BacklogReplica(waiting=3)           # WAL objects the writer added during the open
    may_finish_open = asyncio.Event()

    async def slow_open(name: str) -> BacklogReplica:
        await may_finish_open.wait()
        return fresh

    node = SimpleNamespace(settings=Settings(), open_replica=slow_open)
    follower = Follower(node, old)

    async def scenario() -> None:
        assert await follower.poll() is False   # no WAL object; the newer manifest starts opening
        old.waiting = 5                        # the writer goes on: the old replica keeps up
        for _ in range(5):
            assert await follower.poll() is True
        assert old.applied == 5 and follower.replica is old
        may_finish_open.set()
        await asyncio.sleep(0)
        assert await follower.poll() is True   # swapped in, after replaying what arrived
        assert follower.replica is fresh and fresh.applied == 3
        await follower.close()
        assert old.closed and fresh.closed

    asyncio.run(scenario())
