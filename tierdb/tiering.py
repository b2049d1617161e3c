"""The three tiering policies, decided here and nowhere else.

A policy name becomes a ``Policy`` (flags: where the WAL and the segments live, who ships and
who deletes), and ``placement`` turns a policy plus the node's stores and settings into a
``Placement``: the WAL kind, the segment store, the caches, and whether an uploader and a
garbage collector run.  The composition root (``tierdb.node``) builds what a placement names;
every other module reads these flags instead of comparing policy names.

A base module: it imports nothing of TierDB but ``errors`` (stores and settings are passed in).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import invalid

MEMORY = "memory"
MEMORY_S3 = "memory_s3"
S3_ONLY = "s3_only"
DEFAULT_POLICY = MEMORY
POLICY_NAMES: tuple[str, ...] = (MEMORY, MEMORY_S3, S3_ONLY)
# The seed spellings, accepted wherever a policy is configured.
_ALIASES = {"Memory": MEMORY, "MemoryS3": MEMORY_S3, "S3Only": S3_ONLY}


@dataclass(frozen=True)
class Policy:
    name: str
    wal_in_s3: bool          # each commit batch is one S3 object; ack after its PUT
    segments_in_s3: bool     # segments and manifests live in S3 (local disk is a cache)
    uploads: bool            # an uploader ships local WAL, segments and manifests to S3
    needs_s3: bool
    local_cleanup: bool      # flush/merge delete local files the latest manifest no longer needs

    @property
    def grows_on_flush(self) -> bool:
        """A flush may grow the largest segment (compaction.flush_grow_ratio) only where segments
        stay on local disk: where they go to S3, every flush would re-upload the whole grown
        segment (bytes shipped per flush ~ the collection, not the flush)."""
        return not self.needs_s3

    @property
    def partitioned_segments(self) -> bool:
        """Flushes and merges write partitioned (IVF) segments, read by byte range, where
        segments live in S3 and RAM is only a cache; hnswlib graphs where the whole segment
        stays in RAM (docs/architecture.md, "Two segment layouts")."""
        return self.segments_in_s3

    @property
    def restores_to_disk(self) -> bool:
        """A full local copy backed by S3: a node without it restores it from S3."""
        return self.needs_s3 and not self.segments_in_s3


POLICIES: dict[str, Policy] = {
    MEMORY: Policy(MEMORY, wal_in_s3=False, segments_in_s3=False, uploads=False, needs_s3=False, local_cleanup=True),
    MEMORY_S3: Policy(MEMORY_S3, wal_in_s3=False, segments_in_s3=False, uploads=True, needs_s3=True, local_cleanup=True),
    S3_ONLY: Policy(S3_ONLY, wal_in_s3=True, segments_in_s3=True, uploads=False, needs_s3=True, local_cleanup=False),
}


def normalize_policy(value: str) -> str:
    """Canonical policy name; accepts the seed spellings Memory, MemoryS3, S3Only."""
    policy = _ALIASES.get(value, value)
    if policy not in POLICIES:
        raise invalid(
            f"unknown tiering_policy {value!r}: expected one of {', '.join(POLICY_NAMES)}",
            field="tiering_policy",
        )
    return policy


def policy_of(name: str) -> Policy:
    """The policy of a (possibly aliased) name; a 400 for an unknown one."""
    return POLICIES[normalize_policy(name)]


class WalKind(enum.Enum):
    LOCAL = "local"   # WAL files in the data directory, group-committed by fsync
    S3 = "s3"         # one S3 object per commit batch, written put-if-absent


@dataclass(frozen=True)
class Stores:
    """The node's stores, as the composition root holds them."""

    local: Any                                   # BlobStore over the data directory
    remote: Any | None                           # BlobStore over S3, or None
    disk_cached: Callable[[str], Any]            # collection name -> the remote behind its disk cache


@dataclass(frozen=True)
class Placement:
    """Where one collection's data lives and which workers serve it."""

    policy: Policy
    wal: WalKind
    segment_store: Any              # BlobStore that holds segments and manifests
    disk_cache: Any | None          # the DiskCachedStore in front of S3, when there is one
    ram_cache_bytes: int | None     # bounded RAM of loaded segments; None: every segment resident
    group_commit_secs: float        # how long a commit waits for companions (S3 WAL PUTs)
    uploader: bool                  # ships the local copy to S3 (with a dead-letter queue)
    remote_gc: bool                 # deletes S3 objects no kept manifest needs


def placement(policy: Policy, stores: Stores, settings: Any, name: str) -> Placement:
    """The placement of collection ``name`` under ``policy``.  ``settings`` is the node's
    Settings.  A policy that needs S3 on a node without S3 is a 400 naming the fix."""
    if policy.needs_s3 and stores.remote is None:
        raise invalid(
            f"collection {name!r} uses tiering_policy {policy.name!r}, which needs S3: set s3.bucket "
            "(TIERDB_S3_BUCKET) and s3.endpoint for MinIO/SeaweedFS",
            collection=name,
        )
    disk_cache = stores.disk_cached(name) if policy.segments_in_s3 else None
    return Placement(
        policy=policy,
        wal=WalKind.S3 if policy.wal_in_s3 else WalKind.LOCAL,
        segment_store=disk_cache if disk_cache is not None else stores.local,
        disk_cache=disk_cache,
        ram_cache_bytes=settings.cache.ram_bytes if policy.segments_in_s3 else None,
        group_commit_secs=settings.uploader.group_commit_ms / 1000 if policy.wal_in_s3 else 0.0,
        uploader=policy.uploads,
        remote_gc=policy.needs_s3,
    )
