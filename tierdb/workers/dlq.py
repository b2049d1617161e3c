"""The per-collection dead-letter queue, durable on local disk.

An entry records an upload that failed permanently or exhausted its retries.  The data itself
never leaves the local disk: the upload queue is derived from local state, so the DLQ only
blocks the collection's uploads (S3 keeps its last consistent state) until an operator
retries (the entries are re-enqueued) or clears it (the next snapshot re-uploads a complete
state).
"""

from __future__ import annotations

import os
import threading
import time

import msgspec

from ..errors import corrupt
from ..models import DlqEntry


class _DlqFile(msgspec.Struct):
    entries: list[DlqEntry] = []
    needs_snapshot: bool = False     # set by clear(): upload a full snapshot before anything else


class DeadLetterQueue:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._state = self._load()

    def _load(self) -> _DlqFile:
        try:
            with open(self.path, "rb") as f:
                return msgspec.json.decode(f.read(), type=_DlqFile)
        except FileNotFoundError:
            return _DlqFile()
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise corrupt(f"dead-letter queue {self.path} is unreadable: {exc}", path=self.path) from exc

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(self._state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

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
        """Re-enqueue every entry (the uploader tries them again on its next run)."""
        with self._lock:
            count = len(self._state.entries)
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
            return count

    def snapshot_done(self) -> None:
        with self._lock:
            if self._state.needs_snapshot:
                self._state.needs_snapshot = False
                self._save()
