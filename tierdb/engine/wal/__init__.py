"""Write-ahead log: the ``Wal`` protocol, the record format, the local and S3 logs, and the one
contiguity scan (``tail``) that they, restore and GC share."""

from .format import (
    MAX_RECORD_BYTES,
    WalRecord,
    claim_record,
    claimed_by,
    decode_records,
    frame,
    wal_file_name,
)
from .local import LocalWal, WalFile
from .protocol import Wal
from .s3 import S3Wal, object_seqs

__all__ = [
    "MAX_RECORD_BYTES",
    "LocalWal",
    "S3Wal",
    "Wal",
    "WalFile",
    "WalRecord",
    "claim_record",
    "claimed_by",
    "decode_records",
    "frame",
    "object_seqs",
    "wal_file_name",
]
