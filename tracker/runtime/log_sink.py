"""``LogSink``: how backfill and reconciliation append to and read the event log from trio.

Every call runs in a worker thread; appends go through the service's one-writer limiter (the same one the writer
task uses), so there is still one writer at a time and each page of REST facts is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

import trio

from tracker.domain.log import LogEntry, NewEntry, QuarantineItem
from tracker.store import log_queries
from tracker.store.event_log import EventLog


class LogSink:
    """Appends and reads through the service's one-writer limiter."""

    def __init__(self, event_log: EventLog, limiter: trio.CapacityLimiter) -> None:
        self.log = event_log
        self.limiter = limiter

    async def append(self, items: Sequence[NewEntry | QuarantineItem]) -> tuple[int, int]:
        """(appended, duplicates)."""
        entries = [i for i in items if isinstance(i, NewEntry)]
        quarantine = [i for i in items if isinstance(i, QuarantineItem)]
        if not entries and not quarantine:
            return 0, 0
        result = await trio.to_thread.run_sync(self.log.append, entries, quarantine, limiter=self.limiter)
        return len(result.appended), result.duplicates

    async def latest(self, account: str, channel: str, event: str) -> dict[str, Any] | None:
        return await trio.to_thread.run_sync(log_queries.latest_tracker_data, self.log, account, channel, event)

    async def last_reconciled_at(self, account: str, channel: str) -> datetime | None:
        return await trio.to_thread.run_sync(log_queries.last_reconciled_at, self.log, account, channel)

    async def signals_after(self, account: str, after: int) -> list[LogEntry]:
        return await trio.to_thread.run_sync(log_queries.signals_after, self.log, account, after)

    async def entries_about(self, account: str, trade_ids: list[str], event_ids: list[str]) -> list[LogEntry]:
        return await trio.to_thread.run_sync(
            partial(log_queries.entries_about, self.log, account, trade_ids=trade_ids, event_ids=event_ids)
        )

    async def unclosed_gaps(self, account: str) -> list[str]:
        return await trio.to_thread.run_sync(log_queries.unclosed_gaps, self.log, account)

    async def run_start(self, account: str, started_at: datetime) -> tuple[int, datetime | None]:
        return await trio.to_thread.run_sync(log_queries.run_start, self.log, account, started_at)

    async def ledger_cursor(self, account: str, channel: str, event: str) -> int | None:
        return await trio.to_thread.run_sync(log_queries.ledger_cursor, self.log, account, channel, event)

    async def ws_activity_after(self, account: str, after: int, prefixes: Sequence[str]) -> tuple[int, bool]:
        return await trio.to_thread.run_sync(log_queries.ws_activity_after, self.log, account, after, prefixes)
