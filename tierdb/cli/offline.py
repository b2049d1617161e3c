"""The commands that open the data directory, run while the server is stopped: ``restore``,
``verify``, ``export``.

Only argument parsing and reporting live here; the work (which loads the engine and the S3
client) is imported when a command runs: ``restore_verify.py`` and ``export.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from .. import keys
from ..config import load_settings
from .exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK
from .options import add_config_flag, load_with_flags, positive_int
from .output import fail, note

# -- restore / verify --------------------------------------------------------------------------


def add_restore(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore", help="rebuild memory_s3 collections in the data directory from S3 (server stopped)"
    )
    add_config_flag(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--collection", action="append", metavar="NAME", help="only this collection (repeatable)")
    parser.add_argument("--force", action="store_true", help="replace a collection that exists locally")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run_restore)


def add_verify(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify", help="check that every object the latest manifests reference exists and matches its checksum"
    )
    add_config_flag(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--collection", action="append", metavar="NAME", help="only this collection (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run_verify)


def _report(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        detail = "; ".join(row.get("problems", [])) or row.get("detail", "")
        print(f"{row['collection']:<24} {row['where']:<6} {row['status']:<10} {detail}")


def run_restore(args: argparse.Namespace) -> int:
    from ..errors import TierDBError
    from .restore_verify import restore_from_s3

    settings = load_with_flags(args, {"data_dir": "storage.data_dir"})
    try:
        rows = asyncio.run(restore_from_s3(settings, args.collection, force=args.force, progress=note))
    except TierDBError as exc:
        return fail(args.json, EXIT_FAILURE, exc.kind.value, exc.message)
    _report(rows, args.json)
    return EXIT_FAILURE if any(r["status"] == "failed" for r in rows) else EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from .restore_verify import verify_collections

    settings = load_with_flags(args, {"data_dir": "storage.data_dir"})
    rows = asyncio.run(verify_collections(settings, args.collection, progress=note))
    _report(rows, args.json)
    return EXIT_FAILURE if any(r["status"] != "ok" for r in rows) else EXIT_OK


# -- export ------------------------------------------------------------------------------------


def add_export(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a collection to .jsonl (or .npy + .jsonl) from the data directory (server stopped)",
        description=(
            "Write every document of a collection to OUT, in a format `tierdb import` reads back: "
            "OUT.jsonl holds {\"id\", \"vector\", \"metadata\"} per line; OUT.npy holds the float32 vectors "
            "and --ids-metadata (default OUT with a .jsonl suffix) {\"id\", \"metadata\"} per line, row i = line i. "
            "The REST API cannot list a collection's ids, so export reads the data directory directly "
            "through the engine: stop the server first (export refuses while another process has the "
            "directory open), or export from a copy of the directory. s3_only and memory_s3 collections "
            "need the server's S3 settings (--config / TIERDB_S3_*)."
        ),
    )
    add_config_flag(parser)
    parser.add_argument("out", metavar="OUT", type=Path, help="output file: .jsonl, or .npy (+ .jsonl)")
    parser.add_argument("--collection", required=True, metavar="NAME")
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--ids-metadata", type=Path, metavar="FILE.jsonl", help="with a .npy OUT: where ids and metadata go")
    parser.add_argument("--batch-size", type=positive_int, default=1000, metavar="N", help="documents read at a time")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..errors import ErrorKind, TierDBError
    from .export import export_collection
    from .readers import InputError

    settings = load_settings(
        args.config,
        overrides={"storage.data_dir": args.data_dir, "compaction.interval_secs": 24 * 3600.0},
    )
    data_dir = settings.storage.data_dir
    if not os.path.isdir(keys.collections_dir(data_dir)):
        return fail(args.json, EXIT_CONFIG, "not_found", f"no TierDB data directory at {data_dir} (give --data-dir)")
    try:
        result = asyncio.run(export_collection(
            settings, args.collection, args.out, ids_metadata=args.ids_metadata,
            batch_size=args.batch_size, progress_enabled=not args.no_progress,
        ))
    except InputError as exc:
        return fail(args.json, EXIT_CONFIG, "invalid", str(exc))
    except TierDBError as exc:
        code = EXIT_NOT_FOUND if exc.kind is ErrorKind.NOT_FOUND else EXIT_FAILURE
        return fail(args.json, code, exc.kind.value, exc.message)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exported {result['documents']:,} documents of {args.collection!r} to {', '.join(result['files'])} "
              f"in {result['seconds']:.1f}s")
    return EXIT_OK
