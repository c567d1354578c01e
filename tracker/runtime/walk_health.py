"""Which backfill walks are failing, which are unavailable, and when each failing one is tried again.

A walk is one endpoint (and market, and order source) of a backfill: ``user_transactions:btcusd``,
``trade_history:btcusd-perp``, ``account_order_data:ethusd:stop_order``. Each one fails alone (failure domains):

- **unavailable** (``Disposition.UNAVAILABLE``: API5506 and the derivatives family, API0003, 403.xxx, 404 without a
  code; or ``STOP``, credentials that the token call accepted but this endpoint refuses): not asked again until
  restart, recorded once as an ``endpoint_unavailable`` entry;
- **failing** (anything else: 5xx, API5502, a transport error, an unknown code): recorded as a ``walk_failed`` entry
  and tried again alone after a capped, jittered back-off that grows with its consecutive failures (``due``); its
  cursor stays where the walk got to.

Neither stops live ingest nor the other walks. ``tracker status`` and the metrics read the entries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tracker.domain import tracker_events as te
from tracker.errors import ExchangeError
from tracker.exchange.errors import Disposition, disposition_of
from tracker.runtime.backoff import Backoff

RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0


@dataclass(frozen=True, slots=True)
class WalkOutcome:
    """What one failure of a walk means, as the log records it."""

    event: str  # te.WALK_FAILED or te.ENDPOINT_UNAVAILABLE
    walk: str
    disposition: Disposition
    code: str | None
    status: int | None
    message: str
    attempts: int
    retry_in_s: float | None  # None: not retried until restart

    def as_data(self) -> dict[str, Any]:
        return {
            "walk": self.walk,
            "endpoint": self.walk.split(":", 1)[0],
            "disposition": str(self.disposition),
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "attempts": self.attempts,
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 3),
        }


@dataclass
class WalkHealth:
    rng: random.Random | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # walk -> why (until restart)
    due: dict[str, float] = field(default_factory=dict)  # failing walk -> trio time of its next try
    _backoffs: dict[str, Backoff] = field(default_factory=dict)

    def failed(self, walk: str, error: ExchangeError, now: float) -> WalkOutcome:
        disposition = disposition_of(error)
        code = getattr(error, "code", None)
        status = getattr(error, "status", None)
        if disposition in (Disposition.UNAVAILABLE, Disposition.STOP):
            self.unavailable[walk] = str(error)
            self.due.pop(walk, None)
            self._backoffs.pop(walk, None)
            return WalkOutcome(te.ENDPOINT_UNAVAILABLE, walk, disposition, code, status, str(error), 1, None)
        backoff = self._backoffs.setdefault(walk, Backoff(base=RETRY_BASE_S, cap=RETRY_CAP_S, rng=self.rng))
        delay = backoff.next_delay()
        self.due[walk] = now + delay
        return WalkOutcome(te.WALK_FAILED, walk, disposition, code, status, str(error), backoff.failures, delay)

    def succeeded(self, walk: str) -> None:
        self.due.pop(walk, None)
        self._backoffs.pop(walk, None)

    def due_now(self, now: float) -> list[str]:
        """The failing walks whose retry is due."""
        return sorted(walk for walk, at in self.due.items() if at <= now)

    def next_due(self) -> float | None:
        return min(self.due.values(), default=None)
