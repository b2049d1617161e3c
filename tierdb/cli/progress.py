"""The one-line progress report (done/total, percent, rate, ETA) of ``import`` and ``export``."""

from __future__ import annotations

import sys
import time
from typing import IO


def _duration(secs: float) -> str:
    secs = int(round(secs))
    hours, rest = divmod(secs, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress report on stderr: done/total, percent, rate and ETA.

    On a terminal the line is redrawn in place (at most 10 times a second); otherwise (logs,
    CI) a new line is written every ``log_interval`` seconds.  Rows skipped because they were
    done by an earlier run count as done but not towards the rate.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        start: int = 0,
        unit: str = "rows",
        stream: IO[str] | None = None,
        enabled: bool = True,
        log_interval: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.start = self.done = start
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_text = ""
        self._width = 0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        pct = f"{100 * self.done / self.total:5.1f}%" if self.total else "  -  "
        eta = _duration((self.total - self.done) / rate) if rate > 0 and self.total >= self.done else "-"
        return (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit} {pct}  "
            f"{rate:,.0f} {self.unit}/s  ETA {eta}"
        )

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= self.interval:
            self._draw(final=False)
            self._last_draw = now

    def finish(self) -> None:
        if self.enabled:
            self._draw(final=True)

    def _draw(self, final: bool) -> None:
        text = self.line()
        if not self.tty and text == self._last_text:
            return
        self._last_text = text
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
