"""The admin commands that talk to a running server: ``collections``, ``compact``, ``warm``, ``dlq``.

One ``add_<name>`` / ``run_<name>`` pair per command.  Flags, credentials and the exit codes of
client errors are shared with ``import`` (``connection.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .connection import add_server_flags, fail_client, open_client
from .exit_codes import EXIT_FAILURE, EXIT_OK
from .output import emit, fail
from .progress import Progress
from ..tiering import POLICIES

COMPACT_TIMEOUT = 3600.0  # building the index of a big memtable takes minutes
WARM_TIMEOUT = 3600.0     # fetching a large collection from S3 takes minutes


# -- output helpers ------------------------------------------------------------------------------


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


# -- collections -----------------------------------------------------------------------------------


def add_collections(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collections",
        help="list collections: dimension, metric, policy, count, segments, upload lag",
        description="List the server's collections. Upload lag comes from the admin API "
                    "(needs $TIERDB_ADMIN_TOKEN unless the server binds to loopback); '-' when unavailable.",
    )
    add_server_flags(parser)
    parser.set_defaults(run=run_collections)


def _lag(status: Any) -> str:
    if status is None:
        return "-"
    policy = POLICIES.get(status.policy)
    if policy is not None and not policy.needs_s3:
        return "n/a"
    return f"{status.upload_lag_secs:.1f}s ({_bytes(status.upload_lag_bytes)})"


def run_collections(args: argparse.Namespace) -> int:
    from ..client import Forbidden, NotFound, TierDBClientError, Unauthorized

    with open_client(args) as db:
        try:
            infos = db.list_collections()
        except TierDBClientError as exc:
            return fail_client(args, exc)
        statuses: dict[str, Any] = {}
        for info in infos:
            try:
                statuses[info.name] = db.status(info.name)
            except (Unauthorized, Forbidden):
                break  # no admin access: leave the status columns empty
            except NotFound:
                continue  # dropped meanwhile
            except TierDBClientError as exc:
                return fail_client(args, exc)
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
    add_server_flags(parser, timeout=COMPACT_TIMEOUT)
    parser.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    from ..client import TierDBClientError

    with open_client(args) as db:
        try:
            if not args.json:
                print(f"compacting {args.collection!r}{' (full)' if args.full else ''}...", file=sys.stderr)
            result = db.compact(args.collection, full=args.full)
        except TierDBClientError as exc:
            return fail_client(args, exc)
    emit(args.json, _builtins(result),
          f"compacted {args.collection!r}: flushed {result.flushed_rows:,} rows, merged {result.merged_segments} "
          f"segments, {result.segments} segments now (manifest v{result.manifest_version}) in {result.duration_secs:.2f}s")
    return EXIT_OK


# -- warm ------------------------------------------------------------------------------------------


def add_warm(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "warm",
        help="pre-fetch a collection's segments from S3 into the server's disk cache (admin)",
        description="Start fetching every segment of the collection from S3 into the disk cache of the server "
                    "at --url (a reader node too), so its first queries do not wait for S3. Without --wait it "
                    "returns at once (progress: 'warm' in the collection's status); with --wait it shows "
                    "progress until the warm is done and exits non-zero if it failed.",
    )
    parser.add_argument("--collection", required=True, metavar="NAME")
    parser.add_argument("--wait", action="store_true", help="wait until the warm has finished, showing progress")
    add_server_flags(parser, timeout=WARM_TIMEOUT, timeout_help="per request, and the longest --wait waits")
    parser.set_defaults(run=run_warm)


def _warm_summary(name: str, status: Any) -> str:
    return (f"{status.segments_done}/{status.segments_total} segments, "
            f"{_bytes(status.bytes_fetched)} of {_bytes(status.bytes_total)} of {name!r}")


def run_warm(args: argparse.Namespace) -> int:
    from ..client import TierDBClientError

    name = args.collection
    progress = Progress(f"warming {name!r}", 0, unit="bytes", enabled=args.wait and not args.json)

    def show(status: Any) -> None:
        progress.total = status.bytes_total
        progress.update(status.bytes_fetched)

    with open_client(args) as db:
        try:
            status = db.warm(name, wait=args.wait, timeout=args.timeout, on_progress=show)
        except TierDBClientError as exc:
            return fail_client(args, exc)
    if not args.wait:
        emit(args.json, _builtins(status), f"warming {name!r}: {_warm_summary(name, status)} so far "
                                           f"(follow it with --wait or in the collection's status)")
        return EXIT_OK
    if status.state == "done":
        progress.finish()
        secs = status.finished_at - status.started_at
        emit(args.json, _builtins(status), f"warmed {_warm_summary(name, status)} in {secs:.1f}s")
        return EXIT_OK
    reason = status.error or "the server no longer knows of this warm (it restarted or reopened the collection)"
    return fail(args.json, EXIT_FAILURE, "warm_failed", f"warming {name!r} failed: {reason}", warm=_builtins(status))


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
    add_server_flags(parser)
    parser.set_defaults(run=run_dlq)


def run_dlq(args: argparse.Namespace) -> int:
    from ..client import TierDBClientError

    name = args.collection
    with open_client(args) as db:
        try:
            if args.action == "retry":
                n = db.retry_dlq(name)
                emit(args.json, {"collection": name, "retried": n}, f"re-enqueued {n} DLQ entries of {name!r} for upload")
                return EXIT_OK
            if args.action == "clear":
                n = db.clear_dlq(name)
                emit(args.json, {"collection": name, "cleared": n}, f"cleared {n} DLQ entries of {name!r}")
                return EXIT_OK
            entries = db.dlq(name)
        except TierDBClientError as exc:
            return fail_client(args, exc)
    if args.json:
        print(json.dumps({"collection": name, "size": len(entries), "entries": _builtins(entries)}, indent=2))
    elif not entries:
        print(f"the dead-letter queue of {name!r} is empty")
    else:
        rows = [(e.object, e.code or "-", e.attempts, "yes" if e.permanent else "no", e.error[:80]) for e in entries]
        print(_table(("OBJECT", "CODE", "ATTEMPTS", "PERMANENT", "ERROR"), rows, right={2}))
    return EXIT_OK
