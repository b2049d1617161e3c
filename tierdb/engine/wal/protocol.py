"""What a collection needs from its write-ahead log, whichever tier holds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .format import WalRecord


class Wal(Protocol):
    """A log of framed records with strictly increasing seqs (``LocalWal``, ``S3Wal``).

    Called from one thread at a time (the group committer's worker, or recovery).
    """

    bytes_total: int

    def scan(self, after_seq: int) -> Iterator[WalRecord]:
        """The records with seq > after_seq, in order; CORRUPT on damage or a gap."""
        ...

    def open_for_append(self, next_seq: int) -> None:
        """Decide where the next record (seq ``next_seq``) goes; writes nothing yet."""
        ...

    def append(self, frames: list[bytes], first_seq: int = 0) -> None:
        """Make the framed records durable; PRECONDITION if another writer already wrote first_seq."""
        ...

    def rotate(self, next_seq: int) -> None:
        """Seal what was written; the next record (seq ``next_seq``) starts a new file or object."""
        ...

    def remove_covered(self, covered_seq: int, *, keep_from_seq: int | None = None) -> int:
        """Delete what only holds records up to covered_seq; how many files were removed."""
        ...

    def close(self) -> None:
        ...
