"""The local WAL (``memory``, ``memory_s3``): numbered files in one directory.

Files are named by the sequence number of their first record; the active file is appended to
and fsynced once per group commit; ``rotate`` seals it.  Recovery cuts a torn or corrupt *tail*
of the last file.  A bad frame followed by a valid one, a bad frame in a sealed file, or a gap
in sequence numbers is corruption: ``scan`` raises.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ...durable_file import fsync_dir
from ...errors import ErrorKind, TierDBError, corrupt
from . import tail
from .format import WAL_SUFFIX, WalRecord, decode_records, wal_file_name

log = logging.getLogger(__name__)


@dataclass
class WalFile:
    path: str
    first_seq: int


class LocalWal:
    """WAL files in one directory.  Not thread-safe: one writer (the group committer) at a time.

    Nothing is written until the first append: ``open_for_append`` only decides where records
    go, so a collection on a read-only data directory opens and serves reads, and its first
    write fails with a clear INSUFFICIENT_STORAGE error instead of the whole engine.
    """

    def __init__(self, directory: str, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise _storage_error(exc, directory) from exc
        self._fd: int | None = None
        self._active: WalFile | None = None
        self._size = 0
        self._creates_file = False          # the active file does not exist yet
        self._pending_cut: tuple[str, int] | None = None  # a torn tail that could not be cut yet
        self.bytes_total = 0
        # Local cleanup (after a publish) and the memory_s3 uploader (after a shipment) both
        # remove covered files, from different threads: one at a time.
        self._removing = threading.Lock()

    # -- recovery ---------------------------------------------------------------------------
    def files(self) -> list[WalFile]:
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(WAL_SUFFIX))
        return [WalFile(os.path.join(self.directory, n), int(n[: -len(WAL_SUFFIX)])) for n in names]

    def scan(self, after_seq: int) -> Iterator[WalRecord]:
        """Records with seq > after_seq, in order, cutting a torn tail of the last file."""
        files = self.files()
        chain = tail.SeqChain(after_seq)
        for i, wal_file in enumerate(files):
            with open(wal_file.path, "rb") as f:
                data = f.read()
            records, valid_end = decode_records(data, source=wal_file.path)
            if valid_end < len(data):
                if i != len(files) - 1:
                    raise corrupt(
                        f"WAL {wal_file.path}: corrupt record at byte {valid_end} in a sealed file",
                        path=wal_file.path,
                        offset=valid_end,
                    )
                log.warning(
                    "cutting torn WAL tail",
                    extra={"path": wal_file.path, "offset": valid_end, "dropped_bytes": len(data) - valid_end},
                )
                try:
                    self._truncate(wal_file.path, valid_end)
                except OSError as exc:
                    # Read-only: the tail is ignored now and cut before the first append.
                    log.warning("torn WAL tail cannot be cut now; cut before the next write",
                                extra={"path": wal_file.path, "errno": exc.errno})
                    self._pending_cut = (wal_file.path, valid_end)
            if records and records[0].seq != wal_file.first_seq:
                raise corrupt(
                    f"WAL {wal_file.path}: first record has seq {records[0].seq}, file name says {wal_file.first_seq}",
                    path=wal_file.path,
                )
            for record in records:
                chain.follow(record.seq, f"WAL {wal_file.path}", path=wal_file.path)
                if record.seq > after_seq:
                    yield record

    @staticmethod
    def _truncate(path: str, size: int) -> None:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    # -- writing ----------------------------------------------------------------------------
    def open_for_append(self, next_seq: int) -> None:
        """Append to the last file, or start a new one at next_seq (both on the first append)."""
        files = self.files()
        if files:
            self._active = files[-1]
            self._size = os.path.getsize(self._active.path)
            if self._pending_cut is not None and self._pending_cut[0] == self._active.path:
                self._size = self._pending_cut[1]
        else:
            self._active = WalFile(os.path.join(self.directory, wal_file_name(next_seq)), next_seq)
            self._size = 0
        self._creates_file = not files
        self.bytes_total = sum(os.path.getsize(f.path) for f in files)

    def _ensure_open(self) -> None:
        """Open the active file for appending (creating it, cutting a pending torn tail)."""
        if self._fd is not None:
            return
        assert self._active is not None, "WAL not opened for append"
        path = self._active.path
        try:
            if self._pending_cut is not None:
                self._truncate(*self._pending_cut)
                self._pending_cut = None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if self._creates_file:
                    fsync_dir(self.directory)
                self._size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            raise _storage_error(exc, path) from exc
        self._fd = fd
        self._creates_file = False

    def append(self, frames: list[bytes], first_seq: int = 0) -> None:
        """Write frames and make them durable; on failure the file is cut back and the error raised."""
        self._ensure_open()
        assert self._fd is not None
        data = b"".join(frames)
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._cut_back(self._size)
            raise _storage_error(exc, self._active.path if self._active else self.directory) from exc
        self._size += len(data)
        self.bytes_total += len(data)

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)  # type: ignore[arg-type]
        except OSError:
            log.exception("could not cut the WAL back after a failed write", extra={"path": self.directory})
            raise

    def rotate(self, next_seq: int) -> None:
        """Seal the active file; the next record starts a new file (if the active one has data)."""
        if self._size == 0:
            return
        self.close()
        self._active = WalFile(os.path.join(self.directory, wal_file_name(next_seq)), next_seq)
        self._size = 0
        self._creates_file = True
        self._ensure_open()

    def sealed_files(self) -> list[tuple[WalFile, int]]:
        """Sealed files with the seq of their last record."""
        files = self.files()
        by_first = {f.first_seq: f for f in files}
        return [
            (by_first[first], last)
            for first, last in tail.spans(list(by_first))
            if last is not None and (self._active is None or by_first[first].path != self._active.path)
        ]

    def active_size(self) -> int:
        return self._size

    def remove_covered(self, covered_seq: int, *, keep_from_seq: int | None = None) -> int:
        """Delete sealed files whose records all have seq <= covered_seq (and < keep_from_seq).
        Safe to call from several threads: they take turns, each seeing what the other left."""
        with self._removing:
            return self._remove_covered(covered_seq, keep_from_seq)

    def _remove_covered(self, covered_seq: int, keep_from_seq: int | None) -> int:
        files = {f.first_seq: f for f in self.files()}
        removed = 0
        for first, last_seq in tail.spans(list(files)):
            wal_file = files[first]
            if last_seq is None or last_seq > covered_seq or (keep_from_seq is not None and last_seq >= keep_from_seq):
                break
            if self._active is not None and wal_file.path == self._active.path:
                break
            size = os.path.getsize(wal_file.path)
            os.unlink(wal_file.path)
            self.bytes_total -= size
            removed += 1
        if removed:
            fsync_dir(self.directory)
        return removed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _storage_error(exc: OSError, path: str) -> TierDBError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return TierDBError(
            ErrorKind.INSUFFICIENT_STORAGE,
            f"cannot write the WAL at {path}: {os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})",
            path=path,
            errno=exc.errno,
        )
    return TierDBError(ErrorKind.UNAVAILABLE, f"WAL write failed at {path}: {exc}", path=path, errno=exc.errno)
