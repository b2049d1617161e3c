"""Bulk import and export for the CLI: input readers, resumable checkpoints, a progress line.

Import (over HTTP, through ``tierdb.client.TierDB``) reads one of:

- ``vectors.npy`` (a 2-D float array, memory-mapped) plus an optional ``.jsonl`` of
  ``{"id": ..., "metadata": {...}}``, line i describing row i (default: ``vectors.jsonl`` next to
  the ``.npy`` if it exists; without it the ids are the row numbers);
- a ``.jsonl`` of ``{"id": ..., "vector": [...], "metadata": {...}}`` per line.

It sends batches in order and, after each acknowledged batch, records the number of rows done
in a checkpoint file (``FILE.tierdb-import.json``, or under ``~/.cache/tierdb/imports`` when the
input's directory is read-only).  A rerun of the same command continues after the last
acknowledged batch; re-sending a batch is harmless because upserts are idempotent.  The
checkpoint is removed once the import is complete.

Export reads a collection through the engine from a data directory (the REST API has no way
to list ids): ``.jsonl`` with one document per line, or ``.npy`` vectors plus a ``.jsonl`` of
ids and metadata, the two import formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

CHECKPOINT_SUFFIX = ".tierdb-import.json"
CHECKPOINT_VERSION = 1


class InputError(ValueError):
    """The input files cannot be imported (format, shape, a bad line); names the file and line."""


class UsageError(InputError):
    """The command names files that do not exist or cannot be used that way."""


# -- progress --------------------------------------------------------------------------------------


def _duration(secs: float) -> str:
    secs = int(round(secs))
    hours, rest = divmod(secs, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress report on stderr: done/total, percent, rate and ETA.

    On a terminal the line is redrawn in place (at most 10 times a second); otherwise (logs,
    CI) a new line is written every ``log_interval`` seconds.  Rows skipped because they were
    done by an earlier run count as done but not towards the rate.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        start: int = 0,
        unit: str = "rows",
        stream: IO[str] | None = None,
        enabled: bool = True,
        log_interval: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.start = self.done = start
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_text = ""
        self._width = 0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        pct = f"{100 * self.done / self.total:5.1f}%" if self.total else "  -  "
        eta = _duration((self.total - self.done) / rate) if rate > 0 and self.total >= self.done else "-"
        return (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit} {pct}  "
            f"{rate:,.0f} {self.unit}/s  ETA {eta}"
        )

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= self.interval:
            self._draw(final=False)
            self._last_draw = now

    def finish(self) -> None:
        if self.enabled:
            self._draw(final=True)

    def _draw(self, final: bool) -> None:
        text = self.line()
        if not self.tty and text == self._last_text:
            return
        self._last_text = text
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# -- input readers ---------------------------------------------------------------------------------


class _FullRow(msgspec.Struct, forbid_unknown_fields=True):
    vector: list[float]
    id: str | int | None = None
    metadata: dict[str, Any] | None = None


class _IdRow(msgspec.Struct, forbid_unknown_fields=True):
    id: str | int | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Batch:
    ids: list[str]
    vectors: np.ndarray
    metadatas: list[dict[str, Any] | None]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, content) of the non-blank lines."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def count_rows(path: Path) -> int:
    return sum(1 for _ in _lines(path))


def _decode(decoder: msgspec.json.Decoder[Any], path: Path, number: int, line: bytes) -> Any:
    try:
        return decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise InputError(f"{path}:{number}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"{path}:{number}: malformed JSON ({exc})") from None


def _row_id(value: str | int | None, row: int, path: Path, number: int) -> str:
    if value is None:
        return str(row)
    if isinstance(value, int):
        return str(value)
    if not value:
        raise InputError(f"{path}:{number}: empty id")
    return value


class Source:
    """Rows to import, read in batches from ``start``; ``total`` and ``dimension`` known upfront."""

    total: int
    dimension: int
    files: list[Path]

    def batches(self, start: int, batch_size: int) -> Iterator[Batch]:  # pragma: no cover - interface
        raise NotImplementedError


class NpySource(Source):
    def __init__(self, vectors: Path, ids_metadata: Path | None, limit: int | None) -> None:
        try:
            self.matrix = np.load(vectors, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{vectors}: not a readable .npy array ({exc})") from None
        if self.matrix.ndim != 2 or self.matrix.dtype.kind not in "fiu":
            raise InputError(f"{vectors}: expected a 2-D numeric array, got {self.matrix.dtype} {self.matrix.shape}")
        rows = self.matrix.shape[0]
        self.total = rows if limit is None else min(limit, rows)
        self.dimension = int(self.matrix.shape[1])
        self.ids_metadata = ids_metadata
        self.files = [vectors] + ([ids_metadata] if ids_metadata else [])
        if ids_metadata is not None:
            lines = count_rows(ids_metadata)
            if lines < self.total or (limit is None and lines != rows):
                raise InputError(
                    f"{ids_metadata} has {lines:,} lines but {vectors} has {rows:,} rows: line i must describe row i"
                )

    def batches(self, start: int, batch_size: int) -> Iterator[Batch]:
        lines = _lines(self.ids_metadata) if self.ids_metadata is not None else None
        decoder = msgspec.json.Decoder(_IdRow)
        if lines is not None:
            for _ in range(start):
                next(lines)
        for first in range(start, self.total, batch_size):
            last = min(first + batch_size, self.total)
            ids: list[str] = []
            metas: list[dict[str, Any] | None] = []
            for row in range(first, last):
                if lines is None:
                    ids.append(str(row))
                    metas.append(None)
                    continue
                number, line = next(lines)
                record = _decode(decoder, self.ids_metadata, number, line)  # type: ignore[arg-type]
                ids.append(_row_id(record.id, row, self.ids_metadata, number))  # type: ignore[arg-type]
                metas.append(record.metadata)
            vectors = np.asarray(self.matrix[first:last], dtype=np.float32)
            yield Batch(ids, vectors, metas)


class JsonlSource(Source):
    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.files = [path]
        rows = count_rows(path)
        self.total = rows if limit is None else min(limit, rows)
        self._decoder = msgspec.json.Decoder(_FullRow)
        self.dimension = 0
        for number, line in _lines(path):
            self.dimension = len(_decode(self._decoder, path, number, line).vector)
            break
        if rows and not self.dimension:
            raise InputError(f"{path}: the first line has an empty vector")

    def batches(self, start: int, batch_size: int) -> Iterator[Batch]:
        lines = _lines(self.path)
        for _ in range(start):
            next(lines)
        for first in range(start, self.total, batch_size):
            last = min(first + batch_size, self.total)
            ids: list[str] = []
            vectors: list[list[float]] = []
            metas: list[dict[str, Any] | None] = []
            for row in range(first, last):
                number, line = next(lines)
                record = _decode(self._decoder, self.path, number, line)
                if len(record.vector) != self.dimension:
                    raise InputError(
                        f"{self.path}:{number}: vector has {len(record.vector)} values, the first line has {self.dimension}"
                    )
                ids.append(_row_id(record.id, row, self.path, number))
                vectors.append(record.vector)
                metas.append(record.metadata)
            yield Batch(ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dimension), metas)


def open_source(path: Path, ids_metadata: Path | None = None, limit: int | None = None) -> Source:
    """The reader for ``path`` (.npy or .jsonl); raises InputError naming the problem."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if limit is not None and limit < 0:
        raise UsageError("--limit must be >= 0")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if ids_metadata is None and path.with_suffix(".jsonl").is_file():
            ids_metadata = path.with_suffix(".jsonl")
        if ids_metadata is not None and not ids_metadata.is_file():
            raise UsageError(f"{ids_metadata}: no such file")
        return NpySource(path, ids_metadata, limit)
    if suffix in (".jsonl", ".ndjson"):
        if ids_metadata is not None:
            raise UsageError("--ids-metadata goes with a .npy input; a .jsonl input carries ids and metadata itself")
        return JsonlSource(path, limit)
    raise UsageError(f"{path}: unsupported input (expected .npy vectors [+ .jsonl ids/metadata] or .jsonl documents)")


# -- checkpoints -----------------------------------------------------------------------------------


def default_checkpoint(path: Path) -> Path:
    """``FILE.tierdb-import.json`` next to the input, or in the user's cache directory when the
    input's directory is not writable (a shared, read-only dataset)."""
    beside = path.with_name(path.name + CHECKPOINT_SUFFIX)
    if os.access(path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tierdb" / "imports"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache / f"{path.name}-{digest}{CHECKPOINT_SUFFIX}"


def _fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


@dataclass
class Checkpoint:
    """What a rerun needs to continue: which import this was and how many rows are acknowledged."""

    path: Path
    identity: dict[str, Any]
    rows_done: int = 0

    def load(self) -> tuple[int, str | None]:
        """(rows to skip, why an existing checkpoint is ignored or None)."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError) as exc:
            return 0, f"unreadable checkpoint {self.path} ({exc}); starting from the first row"
        if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
            return 0, f"checkpoint {self.path} has an unknown format; starting from the first row"
        for key, value in self.identity.items():
            if saved.get(key) != value:
                return 0, f"checkpoint {self.path} is for a different {key.replace('_', ' ')}; starting from the first row"
        rows = saved.get("rows_done")
        if not isinstance(rows, int) or rows < 0:
            return 0, f"checkpoint {self.path} is damaged; starting from the first row"
        self.rows_done = rows
        return rows, None

    def save(self, rows_done: int) -> None:
        """Atomically record ``rows_done`` (write a temporary file, then rename it over)."""
        self.rows_done = rows_done
        payload = {"version": CHECKPOINT_VERSION, **self.identity, "rows_done": rows_done, "updated_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def import_identity(source: Source, collection: str, url: str, limit: int | None) -> dict[str, Any]:
    return {"collection": collection, "url": url, "inputs": _fingerprint(source.files), "limit": limit}


# -- import ----------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    collection: str
    total: int           # rows in the input (after --limit)
    resumed_from: int    # rows an earlier run had already imported
    imported: int        # rows sent by this run
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "rows": self.total,
            "resumed_from": self.resumed_from,
            "imported": self.imported,
            "seconds": round(self.seconds, 3),
            "rows_per_sec": round(self.imported / self.seconds, 1) if self.seconds > 0 else None,
        }


def run_import(
    upsert: Callable[[Batch], int],
    source: Source,
    checkpoint: Checkpoint,
    *,
    start: int,
    batch_size: int,
    progress: Progress,
    collection: str,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Send the rows from ``start`` in batches; after each acknowledged batch save the checkpoint.

    Any exception (server error, bad input line, Ctrl-C) leaves the checkpoint at the last
    acknowledged batch, so the same command resumes from there.  ``on_batch(rows_done)`` is
    called after each checkpoint (tests use it to interrupt an import).
    """
    started = time.monotonic()
    done = start
    try:
        for batch in source.batches(start, batch_size):
            upsert(batch)
            done += len(batch.ids)
            checkpoint.save(done)
            progress.update(done)
            if on_batch is not None:
                on_batch(done)
    finally:
        progress.finish()
    checkpoint.remove()
    return ImportResult(collection, source.total, start, done - start, time.monotonic() - started)


# -- export ----------------------------------------------------------------------------------------


def _live_ids(collection: Any) -> list[str]:
    return collection.ids()


_json_line = msgspec.json.Encoder()


async def export_collection(
    settings: Any,
    name: str,
    out: Path,
    *,
    ids_metadata: Path | None = None,
    batch_size: int = 1000,
    progress_enabled: bool = True,
) -> dict[str, Any]:
    """Write every document of ``name`` (read from ``settings.storage.data_dir``) to ``out``.

    ``out`` ``.jsonl``: ``{"id", "vector", "metadata"}`` per line.  ``out`` ``.npy``: the vectors
    (float32, n x dimension) plus ``{"id", "metadata"}`` lines in ``ids_metadata`` (default:
    ``out`` with a ``.jsonl`` suffix).  Files are written under a temporary name and renamed when
    complete.  Raises ``tierdb.errors.TierDBError`` (not_found, ...) from the engine.
    """
    from .node import Engine

    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".npy"):
        raise UsageError(f"{out}: unsupported output (expected .jsonl, or .npy plus a .jsonl of ids and metadata)")
    if suffix != ".npy" and ids_metadata is not None:
        raise UsageError("--ids-metadata goes with a .npy output")
    if suffix == ".npy" and ids_metadata is None:
        ids_metadata = out.with_suffix(".jsonl")
    engine = Engine(settings)
    await engine.start()
    started = time.monotonic()
    tmp_out = out.with_name(out.name + ".partial")
    tmp_meta = ids_metadata.with_name(ids_metadata.name + ".partial") if ids_metadata else None
    try:
        collection = engine.get_collection(name)
        dimension = collection.spec.dimension
        written = await _write_export(collection, tmp_out, tmp_meta, batch_size, progress_enabled)
        if tmp_meta is not None and ids_metadata is not None:
            os.replace(tmp_meta, ids_metadata)
        os.replace(tmp_out, out)
    finally:
        for leftover in (tmp_out, tmp_meta):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        await engine.close()
    files = [str(out)] + ([str(ids_metadata)] if suffix == ".npy" else [])
    return {"collection": name, "documents": written, "dimension": dimension, "files": files,
            "seconds": round(time.monotonic() - started, 3)}


async def _write_export(
    collection: Any, tmp_out: Path, tmp_meta: Path | None, batch_size: int, progress_enabled: bool
) -> int:
    """Write the documents to the temporary file(s); returns how many were written."""
    ids = _live_ids(collection)
    progress = Progress(f"export {collection.name}", len(ids), enabled=progress_enabled)
    matrix = None
    if tmp_meta is not None:  # .npy output: vectors in an array, ids and metadata as lines
        matrix = np.lib.format.open_memmap(
            tmp_out, mode="w+", dtype=np.float32, shape=(len(ids), collection.spec.dimension)
        )
    written = 0
    try:
        with open(tmp_meta if tmp_meta is not None else tmp_out, "wb") as lines:
            for first in range(0, len(ids), batch_size):
                documents = await collection.get(ids[first : first + batch_size])
                for doc in documents:  # an id deleted meanwhile is simply absent
                    if matrix is not None:
                        matrix[written] = doc.vector
                        record: dict[str, Any] = {"id": doc.id, "metadata": doc.metadata}
                    else:
                        record = {"id": doc.id, "vector": doc.vector, "metadata": doc.metadata}
                    lines.write(_json_line.encode(record) + b"\n")
                    written += 1
                progress.update(written)
    finally:
        progress.finish()
    if matrix is not None:
        matrix.flush()
        if written != len(ids):  # documents vanished while exporting: shrink the array
            rows = np.array(matrix[:written])
            del matrix
            with open(tmp_out, "wb") as f:
                np.save(f, rows)
    return written
