"""The version-1 segment encoder, kept as it was so tests can write the files TierDB wrote
before format 2 and check that they still open."""

from __future__ import annotations

import hashlib
import struct

import hnswlib
import msgspec
import numpy as np

from tierdb.engine.segment import MAGIC, SectionRef, SegmentHeader, _index_to_bytes
from tierdb.models import HnswParams

_LEN_PACK = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()


def encode_v1(
    raw: np.ndarray,
    ids: list[str],
    metadata: list[dict | None],
    metric: str,
    params: HnswParams,
    index: hnswlib.Index | None,
) -> bytes:
    sections: dict[str, bytes] = {
        "ids": _encoder.encode(ids),
        "vectors": np.ascontiguousarray(raw, dtype=np.float32).tobytes(),
        "metadata": _encoder.encode(metadata),
    }
    if index is not None:
        sections["index"] = _index_to_bytes(index)
    refs: dict[str, SectionRef] = {}
    offset = 0
    for name, data in sections.items():
        refs[name] = SectionRef(offset, len(data), hashlib.sha256(data).hexdigest())
        offset += len(data)
    header = _encoder.encode(SegmentHeader(1, raw.shape[1], metric, len(ids), params, refs))
    return b"".join([MAGIC, _LEN_PACK.pack(len(header)), header, *sections.values()])
