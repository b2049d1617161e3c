"""What the composition root may attach to a collection, as the collection sees it.

The collection never learns its tiering policy from its attachments: every slot always holds
an object, a do-nothing one (``NO_UPLOADS``, ``NO_DEAD_LETTERS``) unless the node attached a
real worker.  The workers (``tierdb.workers``) satisfy these protocols without importing the
collection, and the collection imports nothing of the workers.
"""

from __future__ import annotations

import sys
from typing import Protocol

from ..models import CollectionStats, DlqEntry


class UploadWorker(Protocol):
    """The uploader of a memory_s3 collection."""

    def note_commit(self, last_seq: int, acked_at: float) -> None:
        """A commit through ``last_seq`` was acknowledged at ``acked_at`` (wall time)."""

    def shipped_seq(self) -> int:
        """Every WAL record up to here is in S3: local WAL files up to it may go."""

    def newest_s3_version(self, published: int) -> int:
        """The newest manifest version in S3, given the newest the collection published."""

    def fill_stats(self, stats: CollectionStats) -> None: ...

    async def run_once(self, *, force: bool = False) -> int: ...


class DeadLetters(Protocol):
    """The dead-letter queue of a memory_s3 collection (blocking: call through a thread)."""

    def __len__(self) -> int: ...

    def entries(self) -> list[DlqEntry]: ...

    def retry(self) -> int: ...

    def clear(self) -> int: ...


class _NoUploads:
    """Nothing is shipped: no WAL is held back for S3, no upload statistics."""

    def note_commit(self, last_seq: int, acked_at: float) -> None:
        pass

    def shipped_seq(self) -> int:
        return sys.maxsize

    def newest_s3_version(self, published: int) -> int:
        return published  # an S3 placement publishes its manifests to S3 itself

    def fill_stats(self, stats: CollectionStats) -> None:
        pass

    async def run_once(self, *, force: bool = False) -> int:
        return 0


class _NoDeadLetters:
    """Nothing can fail to upload: always empty."""

    def __len__(self) -> int:
        return 0

    def entries(self) -> list[DlqEntry]:
        return []

    def retry(self) -> int:
        return 0

    def clear(self) -> int:
        return 0


NO_UPLOADS: UploadWorker = _NoUploads()
NO_DEAD_LETTERS: DeadLetters = _NoDeadLetters()


def no_cache_stats() -> dict[str, int]:
    """The disk-cache statistics of a collection without a disk cache."""
    return {}
