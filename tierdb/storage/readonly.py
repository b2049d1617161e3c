"""A BlobStore wrapper that refuses every write: the S3 store of a read replica.

A reader never writes to S3 (``node.role = "reader"``).  Its API refuses writes long before
they reach storage (``read_only`` errors), so a put or delete arriving here is a bug: it raises
``ReadOnlyStoreViolation`` instead of touching S3, which makes "a reader never writes" enforced
rather than merely intended, and testable.
"""

from __future__ import annotations

from tierdb.storage.wrapper import WrapperStore


class ReadOnlyStoreViolation(RuntimeError):
    """A write reached the store of a read replica (a programming error)."""


class ReadOnlyStore(WrapperStore):
    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        raise ReadOnlyStoreViolation(f"a read replica tried to write {key!r} to S3")

    async def put_file(self, key: str, path: str) -> None:
        raise ReadOnlyStoreViolation(f"a read replica tried to write {key!r} to S3 (from a file)")

    async def delete(self, key: str) -> None:
        raise ReadOnlyStoreViolation(f"a read replica tried to delete {key!r} from S3")
