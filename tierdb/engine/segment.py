"""Immutable segments: one object holding ids, vectors, metadata and an optional hnswlib index.

Layout: ``b"TDBSEG01" | u32 header length | msgpack header | sections``.  The header records
format version, dimension, metric, row count, hnsw parameters and, per section, its offset,
length and sha256.  Sections: ``ids`` (msgpack list), ``vectors`` (float32 rows), ``metadata``
(msgpack list) and, for segments with at least ``index.threshold`` rows, ``index`` (hnswlib's
own serialisation).  Opening a segment loads the saved index; it never rebuilds one.
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
FORMAT_VERSION = 1
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
_encoder = msgspec.msgpack.Encoder()


class SegmentData:
    """The heavy part of a segment: what an s3_only node may evict from RAM and load again."""

    __slots__ = ("raw", "norms", "metadata", "index")

    def __init__(self, raw: np.ndarray, metadata: list[dict | None], index: hnswlib.Index | None) -> None:
        self.raw = raw
        self.norms = vec.norms(raw)
        self.metadata = metadata
        self.index = index

    def nbytes(self) -> int:
        rows, dim = self.raw.shape
        index_bytes = 0 if self.index is None else rows * (dim * 4 + self.index.M * 8 + 64)
        return self.raw.nbytes + self.norms.nbytes + index_bytes + 150 * rows


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
        raw: np.ndarray,
        metadata: list[dict | None],
        index: hnswlib.Index | None,
        ef_search: int,
    ) -> None:
        super().__init__(metric, raw.shape[1])
        self.id = segment_id
        self.ids = ids
        self._alive = np.ones(len(ids), bool)
        self._indexed = index is not None
        self._data: SegmentData | None = SegmentData(raw, metadata, index)
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
        for row in self.death_seq:
            if fresh.index is not None:
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
    def metadata(self) -> list[dict | None]:  # type: ignore[override]
        return self.data().metadata

    def size(self) -> int:
        return len(self.ids)

    def alive_mask(self) -> np.ndarray:
        return self._alive

    def raw_vectors(self) -> np.ndarray:
        return self.data().raw

    def row_norms(self) -> np.ndarray:
        return self.data().norms

    def nbytes(self) -> int:
        data = self._data
        return data.nbytes() if data is not None else 0

    def _kill_row(self, row: int) -> None:
        self._alive[row] = False
        with self._load_lock:
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
    if header.format != FORMAT_VERSION:
        raise corrupt(f"segment {segment_id}: unsupported format {header.format}", segment=segment_id)

    def section(name: str) -> memoryview:
        ref = header.sections[name]
        chunk = view[body + ref.offset : body + ref.offset + ref.length]
        if len(chunk) != ref.length or (verify and hashlib.sha256(chunk).hexdigest() != ref.sha256):
            raise corrupt(f"segment {segment_id}: section {name!r} failed its checksum", segment=segment_id)
        return chunk

    ids = _ids_codec.decode(section("ids"))
    raw = np.frombuffer(section("vectors"), dtype=np.float32).reshape(header.rows, header.dimension).copy()
    metadata = _meta_codec.decode(section("metadata"))
    index = None
    if "index" in header.sections:
        index = _index_from_bytes(section("index"), header.metric, header.dimension, header.rows)
        index.set_ef(header.hnsw.ef_search)
    return Segment(segment_id, header.metric, ids, raw, metadata, index, header.hnsw.ef_search)


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
