"""The node's data directory at start: lock, node id, writability, leftovers; and handing
freed memory back to the OS at close."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass

from .. import keys
from ..engine import localdirs
from ..engine.dirlock import DataDirLock

log = logging.getLogger(__name__)


@dataclass
class PreparedDataDir:
    writer_id: str
    read_only_reason: str   # why the directory takes no writes, or ""


def prepare_data_dir(data_dir: str, lock: DataDirLock) -> PreparedDataDir:
    """Create the layout, take the lock, read (or create) the node id and remove the leftovers
    of interrupted drops and restores.  Blocking: call through a thread."""
    os.makedirs(keys.collections_dir(data_dir), exist_ok=True)
    lock.acquire()
    read_only_reason = not_writable_reason(data_dir)
    if read_only_reason:
        log.warning("data directory takes no writes: serving reads, refusing writes",
                    extra={"data_dir": data_dir, "reason": read_only_reason})
    node_file = keys.node_id_path(data_dir)
    if not os.path.exists(node_file) and not read_only_reason:
        with open(node_file, "w") as f:
            f.write(uuid.uuid4().hex)
    if os.path.exists(node_file):
        with open(node_file) as f:
            writer_id = f.read().strip()
    else:  # read-only and never written: this node writes nothing, any id will do
        writer_id = uuid.uuid4().hex
    if not read_only_reason:
        removed = localdirs.remove_leftovers(data_dir)
        if removed:
            log.info("leftovers of interrupted drops and restores removed", extra={"entries": removed})
        unfinished = localdirs.empty_scratch(data_dir)
        if unfinished:
            log.info("files of interrupted segment builds removed", extra={"files": unfinished})
    return PreparedDataDir(writer_id=writer_id, read_only_reason=read_only_reason)


def not_writable_reason(directory: str) -> str:
    """Why nothing can be written under directory (read-only, no permission, full), or ""."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
            pass
        return ""
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"data directory {directory} is not writable: {os.strerror(exc.errno or 0)} ({code})"
