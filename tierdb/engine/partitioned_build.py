"""Building a partitioned segment from rows of a collection's sources (flush and merge, s3_only).

The rows are read once, source by source (a partitioned source partition by partition, never
through the RAM cache), their vectors spilled to a temporary file that the build reads twice
(k-means sample, then the partition writes) by ``pread`` (``partitioned.FileRows``: a memory
map's pages would add up in the process's RSS); ids and metadata are kept as
lists (bounded by ``partitions.max_segment_rows``).  The encoded segment is written to a
temporary file in the scratch directory, which the store uploads from (multipart) and the
caller removes (``PartitionedBuild.discard``; a crash leaves it to the next start, which
empties the scratch directory).
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
    path: str | None        # the encoded segment, a file in the scratch directory ...
    data: bytes | None      # ... or in RAM (the local disk refused the file)
    size: int
    head: bytes             # the prefix and header (enough to open the segment)
    sha256: str
    order: np.ndarray       # new global row -> position among the runs' rows, in run order
    rows: int

    def discard(self) -> None:
        """Remove the file (once uploaded, or abandoned)."""
        if self.path is not None:
            _unlink(self.path)


_HASH_CHUNK = 8 << 20


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
    out = None
    try:
        os.makedirs(spill_dir, exist_ok=True)
        out = tempfile.NamedTemporaryFile(dir=spill_dir, prefix="segment-", delete=False)  # noqa: SIM115
        with tempfile.TemporaryFile(dir=spill_dir, prefix="vectors-") as spill, out:
            return _build(runs, metric, dimension, settings, spill, out, spill_dir)
    except OSError as exc:
        if out is not None:
            _unlink(out.name)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        log.warning("segment build spills in RAM: local disk refused its temporary files",
                    extra={"dir": spill_dir, "error": str(exc)})
        return _build(runs, metric, dimension, settings, io.BytesIO(), io.BytesIO(), None)
    except BaseException:
        if out is not None:
            _unlink(out.name)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
    matrix: np.ndarray | partitioned.FileRows
    if not ids:
        matrix = np.zeros((0, dimension), np.float32)
    elif isinstance(spill, io.BytesIO):
        matrix = np.frombuffer(spill.getbuffer(), dtype=np.float32).reshape(len(ids), dimension)
    else:
        matrix = partitioned.FileRows(spill.fileno(), len(ids), dimension)
    stats = partitioned.build(out, ids, matrix, metadata, metric, settings, spill_dir=spill_dir)
    del matrix
    out.flush()
    size = out.tell()
    out.seek(0)
    head = out.read(min(size, stats.header_bytes))
    if isinstance(out, io.BytesIO):
        data = out.getvalue()
        return PartitionedBuild(None, data, size, head, hashlib.sha256(data).hexdigest(), stats.order, len(ids))
    digest = hashlib.sha256()
    out.seek(0)
    while chunk := out.read(_HASH_CHUNK):
        digest.update(chunk)
    return PartitionedBuild(out.name, None, size, head, digest.hexdigest(), stats.order, len(ids))
