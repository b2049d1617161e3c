"""CLI commands that talk to a running server: ``import``, ``collections``, ``compact``, ``dlq``.

One ``add_<name>`` / ``run_<name>`` pair per command (registered by cli.py).  Every command takes
``--url`` (default ``$TIERDB_URL``, else http://127.0.0.1:8080) and ``--json``; the API key
comes from ``$TIERDB_API_KEY`` and the admin token from ``$TIERDB_ADMIN_TOKEN``, never from
flags (command lines are visible to other users).  Errors map to exit codes (see cli.py): not
found 3, server unreachable 4, missing or wrong credentials 2, anything else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cli import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    positive_int,
)
from .tiering import POLICIES

DEFAULT_URL = "http://127.0.0.1:8080"
IMPORT_RETRIES = 6  # a long import rides out a server restart of a few seconds
COMPACT_TIMEOUT = 3600.0  # building the index of a big memtable takes minutes


# -- shared ----------------------------------------------------------------------------------------


def _add_server_flags(parser: argparse.ArgumentParser, retries: int = 3, timeout: float = 30.0) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("TIERDB_URL") or DEFAULT_URL,
        help=f"server URL (default: $TIERDB_URL, else {DEFAULT_URL}); credentials from $TIERDB_API_KEY, $TIERDB_ADMIN_TOKEN",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout, metavar="SECS", help=f"per request (default {timeout:g})"
    )
    parser.add_argument(
        "--retries", type=int, default=retries, metavar="N",
        help=f"retries after a lost connection or a 429/503, with backoff (default {retries})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _client(args: argparse.Namespace) -> Any:
    from .client import TierDB

    return TierDB(
        args.url,
        api_key=os.environ.get("TIERDB_API_KEY") or None,
        admin_token=os.environ.get("TIERDB_ADMIN_TOKEN") or None,
        timeout=args.timeout,
        retries=max(0, args.retries),
    )


def exit_code(exc: Exception) -> int:
    from .client import ConnectionFailed, Forbidden, NotFound, RequestTimeout, Unauthorized

    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, RequestTimeout):  # reachable, but slow: a failure, not "unreachable"
        return EXIT_FAILURE
    if isinstance(exc, ConnectionFailed):
        return EXIT_UNREACHABLE
    if isinstance(exc, (Unauthorized, Forbidden)):
        return EXIT_CONFIG
    return EXIT_FAILURE


def _fail(args: argparse.Namespace, code: int, kind: str, message: str, **extra: Any) -> int:
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"error": kind, "message": message, "exit_code": code, **extra}))
    return code


def _fail_client(args: argparse.Namespace, exc: Any, hint: str = "", **extra: Any) -> int:
    from .client import Forbidden, Unauthorized

    message = exc.message
    if isinstance(exc, (Unauthorized, Forbidden)) and not hint:
        hint = "set TIERDB_ADMIN_TOKEN (admin commands) or TIERDB_API_KEY (data commands)"
    if hint:
        message = f"{message} ({hint})"
    return _fail(args, exit_code(exc), exc.kind, message, status=exc.status, **extra)


def _emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else human)


def _table(headers: Sequence[str], rows: list[Sequence[Any]], right: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


# -- import ----------------------------------------------------------------------------------------


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
    _add_server_flags(parser, retries=IMPORT_RETRIES)
    parser.set_defaults(run=run_import)


def _prepare_collection(db: Any, args: argparse.Namespace, dimension: int) -> Any:
    """The target collection's info, created with --create; raises InputError on a mismatch."""
    from .client import Conflict, NotFound
    from .transfer import InputError, UsageError

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
    from .client import TierDBClientError
    from .transfer import (
        Checkpoint, InputError, Progress, UsageError, default_checkpoint, import_identity, open_source, run_import as send,
    )

    try:
        source = open_source(args.file, args.ids_metadata, args.limit)
    except UsageError as exc:
        return _fail(args, EXIT_CONFIG, "usage", str(exc))
    except InputError as exc:
        return _fail(args, EXIT_FAILURE, "invalid_input", str(exc))
    checkpoint: Checkpoint | None = None
    with _client(args) as db:
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
            result = send(
                lambda b: db.upsert(args.collection, b.ids, b.vectors, b.metadatas, batch_size=max(1, len(b.ids))),
                source, checkpoint, start=start, batch_size=args.batch_size, progress=progress,
                collection=args.collection, on_batch=on_batch,
            )
            count = db.count(args.collection)
        except TierDBClientError as exc:
            hint = "" if checkpoint is None else _resume_hint(checkpoint)
            if checkpoint is None and exc.kind == "not_found":
                hint = "use --create to create it"
            return _fail_client(args, exc, hint, rows_done=checkpoint.rows_done if checkpoint else 0)
        except InputError as exc:
            rows = checkpoint.rows_done if checkpoint else 0
            code = EXIT_CONFIG if isinstance(exc, UsageError) else EXIT_FAILURE
            return _fail(args, code, "invalid_input", f"{exc}; {rows:,} rows were imported before it", rows_done=rows)
        except KeyboardInterrupt:
            message = "interrupted" + (f"; {_resume_hint(checkpoint)}" if checkpoint else "")
            return _fail(args, EXIT_INTERRUPTED, "interrupted", message, rows_done=checkpoint.rows_done if checkpoint else 0)
    summary = {**result.as_dict(), "count": count}
    resumed = f" (resumed at row {result.resumed_from:,})" if result.resumed_from else ""
    rate = f", {summary['rows_per_sec']:,.0f} rows/s" if summary["rows_per_sec"] else ""
    _emit(args, summary,
          f"imported {result.total:,} rows into {args.collection!r}{resumed}: {result.imported:,} sent in "
          f"{result.seconds:.1f}s{rate}; the collection holds {count:,} documents")
    return EXIT_OK


def _resume_hint(checkpoint: Any) -> str:
    return f"{checkpoint.rows_done:,} rows are done; run the same command again to resume (checkpoint {checkpoint.path})"


# -- collections -----------------------------------------------------------------------------------


def add_collections(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collections",
        help="list collections: dimension, metric, policy, count, segments, upload lag",
        description="List the server's collections. Upload lag comes from the admin API "
                    "(needs $TIERDB_ADMIN_TOKEN unless the server binds to loopback); '-' when unavailable.",
    )
    _add_server_flags(parser)
    parser.set_defaults(run=run_collections)


def _lag(status: Any) -> str:
    if status is None:
        return "-"
    policy = POLICIES.get(status.policy)
    if policy is not None and not policy.needs_s3:
        return "n/a"
    return f"{status.upload_lag_secs:.1f}s ({_bytes(status.upload_lag_bytes)})"


def run_collections(args: argparse.Namespace) -> int:
    from .client import Forbidden, NotFound, TierDBClientError, Unauthorized

    with _client(args) as db:
        try:
            infos = db.list_collections()
        except TierDBClientError as exc:
            return _fail_client(args, exc)
        statuses: dict[str, Any] = {}
        for info in infos:
            try:
                statuses[info.name] = db.status(info.name)
            except (Unauthorized, Forbidden):
                break  # no admin access: leave the status columns empty
            except NotFound:
                continue  # dropped meanwhile
            except TierDBClientError as exc:
                return _fail_client(args, exc)
    if args.json:
        rows = []
        for info in infos:
            status = statuses.get(info.name)
            row = _builtins(info)
            row.update({
                "state": status.state if status else None,
                "upload_lag_secs": status.upload_lag_secs if status else None,
                "upload_lag_bytes": status.upload_lag_bytes if status else None,
                "dlq_size": status.dlq_size if status else None,
            })
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not infos:
        print("no collections")
        return EXIT_OK
    table = [
        (i.name, i.dimension, i.metric, i.tiering_policy, f"{i.count:,}", i.segments, _lag(statuses.get(i.name)))
        for i in infos
    ]
    print(_table(("NAME", "DIM", "METRIC", "POLICY", "COUNT", "SEGMENTS", "UPLOAD LAG"), table, right={1, 4, 5}))
    return EXIT_OK


# -- compact ---------------------------------------------------------------------------------------


def add_compact(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="flush the memtable and merge segments now (admin)",
        description="Flush the memtable to a segment (building its HNSW index) and merge segments; waits "
                    "until done. Building the index of a large memtable takes a while (a couple of minutes for "
                    "50,000 x 384 on two cores), hence the long default --timeout.",
    )
    parser.add_argument("--collection", required=True, metavar="NAME")
    parser.add_argument("--full", action="store_true", help="merge every segment into one")
    _add_server_flags(parser, timeout=COMPACT_TIMEOUT)
    parser.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    from .client import TierDBClientError

    with _client(args) as db:
        try:
            if not args.json:
                print(f"compacting {args.collection!r}{' (full)' if args.full else ''}...", file=sys.stderr)
            result = db.compact(args.collection, full=args.full)
        except TierDBClientError as exc:
            return _fail_client(args, exc)
    _emit(args, _builtins(result),
          f"compacted {args.collection!r}: flushed {result.flushed_rows:,} rows, merged {result.merged_segments} "
          f"segments, {result.segments} segments now (manifest v{result.manifest_version}) in {result.duration_secs:.2f}s")
    return EXIT_OK


# -- dlq -------------------------------------------------------------------------------------------


def add_dlq(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, retry or clear the dead-letter queue of failed S3 uploads (admin)",
        description="list: show the entries; retry: put every entry back in the upload queue (nothing is "
                    "discarded); clear: drop the entries, the next upload is a full snapshot.",
    )
    parser.add_argument("action", choices=["list", "retry", "clear"])
    parser.add_argument("--collection", required=True, metavar="NAME")
    _add_server_flags(parser)
    parser.set_defaults(run=run_dlq)


def run_dlq(args: argparse.Namespace) -> int:
    from .client import TierDBClientError

    name = args.collection
    with _client(args) as db:
        try:
            if args.action == "retry":
                n = db.retry_dlq(name)
                _emit(args, {"collection": name, "retried": n}, f"re-enqueued {n} DLQ entries of {name!r} for upload")
                return EXIT_OK
            if args.action == "clear":
                n = db.clear_dlq(name)
                _emit(args, {"collection": name, "cleared": n}, f"cleared {n} DLQ entries of {name!r}")
                return EXIT_OK
            entries = db.dlq(name)
        except TierDBClientError as exc:
            return _fail_client(args, exc)
    if args.json:
        print(json.dumps({"collection": name, "size": len(entries), "entries": _builtins(entries)}, indent=2))
    elif not entries:
        print(f"the dead-letter queue of {name!r} is empty")
    else:
        rows = [(e.object, e.code or "-", e.attempts, "yes" if e.permanent else "no", e.error[:80]) for e in entries]
        print(_table(("OBJECT", "CODE", "ATTEMPTS", "PERMANENT", "ERROR"), rows, right={2}))
    return EXIT_OK
