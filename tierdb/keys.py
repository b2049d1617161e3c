"""The object key layout and the data directory layout.  No other module builds or parses
keys or local file names by hand.

Objects (in S3 under ``{s3.prefix}/``; in a LocalStore relative to its root):

    collections/{name}/manifest/{version:020d}.json
    collections/{name}/wal/{first_seq:020d}.wal
    collections/{name}/segments/{segment_id}.seg

The data directory is the root of the node's LocalStore, so the uploader copies objects
verbatim; beside the objects it holds:

    {data_dir}/node_id                                  this node's writer id
    {data_dir}/collections/{name}/wal/{first_seq:020d}.wal   local WAL files (memory, memory_s3)
    {data_dir}/collections/{name}/dlq.json              dead-letter queue (memory_s3)
    {data_dir}/collections/{name}/upload_state.json     uploader progress (memory_s3)
    {data_dir}/collections/.dropped-{name}-{suffix}     a collection being dropped

Names are validated before they reach the builders (see models.py), so a key can never escape
its prefix.  The parsers accept only keys of this layout and return None for anything else.
"""

from __future__ import annotations

import os
import re

COLLECTIONS = "collections"
COLLECTIONS_PREFIX = f"{COLLECTIONS}/"  # lists every collection's objects
NODE_ID_FILE = "node_id"
DLQ_FILE = "dlq.json"
UPLOAD_STATE_FILE = "upload_state.json"
DROPPED_PREFIX = ".dropped-"
WAL_SUFFIX = ".wal"

_SEGMENT_ID = re.compile(r"^[0-9a-f]{32}$")
_MANIFEST_KEY = re.compile(r"collections/[^/]+/manifest/([0-9]+)\.json")
_WAL_KEY = re.compile(r"collections/[^/]+/wal/([0-9]+)\.wal")
_SEGMENT_KEY = re.compile(r"collections/[^/]+/segments/([^/.]+)\.seg")
_WAL_FILE_NAME = re.compile(r"([0-9]+)\.wal")


# -- object keys ---------------------------------------------------------------------------


def collection_prefix(name: str) -> str:
    return f"{COLLECTIONS}/{name}/"


def manifest_prefix(name: str) -> str:
    return f"{COLLECTIONS}/{name}/manifest/"


def manifest_key(name: str, version: int) -> str:
    return f"{COLLECTIONS}/{name}/manifest/{version:020d}.json"


def wal_prefix(name: str) -> str:
    return f"{COLLECTIONS}/{name}/wal/"


def wal_key(name: str, seq: int) -> str:
    return wal_prefix(name) + wal_file_name(seq)


def segment_prefix(name: str) -> str:
    return f"{COLLECTIONS}/{name}/segments/"


def segment_key(name: str, segment_id: str) -> str:
    if not _SEGMENT_ID.match(segment_id):
        raise ValueError(f"bad segment id {segment_id!r}")
    return f"{COLLECTIONS}/{name}/segments/{segment_id}.seg"


def with_prefix(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


# -- parsing object keys -------------------------------------------------------------------


def collection_of(key: str) -> str:
    """The collection a key or list prefix belongs to ("" for anything outside collections/)."""
    parts = key.split("/", 2)
    return parts[1] if len(parts) > 2 and parts[0] == COLLECTIONS else ""


def parse_manifest_key(key: str) -> int | None:
    """The version in a manifest key; None if ``key`` is not one."""
    match = _MANIFEST_KEY.fullmatch(key)
    return int(match[1]) if match else None


def parse_wal_key(key: str) -> int | None:
    """The first sequence number in a WAL object key; None if ``key`` is not one."""
    match = _WAL_KEY.fullmatch(key)
    return int(match[1]) if match else None


def segment_id_of(key: str) -> str | None:
    """The segment id in a segment key; None if ``key`` is not one."""
    match = _SEGMENT_KEY.fullmatch(key)
    return match[1] if match else None


def parse_number(key: str) -> int:
    """The number in a manifest or WAL key; ValueError for any other key."""
    number = parse_manifest_key(key)
    if number is None:
        number = parse_wal_key(key)
    if number is None:
        raise ValueError(f"{key!r} is neither a manifest nor a WAL key")
    return number


def is_immutable(key: str) -> bool:
    """Segments and WAL objects: written once, safe to cache forever (manifests are not)."""
    return segment_id_of(key) is not None or parse_wal_key(key) is not None


# -- the data directory --------------------------------------------------------------------


def wal_file_name(first_seq: int) -> str:
    """A WAL file's name: the last part of its object key and its name in the local WAL dir."""
    return f"{first_seq:020d}{WAL_SUFFIX}"


def parse_wal_file_name(file_name: str) -> int | None:
    """The first sequence number of a local WAL file; None for any other file name."""
    match = _WAL_FILE_NAME.fullmatch(file_name)
    return int(match[1]) if match else None


def collections_dir(data_dir: str) -> str:
    return os.path.join(data_dir, COLLECTIONS)


def collection_dir(data_dir: str, name: str) -> str:
    return _local_path(data_dir, collection_prefix(name))


def scratch_dir(data_dir: str) -> str:
    """Temporary files of segment builds: spills are unlinked at once; a built segment file
    lives until its upload is done, and the next start empties the directory after a crash."""
    return os.path.join(data_dir, "scratch")


def wal_dir(data_dir: str, name: str) -> str:
    return _local_path(data_dir, wal_prefix(name))


def dlq_path(data_dir: str, name: str) -> str:
    return _local_path(data_dir, collection_prefix(name), DLQ_FILE)


def upload_state_path(data_dir: str, name: str) -> str:
    return _local_path(data_dir, collection_prefix(name), UPLOAD_STATE_FILE)


def node_id_path(data_dir: str) -> str:
    return os.path.join(data_dir, NODE_ID_FILE)


def dropped_dir_name(name: str, suffix: str) -> str:
    """The name a dropped collection's directory takes in ``collections_dir`` before removal."""
    return f"{DROPPED_PREFIX}{name}-{suffix}"


def _local_path(data_dir: str, prefix: str, *names: str) -> str:
    return os.path.join(data_dir, *prefix.strip("/").split("/"), *names)
