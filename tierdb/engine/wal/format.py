"""WAL record format: ``[u32 length][u32 crc32(payload)][payload]`` little-endian, msgpack payload.

One record holds one whole batch (upsert or delete), so a batch is applied entirely or not at
all after a crash.  Decoding cuts a torn or corrupt *tail*; a bad frame followed by a valid one
is damage in the middle and raises CORRUPT.
"""

from __future__ import annotations

import struct
import zlib

import msgspec

from ...errors import corrupt
from ...keys import WAL_SUFFIX, wal_file_name

__all__ = ["CLAIM", "MAX_RECORD_BYTES", "WAL_SUFFIX", "WalRecord", "claim_record", "claimed_by", "decode_records", "frame",
           "wal_file_name"]

_HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30


class WalRecord(msgspec.Struct, array_like=True):
    """One acknowledged batch. ``vectors`` is the raw float32 bytes of all rows."""

    seq: int
    op: str                                 # "upsert" | "delete" | "claim"
    ids: list[str]
    vectors: bytes = b""
    metadata: list[dict | None] = []


CLAIM = "claim"


def claim_record(seq: int, writer_id: str) -> WalRecord:
    """A writer's claim marker (handover): no data, only the claiming writer's id.  It takes the
    next WAL position with put-if-absent, so the previous writer's next WAL put is refused; every
    reader of the log applies it as a no-op (``ids`` is empty, so even a delete of it is one)."""
    return WalRecord(seq=seq, op=CLAIM, ids=[], metadata=[{"writer_id": writer_id}])


def claimed_by(record: WalRecord) -> str | None:
    """The claiming writer's id if the record is a claim marker, else None."""
    if record.op != CLAIM:
        return None
    meta = record.metadata[0] if record.metadata else None
    return str((meta or {}).get("writer_id", ""))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WalRecord)
_RECORD_MARKER = b"\x95"  # msgpack fixarray of WalRecord's 5 fields


def frame(record: WalRecord) -> bytes:
    payload = _encoder.encode(record)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _read_frame(buf: memoryview, offset: int) -> tuple[WalRecord, int] | None:
    """The record at offset and the next offset, or None if the frame is torn or corrupt."""
    if offset + _HEADER.size > len(buf):
        return None
    length, crc = _HEADER.unpack_from(buf, offset)
    start = offset + _HEADER.size
    if length > MAX_RECORD_BYTES or start + length > len(buf):
        return None
    payload = buf[start : start + length]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return _decoder.decode(payload), start + length
    except msgspec.DecodeError:
        return None


def decode_records(data: bytes, *, source: str) -> tuple[list[WalRecord], int]:
    """Every valid record in data and the offset where valid data ends.

    Raises CORRUPT when a bad frame is followed by a valid one (damage in the middle).
    """
    buf = memoryview(data)
    records: list[WalRecord] = []
    offset = 0
    while offset < len(buf):
        got = _read_frame(buf, offset)
        if got is None:
            _refuse_if_valid_frame_follows(buf, offset, source)
            break
        record, offset = got
        records.append(record)
    return records, offset


def _refuse_if_valid_frame_follows(buf: memoryview, bad_offset: int, source: str) -> None:
    # A record payload is a 5-element msgpack array (0x95); probing only where that byte sits
    # keeps the scan of a long torn tail fast.
    data = bytes(buf)
    probe = data.find(_RECORD_MARKER, bad_offset + 1 + _HEADER.size)
    while probe != -1:
        got = _read_frame(buf, probe - _HEADER.size)
        if got is not None:
            raise corrupt(
                f"WAL {source}: corrupt record at byte {bad_offset} followed by a valid record "
                f"at byte {probe - _HEADER.size}; refusing to skip it",
                path=source,
                offset=bad_offset,
            )
        probe = data.find(_RECORD_MARKER, probe + 1)
