"""Where a call is sent: reads spread over the read replicas, everything else to the writer.

Sans-I/O like ``_calls``: ``TierDB`` and ``AsyncTierDB`` ask a ``Dispatch`` which base URL to
send to next (and how long to wait first), and tell it when a node failed.

Reads (``Call.read``) go round-robin over ``read_urls``; a replica that fails (connection error,
429/503) is skipped for ``cooldown`` seconds, and a read that fails on one node moves straight on
to the next one, finally to the writer.  When every node failed, the whole round is retried with
backoff (``Backoff``), up to ``retries`` times.  Writes and admin mutations only ever go to the
writer, so failing over can never send a write twice to different nodes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from ._calls import Backoff, Call


def read_url_list(url: str, read_urls: Sequence[str] | None) -> list[str]:
    """``read_urls`` normalised (no trailing slash, no duplicates, the writer ``url`` left out:
    it is always the last resort anyway)."""
    if read_urls is None:
        return []
    if isinstance(read_urls, (str, bytes)):
        raise TypeError("read_urls must be a list of URLs, not a single string")
    out: list[str] = []
    for item in read_urls:
        if not isinstance(item, str) or not item.startswith(("http://", "https://")):
            raise ValueError(f"read_urls must be http(s) URLs, got {item!r}")
        base = item.rstrip("/")
        if base != url and base not in out:
            out.append(base)
    return out


class Replicas:
    """The read replicas: a rotation, and which ones failed recently. Thread-safe."""

    def __init__(
        self, writer: str, read_urls: list[str], cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.writer = writer
        self.read_urls = read_urls
        self.cooldown = cooldown
        self._clock = clock
        self._turn = itertools.count()
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def targets(self, call: Call) -> list[str]:
        """The base URLs to try for ``call``, in order."""
        if not call.read or not self.read_urls:
            return [self.writer]
        start = next(self._turn) % len(self.read_urls)
        rotated = self.read_urls[start:] + self.read_urls[:start]
        now = self._clock()
        with self._lock:
            cooling = [u for u in rotated if self._down_until.get(u, 0.0) > now]
        healthy = [u for u in rotated if u not in cooling]
        # A replica that failed recently is tried only after the writer, not never: it may be back.
        return healthy + [self.writer] + cooling

    def failed(self, url: str) -> None:
        if url != self.writer and self.cooldown > 0:
            with self._lock:
                self._down_until[url] = self._clock() + self.cooldown

    def answered(self, url: str) -> None:
        if self._down_until:
            with self._lock:
                self._down_until.pop(url, None)


class Dispatch:
    """The attempts of one call: which node next, and when to give up."""

    def __init__(self, call: Call, replicas: Replicas, backoff: Backoff) -> None:
        self.call = call
        self.replicas = replicas
        self.backoff = backoff
        self.targets = replicas.targets(call)
        self.position = 0
        self.rounds = 0        # rounds over every target that failed, i.e. retries used
        self.sent = 0          # requests sent (for error messages)
        self.tried: list[str] = []
        self._wait = 0.0

    def next(self) -> tuple[str, float]:
        """The base URL to send to, and the seconds to wait before sending."""
        url, wait = self.targets[self.position], self._wait
        self._wait = 0.0
        self.sent += 1
        if url not in self.tried:
            self.tried.append(url)
        return url, wait

    def failed(self, url: str, retry_after: str | None = None) -> bool:
        """``url`` failed in a way worth another try; False when the attempts ran out."""
        self.replicas.failed(url)
        self.position += 1
        if self.position < len(self.targets):
            return True
        if self.rounds >= self.backoff.retries:
            return False
        self._wait = self.backoff.delay(self.rounds, retry_after)
        self.rounds += 1
        self.position = 0
        self.targets = self.replicas.targets(self.call)
        return True

    def answered(self, url: str) -> None:
        self.replicas.answered(url)

    def where(self) -> str:
        """The node(s) tried, for an error message."""
        return ", ".join(self.tried) if self.tried else self.replicas.writer
