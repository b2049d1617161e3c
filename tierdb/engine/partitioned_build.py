"""Building a partitioned segment from rows of a collection's sources (flush and merge, s3_only).

The rows are read once, source by source (a partitioned source partition by partition, never
through the RAM cache), their vectors spilled to a temporary file that the build reads twice
(k-means sample, then the partition writes); ids and metadata are kept as lists (bounded by
``partitions.max_segment_rows``).  The encoded segment is written to a temporary file and read
back as the object to upload.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from . import partitioned
from .partitioned_source import PartitionedSource
from .rows import RowSource

Run = tuple[RowSource, np.ndarray]   # a source and some of its rows, ascending

_CHUNK_ROWS = 8192

log = logging.getLogger(__name__)


@dataclass
class PartitionedBuild:
    data: bytes
    sha256: str
    order: np.ndarray       # new global row -> position among the runs' rows, in run order
    rows: int


def _rows_of(run: Run) -> Iterator[tuple[list[str], list[dict | None], np.ndarray]]:
    """(ids, metadata, vectors) of a run's rows, a chunk at a time."""
    src, rows = run
    if isinstance(src, PartitionedSource):
        wanted = np.zeros(src.size(), bool)
        wanted[rows] = True
        for part in src.walk(uncached=True):
            local = np.flatnonzero(wanted[part.start : part.start + len(part.vectors)])
            if len(local):
                ids, metadata = part.ids, part.metadata
                yield [ids[i] for i in local.tolist()], [metadata[i] for i in local.tolist()], part.vectors[local]
        return
    ids, metadata = src.ids, src.metadata
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        yield [ids[r] for r in chunk.tolist()], [metadata[r] for r in chunk.tolist()], src.vectors_of(chunk)


def build(runs: list[Run], metric: str, dimension: int, settings: partitioned.PartitionSettings,
          spill_dir: str) -> PartitionedBuild:
    """Spills to temporary files in ``spill_dir``; when the local disk is full (s3_only keeps
    writing then: S3 holds everything) the same build runs in RAM instead."""
    try:
        os.makedirs(spill_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=spill_dir, prefix="vectors-") as spill, \
                tempfile.TemporaryFile(dir=spill_dir, prefix="segment-") as out:
            return _build(runs, metric, dimension, settings, spill, out, spill_dir)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        log.warning("segment build spills in RAM: local disk refused its temporary files",
                    extra={"dir": spill_dir, "error": str(exc)})
        return _build(runs, metric, dimension, settings, io.BytesIO(), io.BytesIO(), None)


def _build(runs: list[Run], metric: str, dimension: int, settings: partitioned.PartitionSettings,
           spill: IO[bytes], out: IO[bytes], spill_dir: str | None) -> PartitionedBuild:
    ids: list[str] = []
    metadata: list[dict | None] = []
    for run in runs:
        for chunk_ids, chunk_meta, vectors in _rows_of(run):
            ids.extend(chunk_ids)
            metadata.extend(chunk_meta)
            spill.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    spill.flush()
    if not ids:
        matrix = np.zeros((0, dimension), np.float32)
    elif isinstance(spill, io.BytesIO):
        matrix = np.frombuffer(spill.getbuffer(), dtype=np.float32).reshape(len(ids), dimension)
    else:
        matrix = np.memmap(spill, dtype=np.float32, mode="r", shape=(len(ids), dimension))
    stats = partitioned.build(out, ids, matrix, metadata, metric, settings, spill_dir=spill_dir)
    del matrix
    out.seek(0)
    data = out.read()
    return PartitionedBuild(data, hashlib.sha256(data).hexdigest(), stats.order, len(ids))
