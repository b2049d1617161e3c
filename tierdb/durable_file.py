"""Crash-safe replacement of a small local state file (``dlq.json``, ``upload_state.json``).

``write_atomic`` writes a temporary file next to the target, fsyncs it, renames it over the
target and fsyncs the directory, so after a crash the file holds either the old or the new
bytes, and the new name survives a power loss.  ``fsync=False`` (``storage.fsync = false``)
skips both fsyncs, like the WAL does.  Blocking: call it through ``asyncio.to_thread`` from
async code.  ``fsync_dir`` (make a rename or a new file in a directory durable) is the one
copy the WAL, the local store and the atomic collection directories use.
"""

from __future__ import annotations

import os


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
