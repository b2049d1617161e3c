"""What the commands that talk to a running server share: the ``--url``/``--timeout``/
``--retries``/``--json`` flags, the client built from them and the environment, and how a
client error becomes an exit code.

The API key comes from ``$TIERDB_API_KEY`` and the admin token from ``$TIERDB_ADMIN_TOKEN``,
never from flags (command lines are visible to other users).  Errors map to exit codes: not
found 3, server unreachable 4, missing or wrong credentials 2, anything else 1.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_UNREACHABLE
from .output import fail

DEFAULT_URL = "http://127.0.0.1:8080"


def add_server_flags(
    parser: argparse.ArgumentParser, retries: int = 3, timeout: float = 30.0, timeout_help: str = "per request"
) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("TIERDB_URL") or DEFAULT_URL,
        help=f"server URL (default: $TIERDB_URL, else {DEFAULT_URL}); credentials from $TIERDB_API_KEY, $TIERDB_ADMIN_TOKEN",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout, metavar="SECS", help=f"{timeout_help} (default {timeout:g})"
    )
    parser.add_argument(
        "--retries", type=int, default=retries, metavar="N",
        help=f"retries after a lost connection or a 429/503, with backoff (default {retries})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def open_client(args: argparse.Namespace) -> Any:
    from ..client import TierDB

    return TierDB(
        args.url,
        api_key=os.environ.get("TIERDB_API_KEY") or None,
        admin_token=os.environ.get("TIERDB_ADMIN_TOKEN") or None,
        timeout=args.timeout,
        retries=max(0, args.retries),
    )


def exit_code(exc: Exception) -> int:
    from ..client import ConnectionFailed, Forbidden, NotFound, RequestTimeout, Unauthorized

    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, RequestTimeout):  # reachable, but slow: a failure, not "unreachable"
        return EXIT_FAILURE
    if isinstance(exc, ConnectionFailed):
        return EXIT_UNREACHABLE
    if isinstance(exc, (Unauthorized, Forbidden)):
        return EXIT_CONFIG
    return EXIT_FAILURE


def fail_client(args: argparse.Namespace, exc: Any, hint: str = "", **extra: Any) -> int:
    """Report a client error (with a hint on what to do) and return its exit code."""
    from ..client import Forbidden, Unauthorized

    message = exc.message
    if isinstance(exc, (Unauthorized, Forbidden)) and not hint:
        hint = "set TIERDB_ADMIN_TOKEN (admin commands) or TIERDB_API_KEY (data commands)"
    if hint:
        message = f"{message} ({hint})"
    return fail(args.json, exit_code(exc), exc.kind, message, status=exc.status, **extra)
