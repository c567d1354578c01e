"""A minimal progress line on stderr for long work (rebuild, verify, large backfills).

It redraws one line with ``\\r`` at most every 0.2 s when stderr is a terminal, and otherwise prints a plain line at
most every 10 s, so logs captured to a file stay readable. No dependency: the line is all we need.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._every = 0.2 if self.tty else 10.0
        self._started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._draw(now)

    def restart(self) -> None:
        """Count from zero again (the work started over); the rate too."""
        self.done = 0
        self._started = time.monotonic()

    def format(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            return f"{self.label}: {self.done:,}/{self.total:,} ({pct:5.1f}%) {rate:,.0f}/s"
        return f"{self.label}: {self.done:,} {rate:,.0f}/s"

    def _draw(self, now: float) -> None:
        text = self.format(now)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
