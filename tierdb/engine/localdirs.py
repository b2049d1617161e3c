"""Collection directories on local disk: which exist, and how they appear and disappear atomically.

A collection exists locally once its directory ``collections/<name>/`` holds a manifest.  Whole
directories come and go by rename, so a crash never leaves a half-built or half-deleted one in
that place:

- drop / replace: ``collections/<name>`` is renamed to ``collections/.dropped-<name>-<id>``, then
  deleted; leftovers are deleted at the next start.
- restore: everything is written under ``collections/.restore-<name>-<id>/`` and the finished
  directory is renamed into place as the last step; leftovers are deleted at the next start (the
  restore is then redone from S3).
"""

from __future__ import annotations

import os
import shutil
import uuid

from .. import keys
from ..crashpoints import crash_point
from ..durable_file import fsync_dir
from ..keys import DROPPED_PREFIX, collection_dir, collections_dir, scratch_dir

RESTORE_PREFIX = ".restore-"


def has_manifest(data_dir: str, name: str) -> bool:
    """True if the collection's local directory holds at least one manifest (so it exists)."""
    directory = os.path.join(data_dir, *keys.manifest_prefix(name).strip("/").split("/"))
    try:
        return any(n.endswith(".json") and not n.startswith(".") for n in os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return False


def holds_files(path: str) -> bool:
    """True if any regular file below ``path`` is not a temp file (dot-prefixed)."""
    for _, _, files in os.walk(path):
        if any(not f.startswith(".") for f in files):
            return True
    return False


def staging_dir(data_dir: str, name: str) -> str:
    """A fresh staging root for restoring ``name``; it has the data directory's layout."""
    return os.path.join(collections_dir(data_dir), f"{RESTORE_PREFIX}{name}-{uuid.uuid4().hex[:8]}")


def retire(data_dir: str, name: str) -> None:
    """Remove ``collections/<name>`` atomically: rename it aside (durably), then delete it."""
    path = collection_dir(data_dir, name)
    if not os.path.exists(path):
        return
    parent = collections_dir(data_dir)
    tomb = os.path.join(parent, keys.dropped_dir_name(name, uuid.uuid4().hex[:8]))
    os.rename(path, tomb)
    fsync_dir(parent)
    shutil.rmtree(tomb, ignore_errors=True)


def remove_leftovers(data_dir: str, name: str | None = None) -> list[str]:
    """Delete the tombs and staging roots of interrupted drops and restores (of ``name``, or of
    every collection); returns what was removed.  Only call this while no restore runs."""
    parent = collections_dir(data_dir)
    os.makedirs(parent, exist_ok=True)
    removed = []
    for entry in os.listdir(parent):
        for prefix in (DROPPED_PREFIX, RESTORE_PREFIX):
            # "<prefix><name>-<8 hex>"; names may contain '-', so compare the whole name part
            if entry.startswith(prefix) and (name is None or entry[len(prefix):].rsplit("-", 1)[0] == name):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
                removed.append(entry)
    return removed


def empty_scratch(data_dir: str) -> list[str]:
    """Delete the segment files of builds a crash interrupted (scratch_dir); returns their
    names.  Only at start, before any build runs."""
    scratch = scratch_dir(data_dir)
    try:
        entries = os.listdir(scratch)
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            os.unlink(os.path.join(scratch, entry))
        except FileNotFoundError:
            pass
    return entries


def publish_staged(data_dir: str, staging: str, name: str) -> None:
    """Make the collection restored under ``staging`` the collection ``name``: fsync its
    directories, retire whatever is at ``collections/<name>`` and rename the staged one there."""
    staged = collection_dir(staging, name)
    for directory, _, _ in os.walk(staged, topdown=False):
        fsync_dir(directory)
    retire(data_dir, name)
    crash_point("restore:old_retired")
    os.rename(staged, collection_dir(data_dir, name))
    fsync_dir(collections_dir(data_dir))
    shutil.rmtree(staging, ignore_errors=True)

