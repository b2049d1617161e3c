"""The CLI's exit codes: the one table that README.md and docs/quickstart.md document."""

from __future__ import annotations

EXIT_OK = 0  # also after a graceful SIGTERM/SIGINT shutdown of ``serve``
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # usage or configuration: bad flags or files, missing/wrong credentials
EXIT_NOT_FOUND = 3  # the collection
EXIT_UNREACHABLE = 4  # the server
EXIT_INTERRUPTED = 130  # Ctrl-C; an import can be resumed

SUMMARY = "exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 not found, 4 server unreachable, 130 interrupted"
