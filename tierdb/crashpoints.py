"""Named crash points for kill -9 tests.

``TIERDB_TEST_CRASH_AT=<area>:<step>`` (e.g. ``restore:first_segment``) makes the process
SIGKILL itself when it reaches that step, so a test can stop a real server exactly inside a
multi-step durable operation.  Unset (always, outside tests) a crash point is one environment
lookup.  The steps a module offers are listed next to it (e.g. ``restore.RESTORE_STEPS``).
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "TIERDB_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.write(2, f"tierdb: crash point {name!r} reached ({ENV_VAR}); killing this process\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
