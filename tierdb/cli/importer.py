"""``tierdb import``: bulk-load documents into a collection over HTTP, resumably.

Batches are sent in order through ``tierdb.client.TierDB``; after each acknowledged batch the
number of rows done is saved in a checkpoint (``checkpoint.py``), so a rerun of the same
command continues after the last acknowledged batch.  Re-sending a batch is harmless because
upserts are idempotent.  The checkpoint is removed once the import is complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, default_checkpoint, import_identity
from .connection import add_server_flags, fail_client, open_client
from .exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from .options import positive_int
from .output import emit, fail
from .progress import Progress

if TYPE_CHECKING:
    from .readers import Batch, Source

IMPORT_RETRIES = 6  # a long import rides out a server restart of a few seconds


# -- the import loop -------------------------------------------------------------------------------


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


def send_batches(
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


# -- the command -----------------------------------------------------------------------------------


def add_import(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import",
        help="bulk-load documents from .npy (+ .jsonl) or .jsonl files, resumable",
        description=(
            "Upsert the documents of FILE into a collection, in batches, with a progress line (rate, ETA) "
            "on stderr. FILE is either VECTORS.npy (n x dim) with --ids-metadata FILE.jsonl of "
            "{\"id\", \"metadata\"} per line (line i = row i; default VECTORS.jsonl if it exists, else ids "
            "are row numbers), or a .jsonl of {\"id\", \"vector\", \"metadata\"} per line. After each "
            "acknowledged batch the row count is saved in a checkpoint (FILE.tierdb-import.json, or "
            "~/.cache/tierdb/imports when FILE's directory is read-only): if the import stops (Ctrl-C, "
            "crash, server down), run the same command again and it continues from there. Upserts are "
            "idempotent, so a batch sent twice does no harm."
        ),
    )
    parser.add_argument("file", metavar="FILE", type=Path, help=".npy vectors or .jsonl documents")
    parser.add_argument("--collection", required=True, metavar="NAME")
    parser.add_argument("--ids-metadata", type=Path, metavar="FILE.jsonl", help="ids and metadata for a .npy FILE")
    parser.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    parser.add_argument("--dimension", type=positive_int, metavar="N", help="with --create (default: from FILE)")
    parser.add_argument("--metric", choices=["cosine", "l2", "ip"], default="cosine", help="with --create")
    parser.add_argument("--policy", metavar="POLICY", help="with --create: memory | memory_s3 | s3_only")
    parser.add_argument("--batch-size", type=positive_int, default=1000, metavar="N", help="documents per request")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="import only the first N rows")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH", help="checkpoint file (default: next to FILE)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint, start at row 0")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    add_server_flags(parser, retries=IMPORT_RETRIES)
    parser.set_defaults(run=run_import)


def _prepare_collection(db: Any, args: argparse.Namespace, dimension: int) -> Any:
    """The target collection's info, created with --create; raises InputError on a mismatch."""
    from ..client import Conflict, NotFound
    from .readers import InputError, UsageError

    if args.dimension is not None and args.dimension != dimension:
        raise UsageError(f"--dimension {args.dimension} does not match the input, whose vectors have {dimension} values")
    try:
        info = db.get_collection(args.collection)
    except NotFound:
        if not args.create:
            raise
        try:
            info = db.create_collection(args.collection, dimension, args.metric, args.policy)
            print(f"created collection {args.collection!r} (dimension {dimension}, {args.metric})", file=sys.stderr)
        except Conflict:  # created concurrently by someone else: use it
            info = db.get_collection(args.collection)
    if info.dimension != dimension:
        raise InputError(f"collection {args.collection!r} has dimension {info.dimension}, the input has {dimension}")
    return info


def run_import(args: argparse.Namespace, on_batch: Callable[[int], None] | None = None) -> int:
    from ..client import TierDBClientError
    from .readers import InputError, UsageError, open_source

    try:
        source = open_source(args.file, args.ids_metadata, args.limit)
    except UsageError as exc:
        return fail(args.json, EXIT_CONFIG, "usage", str(exc))
    except InputError as exc:
        return fail(args.json, EXIT_FAILURE, "invalid_input", str(exc))
    checkpoint: Checkpoint | None = None
    with open_client(args) as db:
        try:
            _prepare_collection(db, args, source.dimension)
            checkpoint = Checkpoint(
                args.checkpoint or default_checkpoint(args.file),
                import_identity(source, args.collection, db.url, args.limit),
            )
            start, note = (0, None) if args.restart else checkpoint.load()
            start = min(start, source.total)
            if note:
                print(f"note: {note}", file=sys.stderr)
            if start:
                print(f"resuming at row {start:,} of {source.total:,} (checkpoint {checkpoint.path})", file=sys.stderr)
            progress = Progress(f"import {args.collection}", source.total, start=start, enabled=not args.no_progress)
            result = send_batches(
                lambda b: db.upsert(args.collection, b.ids, b.vectors, b.metadatas, batch_size=max(1, len(b.ids))),
                source, checkpoint, start=start, batch_size=args.batch_size, progress=progress,
                collection=args.collection, on_batch=on_batch,
            )
            count = db.count(args.collection)
        except TierDBClientError as exc:
            hint = "" if checkpoint is None else _resume_hint(checkpoint)
            if checkpoint is None and exc.kind == "not_found":
                hint = "use --create to create it"
            return fail_client(args, exc, hint, rows_done=checkpoint.rows_done if checkpoint else 0)
        except InputError as exc:
            rows = checkpoint.rows_done if checkpoint else 0
            code = EXIT_CONFIG if isinstance(exc, UsageError) else EXIT_FAILURE
            return fail(args.json, code, "invalid_input", f"{exc}; {rows:,} rows were imported before it", rows_done=rows)
        except KeyboardInterrupt:
            message = "interrupted" + (f"; {_resume_hint(checkpoint)}" if checkpoint else "")
            return fail(args.json, EXIT_INTERRUPTED, "interrupted", message, rows_done=checkpoint.rows_done if checkpoint else 0)
    summary = {**result.as_dict(), "count": count}
    resumed = f" (resumed at row {result.resumed_from:,})" if result.resumed_from else ""
    rate = f", {summary['rows_per_sec']:,.0f} rows/s" if summary["rows_per_sec"] else ""
    emit(args.json, summary,
          f"imported {result.total:,} rows into {args.collection!r}{resumed}: {result.imported:,} sent in "
          f"{result.seconds:.1f}s{rate}; the collection holds {count:,} documents")
    return EXIT_OK


def _resume_hint(checkpoint: Any) -> str:
    return f"{checkpoint.rows_done:,} rows are done; run the same command again to resume (checkpoint {checkpoint.path})"
