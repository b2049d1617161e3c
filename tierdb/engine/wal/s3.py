"""The S3 WAL (``s3_only``): every commit batch is one object ``wal/{first_seq}.wal``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from ... import keys
from ...errors import corrupt
from ...storage.base import BlobStore
from . import tail
from .format import WalRecord, decode_records

T = TypeVar("T")


async def object_seqs(store: BlobStore, name: str) -> list[int]:
    """First seqs of the collection's WAL objects in ``store``, sorted."""
    infos = await store.list(keys.wal_prefix(name))
    return sorted(seq for seq in (keys.parse_wal_key(info.key) for info in infos) if seq is not None)


class S3Wal:
    """Objects written with put-if-absent, so a second writer of the collection is fenced at its
    first write.

    Called from the group committer's worker thread; the store is async, so calls are handed to
    the event loop and waited for.
    """

    def __init__(self, store: BlobStore, name: str, loop: asyncio.AbstractEventLoop, *,
                 timeout_secs: float = 600.0) -> None:
        self.store = store
        self.name = name
        self.loop = loop
        self.timeout = timeout_secs
        self.bytes_total = 0

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def object_seqs(self) -> list[int]:
        return self._run(object_seqs(self.store, self.name))

    def scan(self, after_seq: int) -> Iterator[WalRecord]:
        chain = tail.SeqChain(after_seq)
        for first in tail.after(self.object_seqs(), after_seq):
            key = keys.wal_key(self.name, first)
            data = self._run(self.store.get(key))
            records, valid_end = decode_records(data, source=key)
            if valid_end != len(data) or not records or records[0].seq != first:
                raise corrupt(f"WAL object {key} is damaged (objects are written whole)", key=key)
            for record in records:
                chain.follow(record.seq, f"WAL object {key}", key=key)
                if record.seq > after_seq:
                    yield record
            if chain.expected is not None and chain.expected - 1 > after_seq:
                self.bytes_total += len(data)

    def open_for_append(self, next_seq: int) -> None:
        return None

    def append(self, frames: list[bytes], first_seq: int = 0) -> None:
        data = b"".join(frames)
        self._run(self.store.put(keys.wal_key(self.name, first_seq), data, if_absent=True))
        self.bytes_total += len(data)

    def rotate(self, next_seq: int) -> None:
        self.bytes_total = 0  # the frozen records are about to be covered by a manifest

    def remove_covered(self, covered_seq: int, *, keep_from_seq: int | None = None) -> int:
        return 0  # objects in S3 are deleted by the GC worker after the grace period

    def close(self) -> None:
        return None
