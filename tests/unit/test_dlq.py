"""DeadLetterQueue: entries survive a restart, repeated failures of one object merge, retry /
clear / resolved drop entries (clear also asks for a full snapshot), a failed write of the
file changes nothing on disk, and an unreadable file is reported, not silently emptied."""

from __future__ import annotations

import os

import pytest

from tierdb.errors import ErrorKind, TierDBError
from tierdb.workers.dlq import DeadLetterQueue


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "dlq.json")


def test_entries_survive_a_restart_and_repeated_failures_merge(path):
    dlq = DeadLetterQueue(path)
    dlq.add("wal/1", "AccessDenied: no", code="AccessDenied", attempts=4, permanent=True)
    first = dlq.entries()[0]
    dlq.add("wal/1", "AccessDenied: still no", code="AccessDenied", attempts=2, permanent=True)
    dlq.add("seg/a", "NoSuchBucket", code="NoSuchBucket")
    reopened = DeadLetterQueue(path)
    assert len(reopened) == 2
    merged, other = reopened.entries()
    assert (merged.object, merged.attempts, merged.error) == ("wal/1", 6, "AccessDenied: still no")
    assert merged.first_failed_at == first.first_failed_at <= merged.last_failed_at
    assert (other.object, other.code, other.permanent) == ("seg/a", "NoSuchBucket", False)


def test_retry_drops_entries_and_counts_the_operator_request(path):
    dlq = DeadLetterQueue(path)
    dlq.add("wal/1", "denied")
    assert dlq.retry() == 1
    assert dlq.operator_requests == 1 and not dlq.needs_snapshot
    assert len(DeadLetterQueue(path)) == 0
    assert dlq.retry() == 0 and dlq.operator_requests == 2


def test_clear_asks_for_a_snapshot_that_survives_a_restart(path):
    dlq = DeadLetterQueue(path)
    assert dlq.clear() == 0 and not dlq.needs_snapshot      # nothing dropped: nothing to heal
    dlq.add("wal/1", "denied")
    assert dlq.clear() == 1
    reopened = DeadLetterQueue(path)
    assert reopened.needs_snapshot and len(reopened) == 0
    reopened.snapshot_done()
    assert not DeadLetterQueue(path).needs_snapshot


def test_resolved_drops_entries_without_an_operator_request(path):
    dlq = DeadLetterQueue(path)
    dlq.add("wal/1", "denied")
    dlq.add("wal/2", "denied")
    assert dlq.resolved() == 2
    assert dlq.operator_requests == 0 and len(DeadLetterQueue(path)) == 0


def test_a_failed_write_leaves_the_file_as_it_was(path, monkeypatch):
    dlq = DeadLetterQueue(path)
    dlq.add("wal/1", "denied")
    with open(path, "rb") as f:
        before = f.read()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        dlq.add("wal/2", "denied")
    with pytest.raises(OSError):
        dlq.clear()
    monkeypatch.undo()
    with open(path, "rb") as f:
        assert f.read() == before
    reopened = DeadLetterQueue(path)
    assert [e.object for e in reopened.entries()] == ["wal/1"] and not reopened.needs_snapshot


def test_an_unreadable_file_is_reported_not_emptied(path):
    with open(path, "wb") as f:
        f.write(b'{"entries": [{"object": 1')
    with pytest.raises(TierDBError) as info:
        DeadLetterQueue(path)
    assert info.value.kind is ErrorKind.CORRUPT and path in info.value.message
