"""The one WAL contiguity scan, shared by the local log, the S3 log, restore and GC.

A WAL is a run of files (local) or objects (S3), each named by the seq of its first record and
holding every record up to the one before the next file's first seq.  So the first seqs alone
tell which files are wholly covered by a position (e.g. a manifest's ``wal_seq``) and which
ones continue it; reading the records then checks that they really follow each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from ...errors import corrupt


def spans(firsts: Sequence[int]) -> list[tuple[int, int | None]]:
    """(first seq, last seq) of each file, sorted by first seq.  The last file's end is not
    known without reading it: None."""
    ordered = sorted(firsts)
    return [(first, nxt - 1) for first, nxt in pairwise(ordered)] + [(f, None) for f in ordered[-1:]]


def covered(firsts: Sequence[int], position: int) -> list[int]:
    """First seqs of the files whose records all have seq <= position (never the last file)."""
    return [first for first, last in spans(firsts) if last is not None and last <= position]


def after(firsts: Sequence[int], position: int) -> list[int]:
    """First seqs of the files that may hold records after position, in order."""
    ordered = sorted(firsts)
    return ordered[len(covered(ordered, position)):]


class SeqChain:
    """Follows records across files: the first one taken must not start after ``after_seq + 1``
    (else records after the position are missing), and each next one carries the next seq."""

    def __init__(self, after_seq: int) -> None:
        self.first_needed = after_seq + 1
        self.expected: int | None = None    # the seq the next record must carry, once one was seen

    @property
    def next_needed(self) -> int:
        """The seq the chain continues with."""
        return self.first_needed if self.expected is None else self.expected

    def starts_after_gap(self, first_seq: int) -> bool:
        """A file starting here would leave records missing before it."""
        return first_seq > self.next_needed

    def follow(self, seq: int, where: str, **context: Any) -> None:
        """Accept the next record, or raise CORRUPT if records are missing before it."""
        expected = self.expected
        if expected is None and seq > self.first_needed:
            expected = self.first_needed
        if expected is not None and seq != expected:
            raise corrupt(f"{where}: sequence gap, expected {expected} got {seq}", **context)
        self.expected = seq + 1

    def reach(self, last_seq: int) -> None:
        """A whole file up to last_seq was taken (without following record by record)."""
        self.expected = max(self.next_needed, last_seq + 1)
