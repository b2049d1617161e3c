"""The object key layout. No other module builds keys by hand.

    {prefix}/collections/{name}/manifest/{version:020d}.json
    {prefix}/collections/{name}/wal/{seq:020d}.wal
    {prefix}/collections/{name}/segments/{segment_id}.seg

Local stores use the same keys relative to their root directory, so the uploader copies
objects verbatim.  Names are validated before they reach this module (see models.py), so a
key can never escape its prefix.
"""

from __future__ import annotations

import re

_SEGMENT_ID = re.compile(r"^[0-9a-f]{32}$")


def collection_prefix(name: str) -> str:
    return f"collections/{name}/"


def manifest_prefix(name: str) -> str:
    return f"collections/{name}/manifest/"


def manifest_key(name: str, version: int) -> str:
    return f"collections/{name}/manifest/{version:020d}.json"


def wal_prefix(name: str) -> str:
    return f"collections/{name}/wal/"


def wal_key(name: str, seq: int) -> str:
    return f"collections/{name}/wal/{seq:020d}.wal"


def segment_prefix(name: str) -> str:
    return f"collections/{name}/segments/"


def segment_key(name: str, segment_id: str) -> str:
    if not _SEGMENT_ID.match(segment_id):
        raise ValueError(f"bad segment id {segment_id!r}")
    return f"collections/{name}/segments/{segment_id}.seg"


def segment_id_of(key: str) -> str:
    """The segment id in a segment key."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def parse_number(key: str) -> int:
    """The zero-padded number in a manifest or WAL key."""
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0])


def with_prefix(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key
