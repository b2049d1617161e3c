"""Command line: ``tierdb serve | restore | verify | export | import | collections | compact | dlq``.

Each subcommand is one ``_add_<name>`` function that declares its arguments and one
``_run_<name>`` function that returns the exit code.  This module holds the commands that work
on the configuration and the data directory (``serve``; offline: ``restore``, ``verify``,
``export``); the commands that talk to a running server (``import``, ``collections``,
``compact``, ``dlq``) are in ``cli_remote.py``.

Exit codes: 0 success (also after a graceful SIGTERM/SIGINT shutdown of ``serve``), 1 failure,
2 usage or configuration error (bad flags or files, missing/wrong credentials), 3 not found
(collection), 4 server unreachable, 130 interrupted (Ctrl-C; an import can be resumed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, keys
from .config import ConfigError, Settings, load_settings, redacted

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

log = logging.getLogger("tierdb.cli")

# CLI flag (argparse dest) -> settings key; flags left unset do not override anything.
SERVE_FLAGS: dict[str, str] = {
    "host": "server.host",
    "port": "server.port",
    "data_dir": "storage.data_dir",
    "policy": "storage.tiering_policy",
    "log_format": "log.format",
    "log_level": "log.level",
}


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $TIERDB_CONFIG, else config/tierdb.toml if it exists)",
    )


def _load(args: argparse.Namespace, flags: dict[str, str]) -> Settings:
    overrides = {key: getattr(args, dest) for dest, key in flags.items()}
    return load_settings(args.config, overrides=overrides)


# -- serve -------------------------------------------------------------------------------------


def _add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the REST API server")
    _add_config_flag(parser)
    parser.add_argument("--host", help="interface to bind (server.host)")
    parser.add_argument("--port", type=int, help="TCP port (server.port)")
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument(
        "--policy",
        metavar="POLICY",
        help="default tiering policy: memory | memory_s3 | s3_only (storage.tiering_policy)",
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="log format (log.format)")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="log level (log.level)",
    )
    parser.set_defaults(run=_run_serve)


class _ExitSignals:
    """Keeps SIGTERM/SIGINT from killing the process after uvicorn's graceful shutdown.

    uvicorn handles both signals while it serves and re-raises them once it has shut down; with
    the default handlers that would end the process by the signal instead of exit code 0.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind the server's socket before the engine starts, so a busy port fails fast and clearly
    (uvicorn would recover the engine first, then exit with its own code 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _graceful_server_class() -> Any:
    import uvicorn

    from .api.lifecycle import request_shutdown

    class GracefulServer(uvicorn.Server):
        """Tells the engine at the signal itself, not after the in-flight requests drained."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            request_shutdown()
            super().handle_exit(sig, frame)

    return GracefulServer


def _run_serve(args: argparse.Namespace) -> int:
    settings = _load(args, SERVE_FLAGS)  # first: a bad configuration fails fast, before heavy imports
    server_settings = settings.server

    import uvicorn

    from .api.app import create_app
    from .api.slow_clients import IdleClosingH11Protocol
    from .logging_setup import configure_logging

    configure_logging(settings.log)
    try:
        sock = _listening_socket(server_settings.host, server_settings.port)
    except OSError as exc:
        log.error(
            "cannot listen on %s:%s: %s (another process uses the port? choose another with --port)",
            server_settings.host, server_settings.port, exc.strerror or exc,
            extra={"host": server_settings.host, "port": server_settings.port},
        )
        return EXIT_FAILURE
    log.info("starting tierdb %s", __version__, extra={"settings": redacted(settings)})
    config = uvicorn.Config(
        create_app(settings),
        host=server_settings.host,
        port=server_settings.port,
        http=IdleClosingH11Protocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(server_settings.shutdown_timeout_secs),
        timeout_keep_alive=server_settings.keep_alive_timeout_secs,  # type: ignore[arg-type]
        limit_concurrency=server_settings.max_connections,
    )
    server = _graceful_server_class()(config)
    signals = _ExitSignals()
    signals.install()
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn exits with its own codes on start-up failures
        pass
    finally:
        sock.close()
    if not server.started:
        log.error("server did not start (see the errors above)")
        return EXIT_FAILURE
    log.info("server stopped", extra={"signals": [signal.Signals(s).name for s in signals.received]})
    return EXIT_OK


# -- restore / verify (offline: run them while the server is stopped) --------------------------


def _add_restore(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore", help="rebuild memory_s3 collections in the data directory from S3 (server stopped)"
    )
    _add_config_flag(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--collection", action="append", metavar="NAME", help="only this collection (repeatable)")
    parser.add_argument("--force", action="store_true", help="replace a collection that exists locally")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=_run_restore)


def _add_verify(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify", help="check that every object the latest manifests reference exists and matches its checksum"
    )
    _add_config_flag(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--collection", action="append", metavar="NAME", help="only this collection (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=_run_verify)


def _report(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        detail = "; ".join(row.get("problems", [])) or row.get("detail", "")
        print(f"{row['collection']:<24} {row['where']:<6} {row['status']:<10} {detail}")


def _note(line: str) -> None:
    """Progress and notices go to stderr, so stdout stays parseable (``--json``)."""
    print(line, file=sys.stderr, flush=True)


def _run_restore(args: argparse.Namespace) -> int:
    from .tools import restore_from_s3

    from .errors import TierDBError

    settings = _load(args, {"data_dir": "storage.data_dir"})
    try:
        rows = asyncio.run(restore_from_s3(settings, args.collection, force=args.force, progress=_note))
    except TierDBError as exc:
        return _failure_printer(args.json)(EXIT_FAILURE, exc.kind.value, exc.message)
    _report(rows, args.json)
    return EXIT_FAILURE if any(r["status"] == "failed" for r in rows) else EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
    from .tools import verify_collections

    settings = _load(args, {"data_dir": "storage.data_dir"})
    rows = asyncio.run(verify_collections(settings, args.collection, progress=_note))
    _report(rows, args.json)
    return EXIT_FAILURE if any(r["status"] != "ok" for r in rows) else EXIT_OK


# -- export (offline: reads the data directory) ---------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_export(subparsers: Any) -> None:
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
    _add_config_flag(parser)
    parser.add_argument("out", metavar="OUT", type=Path, help="output file: .jsonl, or .npy (+ .jsonl)")
    parser.add_argument("--collection", required=True, metavar="NAME")
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument("--ids-metadata", type=Path, metavar="FILE.jsonl", help="with a .npy OUT: where ids and metadata go")
    parser.add_argument("--batch-size", type=positive_int, default=1000, metavar="N", help="documents read at a time")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .errors import ErrorKind, TierDBError
    from .transfer import InputError, export_collection

    settings = load_settings(
        args.config,
        overrides={"storage.data_dir": args.data_dir, "compaction.interval_secs": 24 * 3600.0},
    )
    data_dir = settings.storage.data_dir
    fail = _failure_printer(args.json)
    if not os.path.isdir(keys.collections_dir(data_dir)):
        return fail(EXIT_CONFIG, "not_found", f"no TierDB data directory at {data_dir} (give --data-dir)")
    try:
        result = asyncio.run(export_collection(
            settings, args.collection, args.out, ids_metadata=args.ids_metadata,
            batch_size=args.batch_size, progress_enabled=not args.no_progress,
        ))
    except InputError as exc:
        return fail(EXIT_CONFIG, "invalid", str(exc))
    except TierDBError as exc:
        code = EXIT_NOT_FOUND if exc.kind is ErrorKind.NOT_FOUND else EXIT_FAILURE
        return fail(code, exc.kind.value, exc.message)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exported {result['documents']:,} documents of {args.collection!r} to {', '.join(result['files'])} "
              f"in {result['seconds']:.1f}s")
    return EXIT_OK


def _failure_printer(as_json: bool) -> Callable[[int, str, str], int]:
    """``fail(code, kind, message)``: report an error (stderr; also stdout as JSON with --json)."""

    def fail(code: int, kind: str, message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": kind, "message": message, "exit_code": code}))
        return code

    return fail


# -- entry point -------------------------------------------------------------------------------


def _subcommands() -> tuple[Callable[[Any], None], ...]:
    from . import cli_remote

    return (
        _add_serve, _add_restore, _add_verify, _add_export,
        cli_remote.add_import, cli_remote.add_collections, cli_remote.add_compact, cli_remote.add_dlq,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierdb",
        description="TierDB: tiered vector storage engine",
        epilog="exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 not found, 4 server unreachable, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"tierdb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _subcommands():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
