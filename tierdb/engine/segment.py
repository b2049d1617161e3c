"""Immutable segments: one object holding ids, vectors, metadata and an optional hnswlib index.

Layout: ``b"TDBSEG01" | u32 header length | msgpack header | sections``.  The header records
format version, dimension, metric, row count, hnsw parameters and, per section, its offset,
length and sha256.  Opening a segment loads the saved index; it never rebuilds one.

Format 2 (written now) stores every vector once:
  ``ids``            msgpack list of str
  ``metadata``       the rows' msgpack encodings back to back (``nil`` for no metadata) ...
  ``meta_offsets``   ... and where each starts: little-endian u64, rows + 1 of them
  indexed segments:  ``index`` (hnswlib's own serialisation, which holds the vectors) and
                     ``norms`` (float32 |row|; for cosine hnswlib keeps only the normalised
                     vector, raw = normalised x norm)
  other segments:    ``vectors`` (float32 rows)
Format 1 (still read) always had ``vectors`` and a msgpack list of metadata dicts.

In RAM the same holds: an indexed segment keeps the index, the norms, the metadata bytes and
offsets (rows are decoded when asked for) and its ids; raw vectors are read back from the
index (``vectors_of``).

Longer than ~500 lines on purpose: the format (encode/decode, both versions), the in-RAM
segment that reads it and the index build/grow helpers change together; split them when the
partitioned format (partitioned.py) replaces this one for S3 placements.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import hnswlib
import msgspec
import numpy as np

from ..errors import corrupt
from ..models import HnswParams
from . import vectors as vec
from .rows import RowSource, SearchResult
from .rwlock import RWLock

MAGIC = b"TDBSEG01"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_LEN = struct.Struct("<I")


class SectionRef(msgspec.Struct, array_like=True):
    offset: int
    length: int
    sha256: str


class SegmentHeader(msgspec.Struct):
    format: int
    dimension: int
    metric: str
    rows: int
    hnsw: HnswParams
    sections: dict[str, SectionRef]


_ids_codec = msgspec.msgpack.Decoder(list[str])
_meta_codec = msgspec.msgpack.Decoder(list[dict | None])
_header_codec = msgspec.msgpack.Decoder(SegmentHeader)
_row_meta_codec = msgspec.msgpack.Decoder(dict | None)
_encoder = msgspec.msgpack.Encoder()
_MSGPACK_ARRAY32 = b"\xdd"


class MetadataColumn:
    """Rows' metadata as one msgpack blob plus offsets: no Python object per row until a row is
    read.  Indexing decodes one row; iterating decodes them all in one call (filter scans)."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: bytes, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets  # int64, len(rows) + 1

    @classmethod
    def of(cls, metadata: list[dict | None] | MetadataColumn) -> "MetadataColumn":
        if isinstance(metadata, MetadataColumn):
            return metadata
        buf = bytearray()
        offsets = np.empty(len(metadata) + 1, np.int64)
        offsets[0] = 0
        for i, md in enumerate(metadata):
            _encoder.encode_into(md, buf, -1)
            offsets[i + 1] = len(buf)
        return cls(bytes(buf), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> dict | None:
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"metadata row {row} out of range ({n} rows)")
        row %= n
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return _row_meta_codec.decode(memoryview(self.blob)[start:end])

    def __iter__(self) -> Iterator[dict | None]:
        # The rows are consecutive msgpack values, so an array header makes them one list.
        whole = b"".join([_MSGPACK_ARRAY32, struct.pack(">I", len(self)), self.blob])
        return iter(_meta_codec.decode(whole))

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.offsets.nbytes


class SegmentData:
    """The heavy part of a segment: what an s3_only node may evict from RAM and load again.

    ``raw`` is None for indexed segments: their vectors live only in the index."""

    __slots__ = ("raw", "norms", "metadata", "index")

    def __init__(
        self, raw: np.ndarray | None, norms: np.ndarray, metadata: MetadataColumn, index: hnswlib.Index | None
    ) -> None:
        self.raw = raw
        self.norms = norms
        self.metadata = metadata
        self.index = index

    def nbytes(self) -> int:
        rows = len(self.norms)
        raw_bytes = 0 if self.raw is None else self.raw.nbytes
        index_bytes = 0 if self.index is None else rows * (self.index.dim * 4 + self.index.M * 8 + 64)
        return raw_bytes + self.norms.nbytes + index_bytes + self.metadata.nbytes


class Segment(RowSource):
    """A loaded segment. Labels in the hnswlib index are row numbers.

    Ids, the live mask and deaths always stay in RAM (the collection's live map needs them).
    With a ``loader`` (s3_only), the vectors, metadata and index can be dropped by ``unload()``
    and are read back from the disk cache / S3 on the next access, deaths re-applied.
    """

    def __init__(
        self,
        segment_id: str,
        metric: str,
        ids: list[str],
        raw: np.ndarray | None,
        metadata: list[dict | None] | MetadataColumn,
        index: hnswlib.Index | None,
        ef_search: int,
        *,
        norms: np.ndarray | None = None,
    ) -> None:
        """``raw`` may be None when ``index`` and ``norms`` are given; with an index it is not
        kept (the index holds the vectors)."""
        if raw is None and (index is None or norms is None):
            raise ValueError("a segment without raw vectors needs its index and row norms")
        super().__init__(metric, index.dim if raw is None else raw.shape[1])
        self.id = segment_id
        self.ids = ids
        self._alive = np.ones(len(ids), bool)
        self._indexed = index is not None
        row_norms = norms if norms is not None else vec.norms(raw)
        kept_raw = None if index is not None else np.ascontiguousarray(raw, dtype=np.float32)
        self._data: SegmentData | None = SegmentData(kept_raw, row_norms, MetadataColumn.of(metadata), index)
        self.default_ef = ef_search
        self._ef_lock = RWLock()
        self._load_lock = threading.Lock()
        self.loader: Callable[[], "Segment"] | None = None
        self.on_access: Callable[["Segment", bool], None] | None = None  # (segment, was_resident)

    # -- residency ------------------------------------------------------------------------------
    def data(self) -> SegmentData:
        data = self._data
        resident = data is not None
        if data is None:
            with self._load_lock:
                data = self._data
                if data is None:
                    data = self._reload()
                    self._data = data
        if self.on_access is not None:
            self.on_access(self, resident)
        return data

    def _reload(self) -> SegmentData:
        assert self.loader is not None, f"segment {self.id} was unloaded without a loader"
        fresh = self.loader()._data
        assert fresh is not None
        if fresh.index is not None:  # caller holds _load_lock, so _alive and the index agree
            for row in np.flatnonzero(~self._alive).tolist():
                fresh.index.mark_deleted(row)
        return fresh

    @property
    def resident(self) -> bool:
        return self._data is not None

    def unload(self) -> int:
        """Drop the heavy data (only when it can be loaded again); returns the bytes freed."""
        with self._load_lock:
            if self.loader is None or self._data is None:
                return 0
            freed = self._data.nbytes()
            self._data = None
            return freed

    # -- RowSource ------------------------------------------------------------------------------
    @property
    def indexed(self) -> bool:
        return self._indexed

    @property
    def index(self) -> hnswlib.Index | None:
        return self.data().index

    @property
    def metadata(self) -> MetadataColumn:  # type: ignore[override]
        return self.data().metadata

    def size(self) -> int:
        return len(self.ids)

    def alive_mask(self) -> np.ndarray:
        return self._alive

    def raw_vectors(self) -> np.ndarray:
        """All rows' raw vectors; for an indexed segment a fresh copy read from the index."""
        data = self.data()
        if data.raw is not None:
            return data.raw
        return self.vectors_of(np.arange(self.size()))

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """Raw float32 vectors of ``rows`` (dead rows included), shape (len(rows), dimension)."""
        rows = np.asarray(rows, dtype=np.int64)
        data = self.data()
        if data.raw is not None:
            return data.raw[rows]
        if len(rows) == 0:
            return np.empty((0, self.dimension), np.float32)
        assert data.index is not None
        try:
            stored = data.index.get_items(rows, return_type="numpy")
        except RuntimeError:  # hnswlib refuses deleted labels: read those with searches held off
            stored = self._vectors_including_deleted(data, rows)
        stored = np.asarray(stored, dtype=np.float32).reshape(len(rows), self.dimension)
        if self.metric == "cosine":
            stored *= data.norms[rows][:, None]
        return stored

    def _vectors_including_deleted(self, data: SegmentData, rows: np.ndarray) -> np.ndarray:
        """Unmark, read and re-mark deleted rows.  The ef write lock keeps every search of this
        index out meanwhile; _load_lock keeps kills (mark_deleted) out.  Only dead rows can be
        marked; one may not be in ``data`` if it was evicted and reloaded since (then it is
        left as it is)."""
        index = data.index
        assert index is not None
        with self._ef_lock.write(), self._load_lock:
            dead = []
            for row in np.unique(rows).tolist():
                if not self._alive[row]:
                    try:
                        index.unmark_deleted(row)
                    except RuntimeError:  # not marked in this copy of the index
                        continue
                    dead.append(row)
            try:
                return index.get_items(rows, return_type="numpy")
            finally:
                for row in dead:
                    index.mark_deleted(row)

    def row_norms(self) -> np.ndarray:
        return self.data().norms

    def nbytes(self) -> int:
        data = self._data
        return data.nbytes() if data is not None else 0

    def _kill_row(self, row: int) -> None:
        with self._load_lock:
            self._alive[row] = False
            if self._data is not None and self._data.index is not None:
                self._data.index.mark_deleted(row)

    def search_without_waiting(self, queries: np.ndarray, k: int) -> SearchResult | None:
        """``search(queries, k, default_ef, None)`` if it needs no I/O and no waiting for a lock
        (data resident and never evicted, ef lock free, k within the default ef); else None and
        the caller uses ``search``."""
        data = self._data
        if data is None or data.index is None or self.loader is not None or self.on_access is not None or k > self.default_ef:
            return None
        n_candidates = self.live_count()
        if n_candidates == 0 or k <= 0:
            return SearchResult(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32))
        if not self._ef_lock.try_acquire_read():
            return None
        try:
            labels, dist = data.index.knn_query(queries, k=min(k, n_candidates), num_threads=1)
        except RuntimeError:  # fewer than k reachable rows: ``search`` answers exactly
            return None
        finally:
            self._ef_lock.release_read()
        return SearchResult(labels.astype(np.int64), dist.astype(np.float32, copy=False))

    def _index_search(self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None) -> SearchResult | None:
        if not self._indexed:
            return None
        index = self.data().index
        assert index is not None
        ef = max(ef, k)
        threads = 1 if len(queries) == 1 or allowed is not None else -1
        flt = None if allowed is None else (lambda label: bool(allowed[label]))
        try:
            if ef == self.default_ef:
                with self._ef_lock.read():
                    labels, dist = index.knn_query(queries, k=k, num_threads=threads, filter=flt)
            else:
                with self._ef_lock.write():
                    index.set_ef(ef)
                    try:
                        labels, dist = index.knn_query(queries, k=k, num_threads=threads, filter=flt)
                    finally:
                        index.set_ef(self.default_ef)
        except RuntimeError:
            # hnswlib could not find k rows (many deletions or a selective filter): be exact.
            return None
        return SearchResult(labels.astype(np.int64), dist.astype(np.float32, copy=False))


# -- building and encoding --------------------------------------------------------------------
# hnswlib cannot be interrupted inside one add_items call, so a build inserts its rows in
# slices and checks its stop flag between them.  Slices are sized to take about
# _BUILD_SLICE_SECS each (rows per second vary a lot with dimension, M, ef_construction and
# the load of the machine), so a stop is noticed within a fraction of a second.
_BUILD_SLICE_SECS = 0.2
_MIN_SLICE_ROWS = 256
_MAX_SLICE_ROWS = 65_536


class BuildAbandoned(Exception):
    """An index build stopped by its ``should_stop`` flag (the collection is closing)."""


def build_index(
    raw: np.ndarray,
    metric: str,
    params: HnswParams,
    threads: int,
    should_stop: Callable[[], bool] | None = None,
) -> hnswlib.Index:
    """Insert the rows in order (label = row number), in slices; raise BuildAbandoned between
    slices once ``should_stop()`` is true."""
    index = hnswlib.Index(space=metric, dim=raw.shape[1])
    index.init_index(max_elements=max(len(raw), 1), M=params.m, ef_construction=params.ef_construction, allow_replace_deleted=False)
    _add_in_slices(index, raw, 0, threads, should_stop)
    index.set_ef(params.ef_search)
    return index


def clone_index(index: hnswlib.Index, capacity: int) -> hnswlib.Index:
    """A private copy of ``index`` with room for ``capacity`` rows, deletion marks included;
    ``index`` itself is untouched (it may keep serving searches meanwhile)."""
    with _scratch_path() as path:
        index.save_index(path)
        clone = hnswlib.Index(space=index.space, dim=index.dim)
        clone.load_index(path, max_elements=max(capacity, index.element_count, 1))
    clone.set_ef(index.ef)
    return clone


def clear_deletions(index: hnswlib.Index, rows: Iterable[int]) -> None:
    """Unmark ``rows`` that carry a deletion mark (rows without one are skipped), so a saved
    index holds no marks: whoever loads it re-applies the deaths the manifest records."""
    for row in rows:
        try:
            index.unmark_deleted(int(row))
        except RuntimeError:  # not marked: the row died after the index was cloned
            pass


def grow_index(
    index: hnswlib.Index,
    new_raw: np.ndarray,
    params: HnswParams,
    threads: int,
    should_stop: Callable[[], bool] | None = None,
) -> hnswlib.Index:
    """Append ``new_raw`` to ``index`` (a private clone) as rows ``element_count ..``: the graph
    of the existing rows is kept, only the new rows are inserted.  Abandonable like
    ``build_index``."""
    first = index.element_count
    if index.get_max_elements() < first + len(new_raw):
        index.resize_index(first + len(new_raw))
    _add_in_slices(index, new_raw, first, threads, should_stop)
    index.set_ef(params.ef_search)
    return index


def _add_in_slices(
    index: hnswlib.Index,
    raw: np.ndarray,
    first_label: int,
    threads: int,
    should_stop: Callable[[], bool] | None,
) -> None:
    """``add_items`` of ``raw`` as labels ``first_label ..`` in slices of about
    _BUILD_SLICE_SECS; raise BuildAbandoned between slices once ``should_stop()`` is true."""
    start, rows = 0, _MIN_SLICE_ROWS
    while start < len(raw):
        if should_stop is not None and should_stop():
            raise BuildAbandoned(f"index build stopped after {start} of {len(raw)} rows")
        end = min(start + rows, len(raw))
        began = time.perf_counter()
        index.add_items(raw[start:end], np.arange(first_label + start, first_label + end), num_threads=threads or -1)
        took = time.perf_counter() - began
        rate = (end - start) / max(took, 1e-6)
        rows = int(min(max(rate * _BUILD_SLICE_SECS, _MIN_SLICE_ROWS), _MAX_SLICE_ROWS, 2 * rows))
        start = end


def encode(
    raw: np.ndarray,
    ids: list[str],
    metadata: list[dict | None] | MetadataColumn,
    metric: str,
    params: HnswParams,
    index: hnswlib.Index | None,
    *,
    norms: np.ndarray | None = None,
) -> bytes:
    """Format-2 bytes of a segment (``norms`` = |row| of ``raw`` when the caller has them)."""
    column = MetadataColumn.of(metadata)
    sections: dict[str, bytes] = {
        "ids": _encoder.encode(ids),
        "metadata": column.blob,
        "meta_offsets": column.offsets.astype("<u8").tobytes(),
    }
    if index is not None:
        row_norms = norms if norms is not None else vec.norms(raw)
        sections["norms"] = np.ascontiguousarray(row_norms, dtype="<f4").tobytes()
        sections["index"] = _index_to_bytes(index)
    else:
        sections["vectors"] = np.ascontiguousarray(raw, dtype="<f4").tobytes()
    refs: dict[str, SectionRef] = {}
    offset = 0
    for name, data in sections.items():
        refs[name] = SectionRef(offset, len(data), hashlib.sha256(data).hexdigest())
        offset += len(data)
    header = _encoder.encode(
        SegmentHeader(FORMAT_VERSION, raw.shape[1], metric, len(ids), params, refs)
    )
    return b"".join([MAGIC, _LEN.pack(len(header)), header, *sections.values()])


def decode(segment_id: str, data: bytes, *, verify: bool = True) -> Segment:
    """Open a segment from its bytes; raises CORRUPT naming the segment and the section."""
    view = memoryview(data)
    if bytes(view[:8]) != MAGIC:
        raise corrupt(f"segment {segment_id}: bad magic", segment=segment_id)
    (header_len,) = _LEN.unpack_from(view, 8)
    body = 12 + header_len
    try:
        header = _header_codec.decode(view[12:body])
    except msgspec.DecodeError as exc:
        raise corrupt(f"segment {segment_id}: unreadable header ({exc})", segment=segment_id) from exc
    if header.format not in READABLE_VERSIONS:
        raise corrupt(f"segment {segment_id}: unsupported format {header.format}", segment=segment_id)

    def section(name: str) -> memoryview:
        ref = header.sections.get(name)
        if ref is None:
            raise corrupt(f"segment {segment_id}: section {name!r} is missing", segment=segment_id)
        chunk = view[body + ref.offset : body + ref.offset + ref.length]
        if len(chunk) != ref.length or (verify and hashlib.sha256(chunk).hexdigest() != ref.sha256):
            raise corrupt(f"segment {segment_id}: section {name!r} failed its checksum", segment=segment_id)
        return chunk

    def array(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        chunk = section(name)
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if len(chunk) != expected:
            raise corrupt(f"segment {segment_id}: section {name!r} has {len(chunk)} bytes, expected {expected}",
                          segment=segment_id)
        # Copied so nothing keeps the whole file's bytes alive.
        return np.frombuffer(chunk, dtype=dtype).reshape(shape).astype(dtype[1:], copy=True)

    rows, dim = header.rows, header.dimension
    ids = _ids_codec.decode(section("ids"))
    if len(ids) != rows:
        raise corrupt(f"segment {segment_id}: {len(ids)} ids for {rows} rows", segment=segment_id)
    index = None
    if "index" in header.sections:
        index = _index_from_bytes(section("index"), header.metric, dim, rows)
        index.set_ef(header.hnsw.ef_search)
    if header.format == 1:
        raw = array("vectors", "<f4", (rows, dim))
        metadata: list[dict | None] | MetadataColumn = _meta_codec.decode(section("metadata"))
        return Segment(segment_id, header.metric, ids, raw, metadata, index, header.hnsw.ef_search)
    offsets = array("meta_offsets", "<u8", (rows + 1,)).astype(np.int64)
    blob = bytes(section("metadata"))
    if offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 1):
        raise corrupt(f"segment {segment_id}: section 'meta_offsets' does not match section 'metadata'", segment=segment_id)
    metadata = MetadataColumn(blob, offsets)
    if index is None:
        raw = array("vectors", "<f4", (rows, dim))
        return Segment(segment_id, header.metric, ids, raw, metadata, None, header.hnsw.ef_search)
    norms = array("norms", "<f4", (rows,))
    return Segment(segment_id, header.metric, ids, None, metadata, index, header.hnsw.ef_search, norms=norms)


@contextmanager
def _scratch_path() -> Iterator[str]:
    """A path hnswlib can save to / load from without touching the disk where possible."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("tierdb-hnsw")
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:  # pragma: no cover - non-Linux
        with tempfile.TemporaryDirectory(prefix="tierdb-hnsw-") as tmp:
            yield os.path.join(tmp, "index.bin")


def _index_to_bytes(index: hnswlib.Index) -> bytes:
    with _scratch_path() as path:
        index.save_index(path)
        with open(path, "rb") as f:
            return f.read()


def _index_from_bytes(data: memoryview, metric: str, dimension: int, rows: int) -> hnswlib.Index:
    index = hnswlib.Index(space=metric, dim=dimension)
    with _scratch_path() as path:
        with open(path, "wb") as f:
            f.write(data)
        index.load_index(path, max_elements=max(rows, 1))
    return index
