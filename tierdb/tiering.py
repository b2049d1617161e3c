"""The three tiering policies as data: where the WAL and the segments live, when a write is
acknowledged, what is shipped to S3 and who deletes old objects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    name: str
    wal_in_s3: bool          # each commit batch is one S3 object; ack after its PUT
    segments_in_s3: bool     # segments and manifests live in S3 (local disk is a cache)
    uploads: bool            # an uploader ships local WAL, segments and manifests to S3
    needs_s3: bool
    local_cleanup: bool      # flush/merge delete local files the latest manifest no longer needs


POLICIES: dict[str, Policy] = {
    "memory": Policy("memory", wal_in_s3=False, segments_in_s3=False, uploads=False, needs_s3=False, local_cleanup=True),
    "memory_s3": Policy("memory_s3", wal_in_s3=False, segments_in_s3=False, uploads=True, needs_s3=True, local_cleanup=True),
    "s3_only": Policy("s3_only", wal_in_s3=True, segments_in_s3=True, uploads=False, needs_s3=True, local_cleanup=False),
}
