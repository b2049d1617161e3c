"""TierDB: a tiered vector storage engine with S3 as the source of truth.

    import tierdb

    db = tierdb.TierDB("http://127.0.0.1:8080")        # HTTP client (tierdb.AsyncTierDB for asyncio)
    db = tierdb.open("./data")                          # embedded: the engine in this process

The client names are imported on first use, so ``import tierdb`` stays cheap (the CLI and the
server import only what they need).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY = {
    "open": "tierdb.embedded",
    "EmbeddedTierDB": "tierdb.embedded",
    "TierDB": "tierdb.client",
    "AsyncTierDB": "tierdb.client",
    "TierDBClientError": "tierdb.client",
    "NotFound": "tierdb.client",
    "InvalidRequest": "tierdb.client",
    "Conflict": "tierdb.client",
    "Hit": "tierdb.client",
    "Document": "tierdb.client",
    "CollectionInfo": "tierdb.client",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ does the import
    from .client import (
        AsyncTierDB,
        CollectionInfo,
        Conflict,
        Document,
        Hit,
        InvalidRequest,
        NotFound,
        TierDB,
        TierDBClientError,
    )
    from .embedded import EmbeddedTierDB, open


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tierdb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
