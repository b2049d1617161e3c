"""Python clients of TierDB: ``TierDB`` (sync) and ``AsyncTierDB`` over HTTP.

``tierdb.open(path)`` (tierdb/embedded.py) gives the same interface as ``TierDB`` with the engine
running in-process.  All three return the types of ``tierdb.client.types`` and raise the
exceptions of ``tierdb.client.errors``.
"""

from __future__ import annotations

from .aio import AsyncTierDB
from .errors import (
    Conflict,
    ConnectionFailed,
    Fenced,
    Forbidden,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ReadOnly,
    RequestTimeout,
    ServerError,
    TierDBClientError,
    Unauthorized,
    Unavailable,
)
from .sync import TierDB
from .types import CollectionInfo, CollectionStatus, CompactResult, DlqEntry, Document, Hit, HnswParams, WarmStatus

__all__ = [
    "AsyncTierDB",
    "CollectionInfo",
    "CollectionStatus",
    "CompactResult",
    "Conflict",
    "ConnectionFailed",
    "DlqEntry",
    "Document",
    "Fenced",
    "Forbidden",
    "ReadOnly",
    "Hit",
    "HnswParams",
    "InsufficientStorage",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "ServerError",
    "TierDB",
    "TierDBClientError",
    "Unauthorized",
    "Unavailable",
    "WarmStatus",
]
