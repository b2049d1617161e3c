"""An exclusive lock on a data directory: one TierDB process (server, embedded engine or
offline tool) at a time.  flock is released by the kernel when the process dies, so a
kill -9 never leaves a stale lock behind."""

from __future__ import annotations

import errno
import fcntl
import os

from ..errors import ErrorKind, TierDBError

LOCK_FILE = "LOCK"


class DataDirLock:
    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.  On a read-only data directory the existing lock file is opened
        read-only (flock works on such an fd on Linux, so a second process is still kept out);
        without a lock file there, the directory is not locked (nothing can write it anyway)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            writable = True
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TierDBError(
                ErrorKind.CONFLICT,
                f"data directory {os.path.dirname(self.path)} is in use by another TierDB process "
                f"(pid {holder}); stop it first",
                path=self.path,
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
