"""A BlobStore on a local directory: one file per key under ``root``.

Writes are atomic and durable: the bytes go to a temporary file in the target directory,
which is fsynced and then renamed (``os.replace``) or, for ``if_absent``, hard-linked
(``os.link`` fails if the name exists, so exactly one of several concurrent writers wins);
finally the directory is fsynced so the new name survives a power loss.

The key rules (``validate_key`` / ``validate_prefix``) and the two common errors live here
because every store shares them: the uploader copies keys verbatim between stores, so a key
must be valid, and fail the same way, in all of them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from tierdb.durable_file import fsync_dir
from tierdb.errors import ErrorKind, TierDBError, invalid, not_found
from tierdb.storage.base import ObjectInfo

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TMP_SUFFIX = ".tmp"
_COPY_CHUNK = 1 << 20  # put_file copies its source in pieces this big
# errnos that mean "this disk cannot take the write", reported as 507.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def validate_key(key: str) -> str:
    """Reject keys that could escape a store's root or collide with its temp files.

    A key is a relative, '/'-separated path of non-empty segments; no segment may start
    with '.' (that excludes '.', '..' and the store's hidden temp files); no backslash, no NUL.
    """
    if not isinstance(key, str) or not key:
        raise invalid("object key must be a non-empty string", key=key)
    _check_path(key, what="object key")
    if key.endswith("/"):
        raise invalid(f"object key {key!r} must not end with '/'", key=key)
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, but empty and a trailing '/' are allowed."""
    if not isinstance(prefix, str):
        raise invalid("list prefix must be a string", prefix=prefix)
    if prefix:
        _check_path(prefix.removesuffix("/") or "/", what="list prefix")
    return prefix


def _check_path(path: str, *, what: str) -> None:
    if "\x00" in path or "\\" in path:
        raise invalid(f"{what} {path!r} contains a NUL or backslash", key=path)
    if path.startswith("/"):
        raise invalid(f"{what} {path!r} must be relative", key=path)
    # The last segment of a prefix may be partial ("wal/0000"), but still not hidden.
    for segment in path.split("/"):
        if not segment or segment.startswith("."):
            raise invalid(
                f"{what} {path!r} has an empty or dot-prefixed segment", key=path
            )


def validate_range(key: str, start: int, end: int) -> str:
    """Check a byte range ``[start, end)`` for ``get_range``: integers, ``0 <= start < end``.

    An empty range is rejected: S3 cannot express one (``Range: bytes=a-b`` is inclusive), and
    a caller that may have empty ranges uses ``ranges.get_ranges``, which answers them locally.
    """
    validate_key(key)
    if type(start) is not int or type(end) is not int:  # bool is an int; a range of True is a bug
        raise invalid(
            f"byte range of {key!r} must be two integers, got {start!r}, {end!r}",
            key=key, start=start, end=end,
        )
    if not 0 <= start < end:
        raise invalid(
            f"byte range [{start}, {end}) of {key!r} is empty or negative "
            "(need 0 <= start < end)",
            key=key, start=start, end=end,
        )
    return key


def range_not_satisfiable(key: str, start: int, end: int, size: int | None = None) -> TierDBError:
    """The error for a range that starts at or past the end of the object (S3's 416)."""
    known = f" of {size} bytes" if size is not None else ""
    return invalid(
        f"byte range [{start}, {end}) starts past the end of object {key!r}{known}",
        key=key, start=start, end=end, size=size,
    )


def slice_range(key: str, data: bytes, start: int, end: int) -> bytes:
    """``data[start:end]`` with S3's rules: an end past the object is clamped, a start at or
    past it is ``range_not_satisfiable``.  The range must already be validated."""
    if start >= len(data):
        raise range_not_satisfiable(key, start, end, len(data))
    return bytes(data[start:end])


def object_not_found(key: str) -> TierDBError:
    return not_found(f"object {key!r} not found", key=key)


def object_exists(key: str) -> TierDBError:
    """The error for a put(if_absent=True) that lost: the key already holds an object."""
    return TierDBError(ErrorKind.PRECONDITION, f"object {key!r} already exists", key=key)


class LocalStore:
    """Objects as files under ``root``.  Blocking I/O runs in worker threads.

    Limitation shared by every filesystem: a key cannot be both an object and a
    "directory" of other keys (``a/b`` and ``a/b/c``); such a put is rejected as INVALID.
    The key layout in tierdb.keys never does that.
    """

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"LocalStore(root={self.root!r})"

    # -- BlobStore ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        return await self._run("get", key, path, self._read, key, path)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        validate_range(key, start, end)
        path = self._path(key)
        return await self._run("get_range", key, path, self._read_range, key, path, start, end)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        data = bytes(data)
        await self._run("put", key, path, self._write, key, path, lambda f: f.write(data), if_absent)

    async def put_file(self, key: str, path: str) -> None:
        target = self._path(key)
        await self._run("put", key, target, self._write, key, target, lambda f: _copy_from(path, f), False)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run("delete", key, path, self._unlink, path)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        return await self._run("list", prefix, self.root, self._list, prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return await self._run("head", key, path, self._stat, key, path)

    async def close(self) -> None:
        return None

    # -- helpers -----------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        return os.path.join(self.root, *key.split("/"))

    async def _run(
        self, op: str, key: str, path: str, fn: Callable[..., T], *args: object
    ) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except TierDBError:
            raise
        except OSError as exc:
            raise local_file_error(exc, op, key, path) from exc

    @staticmethod
    def _read(key: str, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise object_not_found(key) from None

    @staticmethod
    def _read_range(key: str, path: str, start: int, end: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise object_not_found(key) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise object_not_found(key)
            if start >= st.st_size:
                raise range_not_satisfiable(key, start, end, st.st_size)
            # Objects are replaced by rename, never written in place: this fd keeps seeing the
            # version it opened, so st_size stays right for the whole read.
            want = min(end, st.st_size) - start
            chunks = []
            while want > 0:
                chunk = os.pread(fd, want, start)
                if not chunk:
                    break
                chunks.append(chunk)
                start += len(chunk)
                want -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _write(self, key: str, path: str, fill: Callable[[BinaryIO], object], if_absent: bool) -> None:
        """Publish the bytes ``fill`` writes into a temporary file at ``path``, atomically."""
        directory = os.path.dirname(path)
        self._makedirs(directory, key)
        if os.path.isdir(path):
            raise _dir_conflict(key)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=_TMP_SUFFIX, dir=directory
        )
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise object_exists(key) from None
            else:
                os.replace(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass  # os.replace consumed it
        if self._fsync:
            fsync_dir(directory)

    def _makedirs(self, directory: str, key: str) -> None:
        """Create missing parents, fsyncing each parent so new entries are durable.

        Concurrent writers may create the same directories: only a non-directory in the
        way is a conflict.
        """
        missing = []
        d = directory
        while True:
            try:
                if not stat.S_ISDIR(os.stat(d).st_mode):
                    raise _dir_conflict(key)
                break
            except FileNotFoundError:
                missing.append(d)
                d = os.path.dirname(d)
            except NotADirectoryError:  # a file further up the path
                raise _dir_conflict(key) from None
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise _dir_conflict(key) from None
            if self._fsync:
                fsync_dir(os.path.dirname(d))

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        if self._fsync:
            fsync_dir(os.path.dirname(path))

    def _stat(self, key: str, path: str) -> ObjectInfo | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the deepest directory the prefix names completely.
        base_parts = prefix.split("/")[:-1]
        base = os.path.join(self.root, *base_parts)
        out: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            rel_prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.startswith("."):  # temp files and anything not written by us
                    continue
                key = rel_prefix + name
                if not key.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue  # deleted while listing
                out.append(ObjectInfo(key=key, size=size))
        out.sort(key=lambda info: info.key)
        return out



def _copy_from(source: str, target: BinaryIO) -> None:
    with open(source, "rb") as f:
        shutil.copyfileobj(f, target, _COPY_CHUNK)


def _dir_conflict(key: str) -> TierDBError:
    return invalid(
        f"object key {key!r} conflicts with an existing key (a key cannot be both an "
        "object and a prefix of other keys in a local store)",
        key=key,
    )


def local_file_error(exc: OSError, op: str, key: str, path: str) -> TierDBError:
    """A failed local file operation (writing a local store's file, reading a file to upload)."""
    where = str(exc.filename or path)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    kind = (
        ErrorKind.INSUFFICIENT_STORAGE if exc.errno in _STORAGE_ERRNOS else ErrorKind.UNAVAILABLE
    )
    logger.error(
        "local storage %s failed",
        op,
        extra={"op": op, "key": key, "path": where, "errno": exc.errno, "kind": kind.value},
    )
    return TierDBError(
        kind,
        f"local storage {op} of {key!r} failed at {where}: {reason}",
        op=op,
        key=key,
        path=where,
        errno=exc.errno,
        retryable=False,
    )
