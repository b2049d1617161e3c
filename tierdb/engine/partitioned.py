"""Partitioned (IVF) segments: a segment made to be fetched in parts.

A segment's rows are clustered by k-means into partitions; a query routes to the ``nprobe``
nearest centroids and reads only those partitions, by byte range.  Layout of one object::

    prefix:     b"TDBPSEG1" | u32 header length | sha256 of the header (32 bytes)
    header:     msgpack PartitionedHeader (format, dimension, metric, rows, centroids,
                partition table, sorted 64-bit id hashes and the global row of each)
    partitions: partition 0 | partition 1 | ...   each = codes | float32 vectors | float32 row norms | ids | metadata
                (ids and metadata are msgpack lists, in the partition's row order)
    codes:      one-bit codes (binary_codes.py; uint64, word-major) | float32 A | float32 B | crc32 of each row's vector

A query reads the codes of its probed partitions, re-ranks the best candidates with their exact
rows (one row is one small range: its crc32 is in the codes) and reads the documents section
(ids + metadata) of the partitions holding its hits: three sections, each a byte range of its own
with its own checksum, so a cold query reads kilobytes per partition, not the whole partition.
Flushes, merges, warm-up and filtered queries read whole partitions.  Format 3 segments (no
codes) are still read; they are scanned in full.

Rows are numbered globally in partition order: partition p holds global rows
``starts[p] .. starts[p+1]-1``.  The partition table gives, per partition, its absolute byte
offset, row count, the lengths of its ids and metadata sections and its crc32 (checked on
every decode of fetched bytes).  Everything in the header is fixed-size numpy data, so a
builder knows the header's length before it writes a partition: it writes partitions first
and the header last (streaming, bounded memory).

Nothing here does I/O: callers supply ``fetch(ranges) -> list[bytes]`` where ``ranges`` is a
list of ``(offset, length)`` pairs; one call per query (or per open step), so the caller can
issue the range GETs in parallel and serve hits from its caches.

Distances follow vectors.py: cosine = 1 - cos, l2 = squared euclidean, ip = 1 - dot.

Longer than ~500 lines on purpose: build, header, id map and search share one byte layout and
are kept in one file until the engine wires the format in (issue 11); then the build (writer
side) and the search (reader side) become modules of their own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import hnswlib
import msgspec
import numpy as np

from ..errors import corrupt, invalid
from . import binary_codes, kmeans
from . import vectors as vec

log = logging.getLogger(__name__)

MAGIC = b"TDBPSEG1"
FORMAT_VERSION = 4  # 4: scan codes, per-section checksums; 3: row norms per partition (1, 2 never released)
READABLE_FORMATS = (3, 4)
_PREFIX = struct.Struct("<8sI32s")
PREFIX_BYTES = _PREFIX.size
# What a node reads first to open a segment: the header of a segment up to ~4k rows fits whole,
# a bigger one needs exactly one more range read.
HEADER_PREFIX_BYTES = 64 * 1024
# Calibrated on 1M synthetic docstring embeddings (benchmarks/bench_partitioned.py, nlist
# 1000, 300 queries): the smallest swept nprobe with recall@10 >= 0.95
# (48: 0.928, 64: 0.946, 96: 0.962, 128: 0.975).
DEFAULT_NPROBE = 96
# Route with an hnswlib graph over the centroids from this many partitions on (~2M rows);
# below it a brute-force scan of the centroids is as fast and exact.
ROUTING_INDEX_MIN_PARTITIONS = 2048
METRICS = ("cosine", "l2", "ip")

Fetch = Callable[[list[tuple[int, int]]], list[bytes]]

# crc32: the partition without its codes (vectors | norms | ids | metadata); docs_crc32: ids | metadata.
PARTITION_DTYPE = np.dtype(
    [("offset", "<u8"), ("rows", "<u4"), ("ids_len", "<u8"), ("meta_len", "<u8"), ("crc32", "<u4"),
     ("codes_crc32", "<u4"), ("docs_crc32", "<u4")]
)
_PARTITION_DTYPE_V3 = np.dtype(
    [("offset", "<u8"), ("rows", "<u4"), ("ids_len", "<u8"), ("meta_len", "<u8"), ("crc32", "<u4")]
)
# Per row in the codes section, besides the bits: A, B and the row's crc32.
_CODE_ROW_EXTRA = 12


class PartitionSettings(msgspec.Struct, frozen=True):
    """How a partitioned segment is built.

    ``rows_per_partition`` ~1000 keeps a probe to one range GET of ~1.5 MB at 384 dimensions
    (S3 time-to-first-byte dominates below that, bytes above) and gives nlist = n/1000, which
    is sqrt(n) at 1M rows.  ``build_memory_bytes`` bounds the working set of a build (sample,
    distance chunks, write slices); the id hashes and the row permutation (~28 bytes per row)
    are numpy arrays on top of it.
    """

    rows_per_partition: int = 1000
    build_memory_bytes: int = 256 * 1024 * 1024
    kmeans_iterations: int = 20
    training_rows_per_partition: int = 64
    seed: int = 0


DEFAULT_SETTINGS = PartitionSettings()


class PartitionedHeader(msgspec.Struct):
    format: int
    dimension: int
    metric: str
    rows: int
    nlist: int
    centroids: bytes  # nlist × dimension float32
    partitions: bytes  # nlist records of PARTITION_DTYPE
    id_hashes: bytes  # rows × <u8, ascending
    id_rows: bytes  # rows × <u4: the global row of each hash


_header_decoder = msgspec.msgpack.Decoder(PartitionedHeader)
_ids_decoder = msgspec.msgpack.Decoder(list[str])
_meta_decoder = msgspec.msgpack.Decoder(list[dict | None])
_encoder = msgspec.msgpack.Encoder()


def hash_ids(ids: Iterable[str]) -> np.ndarray:
    """64-bit hashes of document ids (blake2b), as a uint64 array."""
    digest = b"".join(hashlib.blake2b(i.encode(), digest_size=8).digest() for i in ids)
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def choose_nlist(rows: int, settings: PartitionSettings) -> int:
    return max(1, round(rows / max(settings.rows_per_partition, 1)))


# -- building ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildStats:
    rows: int
    nlist: int
    header_bytes: int
    total_bytes: int
    largest_partition_rows: int
    chunk_rows: int
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # global row -> input row


def build_bytes(
    ids: Sequence[str],
    vectors: np.ndarray | Iterable[np.ndarray],
    metadata: Sequence[dict | None] | None,
    metric: str,
    settings: PartitionSettings = DEFAULT_SETTINGS,
) -> bytes:
    """``build`` into memory (small segments and tests)."""
    import io

    out = io.BytesIO()
    build(out, ids, vectors, metadata, metric, settings)
    return out.getvalue()


def build(
    out: IO[bytes],
    ids: Sequence[str],
    vectors: np.ndarray | Iterable[np.ndarray],
    metadata: Sequence[dict | None] | None,
    metric: str,
    settings: PartitionSettings = DEFAULT_SETTINGS,
    *,
    spill_dir: str | None = None,
) -> BuildStats:
    """Write a partitioned segment to the seekable binary file ``out`` (from its current position).

    ``vectors`` is an (n, d) float32 array (a memory map works: it is read in chunks) or an
    iterator of (rows, d) chunks, which is spilled once to a temporary file in ``spill_dir``
    so it can be read twice (k-means sample + assignment, then the partition writes).
    ``metadata`` may be None (every row's metadata is None).  Anything with ``shape``, ``ndim``
    and numpy-style row indexing (slices, sorted row arrays) is read as ``vectors`` in place
    (e.g. partitioned_build's rows read from a file by ``pread``).
    """
    if metric not in METRICS:
        raise invalid(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if metadata is not None and len(metadata) != len(ids):
        raise invalid(f"{len(metadata)} metadata entries for {len(ids)} ids")
    with _random_access(vectors, spill_dir) as matrix:
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise invalid(f"vectors have shape {matrix.shape}, expected ({len(ids)}, dimension)")
        return _build(out, ids, matrix, metadata, metric, settings)


class _Spill:
    def __init__(self, vectors: Iterable[np.ndarray], spill_dir: str | None) -> None:
        # Closed and unlinked by close(), which _random_access calls on exit.
        self.file = tempfile.NamedTemporaryFile(prefix="tierdb-ivf-", suffix=".f32", dir=spill_dir, delete=False)  # noqa: SIM115
        self.path = self.file.name
        rows, dim = 0, None
        try:
            for chunk in vectors:
                chunk = np.asarray(chunk, dtype=np.float32)
                if chunk.ndim == 1:
                    chunk = chunk.reshape(1, -1)
                if dim is None:
                    dim = chunk.shape[1]
                elif chunk.shape[1] != dim:
                    raise invalid(f"vector chunk has dimension {chunk.shape[1]}, earlier chunks {dim}")
                self.file.write(np.ascontiguousarray(chunk).tobytes())
                rows += len(chunk)
            self.file.flush()
        except BaseException:
            self.close()
            raise
        self.rows, self.dim = rows, dim or 0

    def matrix(self) -> np.ndarray | FileRows:
        if self.rows == 0:
            return np.zeros((0, self.dim), np.float32)
        return FileRows(self.file.fileno(), self.rows, self.dim)

    def close(self) -> None:
        self.file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class FileRows:
    """An (n, d) float32 matrix in a file, read by ``pread`` when indexed (a slice, or an array
    of row numbers; runs of consecutive rows are one read each).  Not a memory map: a mapped
    file's pages count in the process's RSS, and reading a partition's rows, scattered over
    the whole file, maps most of it (the kernel maps whole page-cache folios around each
    fault); pread leaves them in the page cache only."""

    def __init__(self, fd: int, rows: int, dim: int) -> None:
        self.fd, self.shape, self.ndim = fd, (rows, dim), 2
        self._row_bytes = 4 * dim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("FileRows reads slices with step 1 only")
            rows = np.arange(start, max(start, stop), dtype=np.int64)
        else:
            rows = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.shape[1]), np.float32)
        if not len(rows):
            return out
        # Builds ask for sorted rows (sequential reads); others are read sorted, then put back.
        order = None if bool(np.all(rows[1:] >= rows[:-1])) else np.argsort(rows, kind="stable")
        ordered = rows if order is None else rows[order]
        if ordered[0] < 0 or ordered[-1] >= self.shape[0]:
            raise IndexError(f"row out of range 0..{self.shape[0] - 1}")
        dense = out if order is None else np.empty_like(out)
        view = memoryview(dense).cast("B")
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        size = self._row_bytes
        for first, end in zip([0, *breaks.tolist()], [*breaks.tolist(), len(ordered)]):
            want = (end - first) * size
            got = os.preadv(self.fd, [view[first * size : end * size]], int(ordered[first]) * size)
            if got != want:
                raise OSError(f"short read of spilled rows: {got} of {want} bytes")
        if order is not None:
            out[order] = dense
        return out


class _random_access:
    """Context: the vectors as an (n, d) array-like readable twice, spilling an iterator."""

    def __init__(self, vectors: np.ndarray | Iterable[np.ndarray], spill_dir: str | None) -> None:
        self.vectors, self.spill_dir, self.spill = vectors, spill_dir, None

    def __enter__(self) -> np.ndarray:
        if isinstance(self.vectors, np.ndarray) or hasattr(self.vectors, "shape"):
            return self.vectors  # type: ignore[return-value]
        self.spill = _Spill(self.vectors, self.spill_dir)
        return self.spill.matrix()

    def __exit__(self, *exc: object) -> None:
        if self.spill is not None:
            self.spill.close()


def _chunk_rows(dim: int, nlist: int, budget: int) -> int:
    # Per row in flight: the float32 row, a normalised copy, two nlist-wide float32 rows
    # (dot products and scores / membership), and slack for numpy temporaries.
    per_row = 4 * (3 * dim + 3 * nlist) + 64
    return max(64, budget // per_row)


def _build(
    out: IO[bytes],
    ids: Sequence[str],
    matrix: np.ndarray,
    metadata: Sequence[dict | None] | None,
    metric: str,
    settings: PartitionSettings,
) -> BuildStats:
    n, dim = matrix.shape
    if n >= 2**32:
        raise invalid(f"a partitioned segment holds fewer than 2**32 rows (got {n})")
    spherical = metric == "cosine"
    nlist = choose_nlist(n, settings) if n else 0
    chunk = _chunk_rows(dim, nlist, settings.build_memory_bytes)
    rng = np.random.default_rng(settings.seed)

    # 1. k-means on a sample (read in sorted order: sequential on a memory map).
    # The sample and k-means' normalised copy of it take at most half the build budget.
    sample_rows = min(n, nlist * settings.training_rows_per_partition, max(settings.build_memory_bytes // (16 * max(dim, 1)), nlist))
    picked = np.sort(rng.choice(n, size=sample_rows, replace=False)) if n else np.zeros(0, np.int64)
    sample = np.empty((sample_rows, dim), np.float32)
    for start in range(0, sample_rows, chunk):
        sample[start : start + chunk] = matrix[picked[start : start + chunk]]
    centroids = kmeans.train(sample, nlist, spherical=spherical, iterations=settings.kmeans_iterations, seed=settings.seed, chunk_rows=chunk)
    del sample

    # 2. streamed assignment of every row to its nearest centroid.
    assignment = np.empty(n, np.int32)
    for start in range(0, n, chunk):
        rows = np.asarray(matrix[start : start + chunk], dtype=np.float32)
        if spherical:
            rows = kmeans.unit_rows(rows)
        assignment[start : start + chunk] = kmeans.assign(rows, centroids, spherical=spherical)[0]
    counts = np.bincount(assignment, minlength=len(centroids))
    used = counts > 0  # dropping empty clusters changes no row's nearest centroid
    centroids, counts = centroids[used], counts[used]
    assignment = (np.cumsum(used) - 1).astype(np.int32)[assignment]
    nlist = len(centroids)
    order = np.argsort(assignment, kind="stable")  # order[global row] = input row
    del assignment
    starts = np.zeros(nlist + 1, np.int64)
    np.cumsum(counts, out=starts[1:])

    # 3. the id map: sorted 64-bit hashes and the global row of each.
    global_hashes = np.empty(n, np.uint64)
    for start in range(0, n, chunk):
        global_hashes[start : start + chunk] = hash_ids(ids[int(i)] for i in order[start : start + chunk])
    by_hash = np.argsort(global_hashes, kind="stable")
    id_hashes = global_hashes[by_hash]
    del global_hashes
    id_rows = by_hash.astype("<u4")
    del by_hash

    # 4. partitions first (after a placeholder the header's exact size), the header last.
    table = np.zeros(nlist, PARTITION_DTYPE)
    table["rows"] = counts

    def header_bytes() -> bytes:
        return _encoder.encode(
            PartitionedHeader(
                FORMAT_VERSION, dim, metric, n, nlist, centroids.astype("<f4").tobytes(),
                table.tobytes(), id_hashes.astype("<u8").tobytes(), id_rows.tobytes(),
            )
        )

    base = out.tell()
    header_len = len(header_bytes())
    out.write(b"\0" * (PREFIX_BYTES + header_len))
    offset = PREFIX_BYTES + header_len
    largest = 0
    code_width = binary_codes.code_bytes(dim)
    for p in range(nlist):
        sources = order[starts[p] : starts[p + 1]]
        rows_here = len(sources)
        # The codes come first but are known only once the rows are read: leave their room,
        # write the rest, then go back.
        codes_at = out.tell()
        codes_len = rows_here * (code_width + _CODE_ROW_EXTRA)
        out.write(b"\0" * codes_len)
        digest = _Crc32()
        written = 0
        norms, bits, a_parts, b_parts, row_crcs = [], [], [], [], []
        for start in range(0, rows_here, chunk):
            # Sorted reads are sequential on a memory map; put the rows back in partition order.
            part = sources[start : start + chunk]
            sort = np.argsort(part)
            rows = np.empty((len(part), dim), np.float32)
            rows[sort] = matrix[part[sort]]
            data = rows.astype("<f4").tobytes()
            digest.update(data)
            out.write(data)
            written += len(data)
            norms.append(vec.norms(rows))
            code_bits, a, b = binary_codes.encode(rows, centroids[p], metric)
            bits.append(code_bits)
            a_parts.append(a)
            b_parts.append(b)
            width = dim * 4
            row_crcs.append(np.fromiter((zlib.crc32(data[i : i + width]) for i in range(0, len(data), width)),
                                        np.uint32, count=len(part)))
        data = (np.concatenate(norms) if norms else np.zeros(0, np.float32)).astype("<f4").tobytes()
        digest.update(data)
        out.write(data)
        written += len(data)
        docs = _Crc32()
        ids_len = _write_msgpack_list(out, (digest, docs), (ids[int(i)] for i in sources), rows_here)
        meta_iter = (None for _ in sources) if metadata is None else (metadata[int(i)] for i in sources)
        meta_len = _write_msgpack_list(out, (digest, docs), meta_iter, rows_here)
        codes = (np.concatenate(bits, axis=1).astype("<u8").tobytes() if bits else b"") + b"".join(
            np.concatenate(parts).astype(dtype).tobytes() if parts else b""
            for parts, dtype in ((a_parts, "<f4"), (b_parts, "<f4"), (row_crcs, "<u4"))
        )
        assert len(codes) == codes_len, "codes section size"
        end_of_partition = out.tell()
        out.seek(codes_at)
        out.write(codes)
        out.seek(end_of_partition)
        table[p] = (offset, rows_here, ids_len, meta_len, digest.value, zlib.crc32(codes), docs.value)
        offset += codes_len + written + ids_len + meta_len
        largest = max(largest, rows_here)
    header = header_bytes()
    assert len(header) == header_len, "the header's size must not depend on the partition table's values"
    end = out.tell()
    out.seek(base)
    out.write(_PREFIX.pack(MAGIC, header_len, hashlib.sha256(header).digest()))
    out.write(header)
    out.seek(end)
    return BuildStats(n, nlist, PREFIX_BYTES + header_len, offset, largest, chunk, order)


class _Crc32:
    """A partition's checksum.  crc32 (zlib, ~4x faster than sha256 here) because partitions
    are verified on every read from the disk cache or S3, on the query path; it catches torn
    and damaged bytes.  The whole object's sha256 is in the manifest, the header's in the prefix."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


def _write_msgpack_list(out: IO[bytes], digests: tuple[_Crc32, ...], items: Iterator, count: int) -> int:
    """Write a msgpack array of ``count`` items, one item encoded at a time; returns its length."""
    head = b"\xdd" + struct.pack(">I", count)  # array32: valid for any count
    out.write(head)
    for digest in digests:
        digest.update(head)
    length = len(head)
    for item in items:
        data = _encoder.encode(item)
        out.write(data)
        for digest in digests:
            digest.update(data)
        length += len(data)
    return length


# -- opening ----------------------------------------------------------------------------------
def header_length(prefix: bytes | memoryview, segment_id: str = "?") -> int:
    """Bytes (prefix + header) needed to open the segment, from its first PREFIX_BYTES bytes."""
    if len(prefix) < PREFIX_BYTES:
        raise corrupt(f"segment {segment_id}: {len(prefix)} bytes are too short for a header", segment=segment_id)
    magic, length, _ = _PREFIX.unpack_from(prefix, 0)
    if magic != MAGIC:
        raise corrupt(f"segment {segment_id}: not a partitioned segment (bad magic)", segment=segment_id)
    return PREFIX_BYTES + length


def open_segment(fetch: Fetch, segment_id: str, *, prefix_bytes: int = HEADER_PREFIX_BYTES) -> PartitionedSegment:
    """Open by header only: one range read of ``prefix_bytes``, plus one for the rest of a
    bigger header.  Never reads a partition."""
    (prefix,) = fetch([(0, prefix_bytes)])
    need = header_length(prefix, segment_id)
    if len(prefix) < need:
        if len(prefix) < prefix_bytes:
            raise corrupt(f"segment {segment_id}: object ends inside its header", segment=segment_id)
        (rest,) = fetch([(len(prefix), need - len(prefix))])
        prefix = bytes(prefix) + bytes(rest)
    return open_header(prefix, segment_id)


def open_header(data: bytes | memoryview, segment_id: str = "?", *, routing_index_min: int = ROUTING_INDEX_MIN_PARTITIONS) -> PartitionedSegment:
    """A PartitionedSegment from bytes holding at least the prefix and the whole header."""
    need = header_length(data, segment_id)
    if len(data) < need:
        raise corrupt(f"segment {segment_id}: header needs {need} bytes, got {len(data)}", segment=segment_id)
    _, _, expected = _PREFIX.unpack_from(data, 0)
    raw = memoryview(data)[PREFIX_BYTES:need]
    if hashlib.sha256(raw).digest() != expected:
        raise corrupt(f"segment {segment_id}: header failed its checksum", segment=segment_id)
    try:
        header = _header_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise corrupt(f"segment {segment_id}: unreadable header ({exc})", segment=segment_id) from exc
    if header.format not in READABLE_FORMATS:
        raise corrupt(f"segment {segment_id}: unsupported partitioned format {header.format}", segment=segment_id)
    return PartitionedSegment(segment_id, header, need, routing_index_min=routing_index_min)


def _partition_table(header: PartitionedHeader) -> np.ndarray:
    if header.format >= 4:
        return np.frombuffer(header.partitions, dtype=PARTITION_DTYPE)
    old = np.frombuffer(header.partitions, dtype=_PARTITION_DTYPE_V3)
    table = np.zeros(len(old), PARTITION_DTYPE)
    for name in old.dtype.names:
        table[name] = old[name]
    return table


# -- the open segment -------------------------------------------------------------------------
class PartitionDocs:
    """A partition's ids and metadata, decoded on first use."""

    __slots__ = ("_ids", "_ids_bytes", "_meta", "_meta_bytes", "number", "start")

    def __init__(self, number: int, start: int, ids_bytes: memoryview, meta_bytes: memoryview) -> None:
        self.number, self.start = number, start
        self._ids_bytes, self._meta_bytes = ids_bytes, meta_bytes
        self._ids: list[str] | None = None
        self._meta: list[dict | None] | None = None

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = _ids_decoder.decode(self._ids_bytes)
        return self._ids

    @property
    def metadata(self) -> list[dict | None]:
        if self._meta is None:
            self._meta = _meta_decoder.decode(self._meta_bytes)
        return self._meta

    def nbytes(self) -> int:
        return len(self._ids_bytes) + len(self._meta_bytes)


class Partition(PartitionDocs):
    """One decoded partition: its vectors (read-only view of the fetched bytes) and norms, its
    scan codes (format 4), ids and metadata decoded on first use."""

    __slots__ = ("codes", "norms", "vectors")

    def __init__(self, number: int, start: int, vectors: np.ndarray, norms: np.ndarray,
                 ids_bytes: memoryview, meta_bytes: memoryview, codes: PartitionCodes | None = None) -> None:
        super().__init__(number, start, ids_bytes, meta_bytes)
        self.vectors, self.norms, self.codes = vectors, norms, codes

    def nbytes(self) -> int:
        codes = 0 if self.codes is None else self.codes.nbytes()
        return self.vectors.nbytes + self.norms.nbytes + super().nbytes() + codes


class PartitionCodes:
    """A partition's scan codes: one-bit codes as uint64 words, the estimate's A and B per row,
    and each row's crc32 (views over the fetched bytes)."""

    __slots__ = ("a", "b", "bits", "number", "ones", "row_crc", "start")

    def __init__(self, number: int, start: int, view: memoryview, rows: int, width: int) -> None:
        self.number, self.start = number, start
        bits_len = rows * width
        self.bits = np.frombuffer(view[:bits_len], dtype="<u8").reshape(width // 8, rows)   # word-major
        self.a = np.frombuffer(view[bits_len : bits_len + 4 * rows], dtype="<f4")
        self.b = np.frombuffer(view[bits_len + 4 * rows : bits_len + 8 * rows], dtype="<f4")
        self.row_crc = np.frombuffer(view[bits_len + 8 * rows : bits_len + 12 * rows], dtype="<u4")
        self.ones = binary_codes.row_ones(self.bits)   # a scan's query-independent part, once

    def __len__(self) -> int:
        return len(self.a)

    def nbytes(self) -> int:
        return self.bits.nbytes + self.a.nbytes + self.b.nbytes + self.row_crc.nbytes + self.ones.nbytes


Load = Callable[[Sequence[int]], list[Partition]]


class PartitionedSegment:
    """What a node holds for an open partitioned segment: the header's arrays (centroids,
    partition table, id hashes), a tombstone bitmap, and a router over the centroids."""

    def __init__(self, segment_id: str, header: PartitionedHeader, header_bytes: int, *, routing_index_min: int) -> None:
        self.id = segment_id
        self.metric = header.metric
        self.dimension = header.dimension
        self.rows = header.rows
        self.nlist = header.nlist
        self.header_bytes = header_bytes
        self.centroids = np.frombuffer(header.centroids, dtype="<f4").reshape(self.nlist, self.dimension)
        self.format = header.format
        self.table = _partition_table(header)
        # Scan codes (format 4+): per row, code_width bytes of bits and _CODE_ROW_EXTRA more.
        self.has_codes = header.format >= 4
        self.code_width = binary_codes.code_bytes(self.dimension)
        rows = self.table["rows"].astype(np.int64)
        self._offsets = self.table["offset"].astype(np.int64)
        self._codes_len = rows * (self.code_width + _CODE_ROW_EXTRA) if self.has_codes else np.zeros_like(rows)
        self._part_len = (self._codes_len + rows * (self.dimension + 1) * 4
                          + self.table["ids_len"].astype(np.int64) + self.table["meta_len"].astype(np.int64))
        self.id_hashes = np.frombuffer(header.id_hashes, dtype="<u8")
        self.id_rows = np.frombuffer(header.id_rows, dtype="<u4")
        if len(self.table) != self.nlist or len(self.id_hashes) != self.rows or len(self.id_rows) != self.rows:
            raise corrupt(f"segment {segment_id}: header arrays disagree with its row/partition counts", segment=segment_id)
        self.starts = np.zeros(self.nlist + 1, np.int64)
        np.cumsum(self.table["rows"], out=self.starts[1:])
        if self.starts[-1] != self.rows:
            raise corrupt(f"segment {segment_id}: partitions hold {self.starts[-1]} rows, header says {self.rows}", segment=segment_id)
        self.tombstones = np.zeros(self.rows, bool)
        # Partitions whose bytes passed their crc32 in this process.  Segment objects never
        # change, so the bytes read again (from the node's disk cache) are the same bytes: they
        # are checked once per process, not on every read, which halves a warm read from disk.
        self._verified: set[int] = set()
        self._centroid_norms = vec.norms(self.centroids)
        self._router: hnswlib.Index | None = None
        self._router_lock = threading.Lock()
        if self.nlist >= routing_index_min:
            self._router = hnswlib.Index(space=self.metric, dim=self.dimension)
            self._router.init_index(max_elements=self.nlist, M=16, ef_construction=200)
            self._router.add_items(self.centroids, np.arange(self.nlist))

    # -- byte ranges and decoding ---------------------------------------------------------------
    def codes_length(self, p: int) -> int:
        return int(self._codes_len[p])

    def partition_length(self, p: int) -> int:
        return int(self._part_len[p])

    def codes_ranges(self, partitions: Sequence[int]) -> list[tuple[int, int]]:
        return [(int(self.table[p]["offset"]), self.codes_length(p)) for p in partitions]

    def docs_ranges(self, partitions: Sequence[int]) -> list[tuple[int, int]]:
        """(offset, length) of each partition's ids + metadata."""
        out = []
        for p in partitions:
            entry = self.table[p]
            start = int(entry["offset"]) + self.codes_length(p) + int(entry["rows"]) * (self.dimension + 1) * 4
            out.append((start, int(entry["ids_len"]) + int(entry["meta_len"])))
        return out

    def row_ranges(self, rows: Sequence[int]) -> list[tuple[int, int]]:
        """(offset, length) of the float32 vector of each global row."""
        rows = np.asarray(rows, dtype=np.int64)
        owners = self.partition_of(rows)
        width = self.dimension * 4
        starts = self._offsets[owners] + self._codes_len[owners] + (rows - self.starts[owners]) * width
        return [(offset, width) for offset in starts.tolist()]

    def decode_codes(self, p: int, data: bytes | memoryview) -> PartitionCodes:
        """A partition's scan codes from their fetched bytes; CORRUPT if short or damaged."""
        view = memoryview(data)
        key = ("codes", int(p))
        if len(view) != self.codes_length(p) or (key not in self._verified and zlib.crc32(view) != int(self.table[p]["codes_crc32"])):
            log.error("partition codes checksum mismatch", extra={"segment": self.id, "partition": int(p), "bytes": len(view)})
            raise corrupt(f"segment {self.id}: codes of partition {p} failed their checksum", segment=self.id, partition=int(p))
        self._verified.add(key)
        return PartitionCodes(int(p), int(self.starts[p]), view, int(self.table[p]["rows"]), self.code_width)

    def decode_row(self, row: int, data: bytes | memoryview, codes: PartitionCodes) -> np.ndarray:
        """A row's float32 vector from its fetched bytes, checked against its crc32 in the codes."""
        local = row - codes.start
        if len(data) != self.dimension * 4 or zlib.crc32(data) != int(codes.row_crc[local]):
            log.error("row checksum mismatch", extra={"segment": self.id, "row": int(row), "bytes": len(data)})
            raise corrupt(f"segment {self.id}: row {row} failed its checksum", segment=self.id, row=int(row))
        return np.frombuffer(data, dtype="<f4")

    def decode_docs(self, p: int, data: bytes | memoryview) -> PartitionDocs:
        """A partition's ids and metadata from their fetched bytes (format 4)."""
        view = memoryview(data)
        key = ("docs", int(p))
        entry = self.table[p]
        if len(view) != int(entry["ids_len"]) + int(entry["meta_len"]) or (
                key not in self._verified and zlib.crc32(view) != int(entry["docs_crc32"])):
            log.error("partition documents checksum mismatch", extra={"segment": self.id, "partition": int(p), "bytes": len(view)})
            raise corrupt(f"segment {self.id}: documents of partition {p} failed their checksum", segment=self.id, partition=int(p))
        self._verified.add(key)
        split = int(entry["ids_len"])
        return PartitionDocs(int(p), int(self.starts[p]), view[:split], view[split:])

    def partition_ranges(self, partitions: Sequence[int]) -> list[tuple[int, int]]:
        numbers = np.asarray(partitions, dtype=np.int64)
        return list(zip(self._offsets[numbers].tolist(), self._part_len[numbers].tolist()))

    def verified(self, p: int) -> bool:
        """Whether partition p's bytes passed their checksum in this process (decoding is cheap)."""
        return p in self._verified

    def decode_partition(self, p: int, data: bytes | memoryview) -> Partition:
        """A Partition from its fetched bytes; CORRUPT if they are short or fail the crc32."""
        entry = self.table[p]
        view = memoryview(data)
        skip = self.codes_length(p)
        if len(view) != self.partition_length(p) or (p not in self._verified and (
                zlib.crc32(view[skip:]) != int(entry["crc32"])
                or (skip and zlib.crc32(view[:skip]) != int(entry["codes_crc32"])))):
            log.error("partition checksum mismatch", extra={"segment": self.id, "partition": int(p), "bytes": len(view)})
            raise corrupt(f"segment {self.id}: partition {p} failed its checksum", segment=self.id, partition=int(p))
        self._verified.add(int(p))
        codes = PartitionCodes(int(p), int(self.starts[p]), view[:skip], int(entry["rows"]), self.code_width) if skip else None
        view = view[skip:]
        rows = int(entry["rows"])
        vec_len = rows * self.dimension * 4
        vectors = np.frombuffer(view[:vec_len], dtype="<f4").reshape(rows, self.dimension)
        norms = np.frombuffer(view[vec_len : vec_len + rows * 4], dtype="<f4")
        ids_start = vec_len + rows * 4
        ids_end = ids_start + int(entry["ids_len"])
        return Partition(int(p), int(self.starts[p]), vectors, norms, view[ids_start:ids_end], view[ids_end:], codes)

    def loader(self, fetch: Fetch) -> Load:
        """A Load that fetches the partitions in one ``fetch`` call and verifies each."""

        def load(partitions: Sequence[int]) -> list[Partition]:
            datas = fetch(self.partition_ranges(partitions))
            if len(datas) != len(partitions):
                raise corrupt(f"segment {self.id}: fetch returned {len(datas)} parts for {len(partitions)} ranges", segment=self.id)
            return [self.decode_partition(p, d) for p, d in zip(partitions, datas)]

        return load

    def partition_of(self, rows: np.ndarray) -> np.ndarray:
        """The partition holding each global row."""
        return np.searchsorted(self.starts, rows, side="right") - 1

    # -- routing and search ---------------------------------------------------------------------
    def route(self, queries: np.ndarray, nprobe: int) -> np.ndarray:
        """(q, nprobe') partition numbers, nearest centroid first (nprobe' = min(nprobe, nlist))."""
        nprobe = min(max(int(nprobe), 1), self.nlist)
        if self._router is not None and nprobe < self.nlist:
            with self._router_lock:
                self._router.set_ef(max(2 * nprobe, 64))
                labels, _ = self._router.knn_query(queries, k=nprobe, num_threads=1)
            return labels.astype(np.int64)
        dist = vec.distances(queries, self.centroids, self._centroid_norms, self.metric)
        return vec.top_k(dist, nprobe)[0]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int,
        fetch: Fetch,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query over the probed partitions, fetched in one ``fetch`` call."""
        return self.search_partitions(queries, k, nprobe, self.loader(fetch), allowed)

    def search_partitions(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int,
        load: Load,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` with a caller's ``load`` (e.g. one backed by a RAM partition cache).

        Returns (global rows, distances), each (q, k), nearest first; a query with fewer than
        k live rows in its probed partitions is padded with row -1 and distance inf.
        Tombstoned rows and rows where ``allowed`` (a bool mask over global rows) is False are
        never returned.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise invalid(f"queries have shape {queries.shape}, the segment expects dimension {self.dimension}")
        if k < 1 or nprobe < 1:
            raise invalid(f"k and nprobe must be at least 1 (got k={k}, nprobe={nprobe})")
        if allowed is not None and allowed.shape != (self.rows,):
            raise invalid(f"allowed mask has shape {allowed.shape}, the segment has {self.rows} rows")
        if self.rows == 0 or len(queries) == 0:
            return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), np.inf, np.float32)
        return self.search_routed(queries, k, list(self.route(queries, nprobe)), load, allowed)

    def search_routed(
        self,
        queries: np.ndarray,
        k: int,
        routed: Sequence[np.ndarray],
        load: Load,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search_partitions`` over partitions the caller chose: ``routed[i]`` are the
        partitions query i probes (any number, possibly none), e.g. a collection's nearest
        centroids over all its segments."""
        out_rows = np.full((len(queries), k), -1, np.int64)
        out_dist = np.full((len(queries), k), np.inf, np.float32)
        if self.rows == 0 or len(queries) == 0:
            return out_rows, out_dist
        live = ~self.tombstones if allowed is None else (allowed & ~self.tombstones)
        asks = np.zeros((len(queries), self.nlist), bool)
        for qi, parts in enumerate(routed):
            asks[qi, np.asarray(parts, dtype=np.int64)] = True
        wanted = np.flatnonzero(asks.any(axis=0))
        partitions = dict(zip(wanted.tolist(), load(wanted.tolist()))) if len(wanted) else {}
        # Per partition, one BLAS product for every query that probes it.
        found_rows: list[list[np.ndarray]] = [[] for _ in queries]
        found_dist: list[list[np.ndarray]] = [[] for _ in queries]
        for p, part in partitions.items():
            askers = np.flatnonzero(asks[:, p])
            mask = live[part.start : part.start + len(part.vectors)]
            if not mask.any():
                continue
            dist = vec.distances(queries[askers], part.vectors, part.norms, self.metric)
            columns = np.flatnonzero(mask)
            if len(columns) < mask.size:
                dist = dist[:, columns]
            best, best_dist = vec.top_k(dist, k)
            for j, qi in enumerate(askers):
                found_rows[qi].append(part.start + columns[best[j]])
                found_dist[qi].append(best_dist[j])
        for qi in range(len(queries)):
            if not found_rows[qi]:
                continue
            rows = np.concatenate(found_rows[qi])
            dist = np.concatenate(found_dist[qi])[None, :]
            best, best_dist = vec.top_k(dist, k)
            out_rows[qi, : best.shape[1]] = rows[best[0]]
            out_dist[qi, : best.shape[1]] = best_dist[0]
        return out_rows, out_dist

    # -- ids, documents, tombstones -------------------------------------------------------------
    def hash_candidates(self, doc_id: str) -> np.ndarray:
        """Global rows whose id hash equals ``doc_id``'s (no I/O; confirm with ``locate``)."""
        h = hash_ids([doc_id])[0]
        lo = int(np.searchsorted(self.id_hashes, h, side="left"))
        hi = int(np.searchsorted(self.id_hashes, h, side="right"))
        return self.id_rows[lo:hi].astype(np.int64)

    def locate(self, ids: Sequence[str], load: Load) -> np.ndarray:
        """The global row of each id (-1: not in this segment), hash collisions resolved by the
        ids stored in the partitions (one ``load`` call for all candidates' partitions)."""
        candidates = [self.hash_candidates(i) for i in ids]
        result = np.full(len(ids), -1, np.int64)
        needed = sorted({int(p) for rows in candidates for p in self.partition_of(rows)})
        if not needed:
            return result
        parts = dict(zip(needed, load(needed)))
        for n, (doc_id, rows) in enumerate(zip(ids, candidates)):
            for row in rows.tolist():
                part = parts[int(self.partition_of(np.array([row]))[0])]
                if part.ids[row - part.start] == doc_id:
                    result[n] = row
                    break
        return result

    def documents(self, rows: Sequence[int], load: Callable[[Sequence[int]], Sequence[PartitionDocs]],
                  include_metadata: bool = True) -> tuple[list[str], list[dict | None]]:
        """(ids, metadata or None) of global rows, reading only the partitions that hold them."""
        rows_arr = np.asarray(rows, dtype=np.int64)
        owners = self.partition_of(rows_arr)
        needed = sorted(set(owners.tolist()))
        parts = dict(zip(needed, load(needed)))
        ids, meta = [], []
        for row, p in zip(rows_arr.tolist(), owners.tolist()):
            part = parts[p]
            ids.append(part.ids[row - part.start])
            meta.append(part.metadata[row - part.start] if include_metadata else None)
        return ids, meta

    def delete_rows(self, rows: np.ndarray) -> int:
        """Tombstone global rows; returns how many were alive."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[rows >= 0]
        fresh = int((~self.tombstones[rows]).sum()) if len(rows) else 0
        self.tombstones[rows] = True
        return fresh

    def delete(self, ids: Sequence[str], load: Load) -> int:
        """Tombstone documents by id; returns how many live rows were deleted."""
        return self.delete_rows(self.locate(ids, load))

    def nbytes(self) -> int:
        """RAM held while open (header arrays, tombstones, router)."""
        router = 0 if self._router is None else self.nlist * (self.dimension * 4 + 16 * 8 + 64)
        return (
            self.centroids.nbytes + self.table.nbytes + self.id_hashes.nbytes + self.id_rows.nbytes
            + self.tombstones.nbytes + self._centroid_norms.nbytes + router
        )
