"""``tierdb serve``: run the REST API server until SIGTERM/SIGINT (then exit 0)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
from typing import Any

from .. import __version__
from ..config import redacted
from .exit_codes import EXIT_FAILURE, EXIT_OK
from .options import add_config_flag, load_with_flags

log = logging.getLogger("tierdb.cli")

# CLI flag (argparse dest) -> settings key; flags left unset do not override anything.
SERVE_FLAGS: dict[str, str] = {
    "host": "server.host",
    "port": "server.port",
    "data_dir": "storage.data_dir",
    "policy": "storage.tiering_policy",
    "role": "node.role",
    "writer_url": "node.writer_url",
    "takeover": "node.takeover",
    "log_format": "log.format",
    "log_level": "log.level",
}


def add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the REST API server")
    add_config_flag(parser)
    parser.add_argument("--host", help="interface to bind (server.host)")
    parser.add_argument("--port", type=int, help="TCP port (server.port)")
    parser.add_argument("--data-dir", metavar="DIR", help="local data directory (storage.data_dir)")
    parser.add_argument(
        "--policy",
        metavar="POLICY",
        help="default tiering policy: memory | memory_s3 | s3_only (storage.tiering_policy)",
    )
    parser.add_argument(
        "--role",
        choices=["writer", "reader"],
        help="writer (default) or reader: a read replica that follows the writer through S3 and "
        "refuses writes (node.role, TIERDB_NODE_ROLE)",
    )
    parser.add_argument("--writer-url", metavar="URL", help="reader: the writer's URL, named in read_only errors (node.writer_url)")
    parser.add_argument(
        "--takeover",
        action="store_true",
        default=None,
        help="writer: claim every s3_only collection from the previous writer at start; it is fenced "
        "at its next write (node.takeover, TIERDB_NODE_TAKEOVER)",
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="log format (log.format)")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="log level (log.level)",
    )
    parser.set_defaults(run=run_serve)


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
    (uvicorn would recover the engine first, then exit with its own code 3).

    The protocol must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets whose
    ``proto`` says TCP, and without it Nagle + delayed ACK add ~40 ms to every response that
    uvicorn writes in two parts (headers, body)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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

    from ..api.lifecycle import request_shutdown

    class GracefulServer(uvicorn.Server):
        """Tells the engine at the signal itself, not after the in-flight requests drained."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            request_shutdown()
            super().handle_exit(sig, frame)

    return GracefulServer


def run_serve(args: argparse.Namespace) -> int:
    settings = load_with_flags(args, SERVE_FLAGS)  # first: a bad configuration fails fast, before heavy imports
    server_settings = settings.server

    import uvicorn

    from ..api.app import create_app
    from ..api.slow_clients import IdleClosingH11Protocol
    from ..logging_setup import configure_logging

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
