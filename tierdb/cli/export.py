"""``tierdb export``: write a collection, read from a data directory, to the import formats.

The REST API has no way to list ids, so export opens the data directory through the engine
(which also takes the directory lock, so it refuses while a server has it open): ``.jsonl``
with one document per line, or ``.npy`` vectors plus a ``.jsonl`` of ids and metadata.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ..node import Engine  # the CLI's only import of the composition root
from .progress import Progress
from .readers import UsageError


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
    ids = await collection.live_ids()
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
