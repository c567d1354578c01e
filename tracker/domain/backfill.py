"""What a backfill walk remembers and reports (pure values): its cursors, its options and its report.

The report is what ``backfill_completed`` carries into the log (``as_data``), and the cursors in it are where the next
backfill starts, read back from the log (so a crash between two walks costs a re-walk, never a miss).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from tracker.domain.reconcile import ExchangeOrderStatus

BACKFILL_CHANNEL: Final = "backfill"
ORDER_SOURCES: Final = ("orderbook", "stop_order")


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    page_limit: int = 1000
    first_walk_days: float = 30.0  # account_order_data retention
    open_orders_cache_s: float = 10.0
    max_status_checks: int = 200  # order_status calls per run at most


@dataclass
class Cursors:
    """Where the previous backfill stopped (inclusive cursors: the row at the cursor is fetched again and dropped)."""

    order_events: dict[str, str] = field(default_factory=dict)  # "<market>|<source>" -> event_id
    user_transactions: dict[str, int] = field(default_factory=dict)  # market -> id
    trade_history: dict[str, int] = field(default_factory=dict)  # perp market -> trade_id (after_id, exclusive)
    settlements_since: int | None = None  # unix seconds (since_timestamp, inclusive)

    def as_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: object) -> Cursors:
        if not isinstance(data, dict):
            return cls()
        out = cls()
        try:
            out.order_events = {str(k): str(v) for k, v in dict(data.get("order_events") or {}).items()}
            out.user_transactions = {str(k): int(v) for k, v in dict(data.get("user_transactions") or {}).items()}
            out.trade_history = {str(k): int(v) for k, v in dict(data.get("trade_history") or {}).items()}
            since = data.get("settlements_since")
            out.settlements_since = None if since is None else int(since)
        except (TypeError, ValueError):
            return cls()
        return out


@dataclass
class BackfillReport:
    reason: str
    gap_ids: list[str]
    fetched: Counter[str] = field(default_factory=Counter)  # rows the exchange returned (new to the walk)
    found: Counter[str] = field(default_factory=Counter)  # of those, entries new to the log
    requests: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # walks not asked: unavailable until restart (why)
    corroborated: Counter[str] = field(default_factory=Counter)  # REST rows equal to a fact already logged
    duration_s: float = 0.0
    cursors: Cursors = field(default_factory=Cursors)
    # For reconciliation: where each market's user_transactions walk started (its fills go to ``FillPages`` page by
    # page, never kept here: a report's size does not grow with the walk).
    walk_from: dict[str, int] = field(default_factory=dict)
    walk_start_at: dict[str, datetime] = field(default_factory=dict)  # datetime of the walk's first row
    statuses: list[ExchangeOrderStatus] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "gap_ids": self.gap_ids,
            "fetched": dict(sorted(self.fetched.items())),
            "found": dict(sorted(self.found.items())),
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "errors": self.errors,
            "skipped": self.skipped,
            "corroborated": dict(sorted(self.corroborated.items())),
            "duration_s": round(self.duration_s, 3),
            "cursors": self.cursors.as_data(),
        }
