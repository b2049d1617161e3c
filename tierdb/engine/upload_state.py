"""The uploader's durable progress file (``upload_state.json``, memory_s3).

Written by the uploader after each success, and by a restore from S3 (which leaves a copy
that S3 already holds entirely).  Both import it from here, below the workers.
"""

from __future__ import annotations

import msgspec

from ..durable_file import write_atomic


class UploadState(msgspec.Struct):
    s3_version: int = 0            # the newest manifest version this node wrote to S3
    local_version: int = 0         # the local manifest version it was made from
    shipped_seq: int = 0           # every WAL record up to here is in S3 (as WAL or in a manifest)
    segments: list[str] = []       # segment ids in S3
    caught_up_at: float = 0.0      # when S3 last held everything acknowledged
    oldest_unshipped_at: float = 0.0  # ack time of the oldest write S3 lacks; 0 = none


def load_state(path: str) -> UploadState | None:
    """The saved state; None if the collection was never uploaded."""
    try:
        with open(path, "rb") as f:
            return msgspec.json.decode(f.read(), type=UploadState)
    except FileNotFoundError:
        return None


def save_state(path: str, state: UploadState, *, fsync: bool = True) -> None:
    write_atomic(path, msgspec.json.encode(state), fsync=fsync)
