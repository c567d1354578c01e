"""Riding out a database outage: the one policy every long-running task uses while the database is unavailable.

A task that meets a transient database failure (``tracker.store.errors.is_transient``: the connection lost or refused,
SQLite locked past its busy timeout, the database's disk full) keeps what it holds, waits, and tries again; anything
else is raised. The first failure of an outage and every ``log_every``-th after it are logged (one line each, never
parameters or passwords; a full disk says to free space), and so is the recovery. Used by the writer (its batch
held), the lease (polling for the lock), and the service (a restarted projector, backfill or reconciler).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tracker.store.errors import why_unavailable

log = logging.getLogger("tracker.service")


@dataclass
class Outage:
    """The failures of one task during one outage, and the delay before its next try (doubling up to ``cap_s``)."""

    what: str  # who is waiting, for the log line: "writer", "lease", "projector", ...
    base_s: float = 0.25
    cap_s: float = 2.0
    log_every: int = 10
    failures: int = 0

    def failed(self, error: BaseException, holding: str = "") -> float:
        """Record a transient failure (the caller asked ``is_transient`` or its own ``retry_if``): log it (the first
        and every Nth) and return the delay before the next try."""
        self.failures += 1
        if self.failures == 1 or self.failures % self.log_every == 0:
            log.warning(
                "%s: %s%s; retrying (attempt %d)",
                self.what,
                why_unavailable(error),
                f"; {holding} held" if holding else "",
                self.failures,
            )
        return min(self.base_s * 2.0 ** (self.failures - 1), self.cap_s)

    def over(self, done: str = "") -> None:
        """The database answered again: log the recovery (once) and start counting afresh."""
        if self.failures:
            log.info(
                "%s: database back after %d failed attempt(s)%s", self.what, self.failures, f"; {done}" if done else ""
            )
        self.failures = 0
