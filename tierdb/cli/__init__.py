"""Command line: ``tierdb serve | restore | verify | export | import | collections | compact | warm | dlq``.

This module only assembles the parser and runs the chosen command.  Each command is one
``add_<name>`` function that declares its arguments and one ``run_<name>`` function that returns
the exit code (``exit_codes.py``), in the module of its kind:

- ``serve.py``: the REST API server;
- ``offline.py``: ``restore``, ``verify``, ``export``, which open the data directory (server
  stopped); their work is in ``restore_verify.py`` and ``export.py``;
- ``importer.py``: ``import`` over HTTP, resumable (``readers.py``, ``checkpoint.py``,
  ``progress.py``);
- ``remote.py``: ``collections``, ``compact``, ``warm``, ``dlq`` against a running server.

Heavy modules (the engine, the S3 client, uvicorn, numpy) are imported only by the command
that needs them, so a command starts quickly and a bad configuration fails fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError
from .exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, SUMMARY
from .importer import add_import
from .offline import add_export, add_restore, add_verify
from .remote import add_collections, add_compact, add_dlq, add_warm
from .serve import add_serve

SUBCOMMANDS = (add_serve, add_restore, add_verify, add_export, add_import, add_collections, add_compact, add_warm, add_dlq)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierdb",
        description="TierDB: tiered vector storage engine",
        epilog=SUMMARY,
    )
    parser.add_argument("--version", action="version", version=f"tierdb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
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
