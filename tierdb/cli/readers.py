"""The input readers of ``tierdb import``.

- ``vectors.npy`` (a 2-D float array, memory-mapped) plus an optional ``.jsonl`` of
  ``{"id": ..., "metadata": {...}}``, line i describing row i (default: ``vectors.jsonl`` next to
  the ``.npy`` if it exists; without it the ids are the row numbers);
- a ``.jsonl`` of ``{"id": ..., "vector": [...], "metadata": {...}}`` per line.

Both yield batches from any row, so an import can resume where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np


class InputError(ValueError):
    """The input files cannot be imported (format, shape, a bad line); names the file and line."""


class UsageError(InputError):
    """The command names files that do not exist or cannot be used that way."""


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

