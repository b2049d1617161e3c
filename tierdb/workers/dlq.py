"""The per-collection dead-letter queue, durable on local disk.

An entry records an upload that failed with an error that needs a human (access denied, no
such bucket, a checksum mismatch, ...); transient failures never land here.  The data itself
never leaves the local disk: the upload queue is derived from local state, so an entry only
holds the collection's uploads back (S3 keeps its last consistent state).  The uploader
re-probes with backoff and drops the entries itself once an upload succeeds (``resolved``);
``retry`` (an operator) drops them and makes the uploader try at once; ``clear`` drops them and
asks for a full snapshot first.

Every method writes the file (blocking I/O, fsync): call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import threading
import time

import msgspec

from ..durable_file import write_atomic
from ..errors import corrupt
from ..models import DlqEntry


class _DlqFile(msgspec.Struct):
    entries: list[DlqEntry] = []
    needs_snapshot: bool = False     # set by clear(): upload a full snapshot before anything else


class DeadLetterQueue:
    def __init__(self, path: str, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        self._state = self._load()
        # Bumped by every operator retry/clear: the uploader then skips its backoff once.
        self.operator_requests = 0

    def _load(self) -> _DlqFile:
        try:
            with open(self.path, "rb") as f:
                return msgspec.json.decode(f.read(), type=_DlqFile)
        except FileNotFoundError:
            return _DlqFile()
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise corrupt(f"dead-letter queue {self.path} is unreadable: {exc}", path=self.path) from exc

    def _save(self) -> None:
        write_atomic(self.path, msgspec.json.encode(self._state), fsync=self.fsync)

    def __len__(self) -> int:
        return len(self._state.entries)

    @property
    def needs_snapshot(self) -> bool:
        return self._state.needs_snapshot

    def entries(self) -> list[DlqEntry]:
        return list(self._state.entries)

    def add(self, key: str, error: str, *, code: str = "", attempts: int = 1, permanent: bool = False) -> None:
        now = time.time()
        with self._lock:
            kept = [e for e in self._state.entries if e.object != key]
            previous = next((e for e in self._state.entries if e.object == key), None)
            kept.append(
                DlqEntry(
                    object=key,
                    error=error,
                    code=code,
                    attempts=attempts + (previous.attempts if previous else 0),
                    permanent=permanent,
                    first_failed_at=previous.first_failed_at if previous else now,
                    last_failed_at=now,
                )
            )
            self._state.entries = kept
            self._save()

    def retry(self) -> int:
        """Re-enqueue every entry: the uploader tries again on its next run, without waiting
        for its backoff."""
        with self._lock:
            self.operator_requests += 1
            return self._drop()

    def resolved(self) -> int:
        """Drop the entries because uploads succeed again (nothing is lost: the queue is
        derived from local state, which the successful run has shipped)."""
        with self._lock:
            return self._drop()

    def _drop(self) -> int:
        count = len(self._state.entries)
        if count:
            self._state.entries = []
            self._save()
        return count

    def clear(self) -> int:
        """Drop the entries; the next upload is a full snapshot, so S3 becomes whole again."""
        with self._lock:
            count = len(self._state.entries)
            self._state.entries = []
            self._state.needs_snapshot = count > 0 or self._state.needs_snapshot
            self._save()
            self.operator_requests += 1
            return count

    def snapshot_done(self) -> None:
        with self._lock:
            if self._state.needs_snapshot:
                self._state.needs_snapshot = False
                self._save()
