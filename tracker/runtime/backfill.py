"""Backfill: fill every potential gap from the REST API, politely, and say so in the log.

A websocket is not a ledger. This task watches the log (the connection lifecycle ingest records, and the
``pre_event_id`` chain of each my_orders stream) and, at start-up and after every (re)connect or chain break, walks
the REST endpoints of PROTOCOL.md §5 from where the previous backfill stopped (gotcha 8):

1. ``account_order_data/`` per market and order source (``orderbook``, ``stop_order``), inclusive ``since_id``;
2. ``trade_history/<perp>/`` (``after_id``) for perp markets, before ``user_transactions`` so a perp fill is first
   learned with its ``position_id``;
3. ``user_transactions/<market>/`` with an inclusive ``since_id`` (sort asc, the repeated first row dropped). Per
   market, because spot and perp rows share a pair key (``btc_usd``): the market from the URL is exact;
4. ``position_settlement_transactions/`` from the last ``settlement_time`` seen (perp);
5. when a projection is at hand, ``order_status/`` for orders open in it but absent from ``open_orders/`` (only
   orders that did not change in the last 10 s: ``open_orders/`` is cached).

Everything fetched is appended as ``source='rest'`` entries (``tracker.bitstamp.rest_entries``); the log's dedup keys
absorb what an earlier walk already stored, and the projection makes one fill of a fill learned twice (and a
``fill_source_mismatch`` where the sources disagree). Each potential gap is recorded first as ``gap_detected`` (its
window, or the chain break) and closed by one ``backfill_completed`` with what was found, the requests made, the time
taken and the cursors reached. The next backfill starts from those cursors (read back from the log), so a crash in
between costs a re-walk, never a miss. The first walk ever starts at the beginning: ``user_transactions`` from id 0
(a real account's whole history, once: intended for an audit tool) and ``account_order_data`` 30 days back (its
retention).

Writes: REST facts are appended by ``EventLog.append`` in a worker thread behind the service's ``db_limiter`` (the
same limiter the single writer uses), so there is still one writer at a time; each page is one transaction.

Politeness (PROTOCOL.md §5.8): a token bucket for ≤ 400 requests/s and a sliding budget of ≤ 10,000 per 10 minutes
(both configurable), and capped jittered back-off on 400.002/400.067/400.068/429 (``RateLimited``, honouring
``Retry-After``), 5xx (``ServerError``) and transport errors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import trio
from sqlalchemy import and_, or_, select

from tracker.bitstamp import rest_entries as re_
from tracker.bitstamp.channels import channels_for
from tracker.bitstamp.parse import parse_entry
from tracker.bitstamp.wire import datetime_to_us, display_market_to_symbol, loads_exact, parse_rest_datetime
from tracker.domain import tracker_events as te
from tracker.domain.events import Fill, OrderStatusSnapshot
from tracker.domain.gaps import (
    ChainBreak,
    ChainTracker,
    CoverageTracker,
    Window,
    advance,
    event_id_at,
    event_id_order,
    forget_passed,
)
from tracker.domain.log import LogEntry, NewEntry, QuarantineItem
from tracker.domain.money import BadAmount, parse_decimal
from tracker.domain.reconcile import ExchangeFill, ExchangeOpenOrder, ExchangeOrderStatus, open_order_candidates
from tracker.domain.rows import OrderRow
from tracker.exchange.errors import ApiError, AuthError, ExchangeUnreachable, RateLimited, ServerError
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backoff import Backoff
from tracker.store.event_log import LOG_FIELDS, EventLog
from tracker.store.schema import event_log as event_log_table

log = logging.getLogger("tracker.backfill")
PROGRESS_EVERY = 5_000  # facts fetched between two progress lines of one backfill

BACKFILL_CHANNEL: Final = "backfill"
ORDER_SOURCES: Final = ("orderbook", "stop_order")
NO_EVENTS: Final = "404.008"
NOT_FOUND_ORDER: Final = "404.002"
NOT_DERIVATIVES: Final = "API5506"
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


def uuid4_hex() -> str:
    return uuid.uuid4().hex


# --- politeness -----------------------------------------------------------------------------------------------------


class RateLimiter:
    """≤ ``per_second`` requests in any 1 s and ≤ ``per_window`` in any ``window_s`` (sliding windows over the
    times of the last requests, so the limits hold for *every* window, not on average). Times come from ``clock``
    (trio's, so ``autojump_clock`` tests it instantly)."""

    def __init__(
        self,
        per_second: int = 400,
        per_window: int = 10_000,
        window_s: float = 600.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if per_second < 1 or per_window < 1 or window_s <= 0:
            raise ValueError("rate limits must be positive")
        self.limits = ((int(per_second), 1.0), (int(per_window), float(window_s)))
        self.clock = clock
        self._recent: deque[float] = deque(maxlen=max(n for n, _ in self.limits))
        self.waited_s = 0.0

    def _ready_at(self) -> float:
        ready = -math.inf
        for count, span in self.limits:
            if len(self._recent) >= count:
                ready = max(ready, self._recent[-count] + span)
        return ready

    async def acquire(self) -> None:
        # Re-checked after each wait: another task may have taken the slot meanwhile (no await between the last
        # check and the append, so two tasks never take the same slot).
        while (ready := self._ready_at()) > (now := self.clock()):
            self.waited_s += ready - now
            await trio.sleep_until(ready)
        self._recent.append(now)


@dataclass
class RequestStats:
    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class PoliteApi:
    """Every REST call of backfill and reconciliation goes through ``call``: the rate limiter first, then the call,
    with back-off and retry on rate limits, 5xx and transport errors (at most ``max_attempts`` tries)."""

    def __init__(
        self,
        client: BitstampClient,
        limiter: RateLimiter | None = None,
        *,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.limiter = limiter or RateLimiter()
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.stats = RequestStats()

    async def call(self, endpoint: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        backoff = Backoff(base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            self.stats.requests[endpoint] += 1
            try:
                return await fn(*args, **kwargs)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                failure: Exception = exc
            except (ServerError, ExchangeUnreachable) as exc:
                delay = backoff.next_delay()
                failure = exc
            if attempt >= self.max_attempts:
                raise failure
            self.stats.retries += 1
            log.info("%s: %s; retrying in %.1f s", endpoint, failure, delay)
            await trio.sleep(delay)


# --- the log, read and written --------------------------------------------------------------------------------------

_COLUMNS = tuple(event_log_table.c[name] for name in LOG_FIELDS)


def _latest_tracker_data(event_log: EventLog, account: str, channel: str, event: str) -> dict[str, Any] | None:
    t = event_log_table
    query = (
        select(t.c.payload)
        .where(t.c.channel == channel, t.c.account == account, t.c.event == event, t.c.source == "tracker")
        .order_by(t.c.seq.desc())
        .limit(1)
    )
    with event_log.engine.connect() as conn:
        payload = conn.execute(query).scalar_one_or_none()
    if payload is None:
        return None
    data = json.loads(payload).get("data")
    return data if isinstance(data, dict) else None


def _signals_after(event_log: EventLog, account: str, after: int, limit: int = 2000) -> list[LogEntry]:
    """Entries that can reveal a gap: tracker lifecycle entries and ws entries with an event_id (my_orders)."""
    t = event_log_table
    query = (
        select(*_COLUMNS)
        .where(
            t.c.seq > after,
            t.c.account == account,
            or_(t.c.source == "tracker", and_(t.c.source == "ws", t.c.event_id.is_not(None))),
        )
        .order_by(t.c.seq)
        .limit(limit)
    )
    with event_log.engine.connect() as conn:
        return [LogEntry(*row) for row in conn.execute(query)]


def _run_start(event_log: EventLog, account: str, started_at: datetime) -> tuple[int, datetime | None]:
    """(seq before this run's first entry, received_at of the previous run's last entry), scanning back from the
    head: entries of this run have ``received_at >= started_at``."""
    t = event_log_table
    hi: int | None = None
    with event_log.engine.connect() as conn:
        while True:
            query = select(t.c.seq, t.c.received_at).where(t.c.account == account)
            if hi is not None:
                query = query.where(t.c.seq < hi)
            rows = list(conn.execute(query.order_by(t.c.seq.desc()).limit(500)))
            if not rows:
                return 0, None
            for seq, received_at in rows:
                if received_at < started_at:
                    return seq, received_at
            hi = rows[-1][0]


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
        return await trio.to_thread.run_sync(_latest_tracker_data, self.log, account, channel, event)

    async def signals_after(self, account: str, after: int) -> list[LogEntry]:
        return await trio.to_thread.run_sync(_signals_after, self.log, account, after)

    async def run_start(self, account: str, started_at: datetime) -> tuple[int, datetime | None]:
        return await trio.to_thread.run_sync(_run_start, self.log, account, started_at)


# --- cursors and reports --------------------------------------------------------------------------------------------


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
            "duration_s": round(self.duration_s, 3),
            "cursors": self.cursors.as_data(),
        }


def _as_log_entry(entry: NewEntry) -> LogEntry:
    return LogEntry(seq=0, prev_hash="", hash="", **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)})


def exchange_fill(entry: NewEntry) -> ExchangeFill | None:
    """The fill a REST entry describes, read exactly as the projection reads it (``parse_entry``)."""
    event = parse_entry(_as_log_entry(entry))
    if not isinstance(event, Fill):
        return None
    return ExchangeFill(event.trade_id, event.market, event.side, event.amount, event.price, event.fee)


def exchange_status(entry: NewEntry) -> ExchangeOrderStatus | None:
    event = parse_entry(_as_log_entry(entry))
    if not isinstance(event, OrderStatusSnapshot):
        return None
    return ExchangeOrderStatus(event.order_id, event.status, event.amount_remaining)


# --- the backfill ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    page_limit: int = 1000
    first_walk_days: float = 30.0  # account_order_data retention
    open_orders_cache_s: float = 10.0
    max_status_checks: int = 200  # order_status calls per run at most


ProjectedOrders = Callable[[], Awaitable[list[OrderRow]]]
FillPages = Callable[[BackfillReport, str, list[ExchangeFill], int], Awaitable[None]]
"""``(report, market, fills, cursor)`` after each ``user_transactions/`` page is in the log: the page's fills (with the
walk's first row, the cursor row, on its first page) and the walk's cursor after it (every id of the page is at or
below)."""


class Backfiller:
    """Runs backfills for one account (one at a time: ``lock``). Shared by the backfill and reconcile tasks."""

    def __init__(
        self,
        api: PoliteApi,
        sink: LogSink,
        *,
        account: str,
        markets: Sequence[str],
        names: dict[str, str] | None = None,
        options: BackfillOptions | None = None,
        wall: Callable[[], datetime] = utc_now,
        uid: Callable[[], str] = uuid4_hex,
        projected_open_orders: ProjectedOrders | None = None,
    ) -> None:
        self.api = api
        self.sink = sink
        self.account = account
        self.markets = tuple(markets)
        self.names = names or {}
        self.options = options or BackfillOptions()
        self.wall = wall
        self.uid = uid
        self.projected_open_orders = projected_open_orders
        self.lock = trio.Lock()
        self.cursors: Cursors | None = None
        self.runs = 0
        self.last_report: BackfillReport | None = None
        self.completed = trio.Event()  # replaced after each run: wait on it for the next one

    async def wait_runs(self, n: int) -> BackfillReport | None:
        """Wait until at least ``n`` backfills have completed (tests, the bench)."""
        while self.runs < n:
            await self.completed.wait()
        return self.last_report

    def _name(self, market: str) -> str:
        return self.names.get(market) or market

    async def _cursors(self) -> Cursors:
        if self.cursors is None:
            data = await self.sink.latest(self.account, BACKFILL_CHANNEL, te.BACKFILL_COMPLETED)
            self.cursors = Cursors.from_data((data or {}).get("cursors"))
        return self.cursors

    def _entry(self, event: str, data: dict[str, Any], market: str | None = None) -> NewEntry:
        return te.tracker_entry(
            account=self.account,
            event=event,
            data=data,
            received_at=self.wall(),
            uid=self.uid(),
            channel=BACKFILL_CHANNEL,
            market=market,
        )

    async def record_gaps(self, windows: Iterable[Window], breaks: Iterable[ChainBreak], reason: str) -> list[str]:
        entries: list[NewEntry] = []
        ids: list[str] = []
        for window in windows:
            gap_id = f"gap:{self.uid()}"
            ids.append(gap_id)
            entries.append(self._entry(te.GAP_DETECTED, {"gap_id": gap_id, "trigger": reason, **window.as_data()}))
        n_windows = len(ids)
        for brk in breaks:
            gap_id = f"gap:{self.uid()}"
            ids.append(gap_id)
            data = {
                "gap_id": gap_id,
                "trigger": reason,
                "reason": "chain_break",
                "order_source": brk.order_source,
                "expected_pre_event_id": brk.expected,
                "pre_event_id": brk.pre_event_id,
                "event_id": brk.event_id,
                "seq": brk.seq,
            }
            entries.append(self._entry(te.GAP_DETECTED, data, market=brk.market))
        await self.sink.append(entries)
        if ids:
            log.info(
                "gap detected (%s): %d window(s) not live, %d order-stream break(s); backfilling from REST",
                reason,
                n_windows,
                len(ids) - n_windows,
            )
        return ids

    async def run(
        self,
        reason: str,
        *,
        windows: Sequence[Window] = (),
        breaks: Sequence[ChainBreak] = (),
        user_transactions_from: dict[str, int] | None = None,
        check_orders: bool = True,
        fill_pages: FillPages | None = None,
    ) -> BackfillReport:
        """One backfill: GAP_DETECTED for each window/break, the walks, BACKFILL_COMPLETED. ``user_transactions_from``
        (reconciliation) starts those walks earlier than the cursors, e.g. ``{m: 0}`` for a full audit; ``fill_pages``
        (reconciliation) sees each page's fills once the page is in the log.

        Memory is bounded by a page, not by the walk: each page is appended as it arrives and only counters, cursors
        and the keys of the last page (``forget_passed``) are kept."""
        async with self.lock:
            started = trio.current_time()
            gap_ids = await self.record_gaps(windows, breaks, reason)
            cursors = await self._cursors()
            before = self.api.stats.requests.copy()
            report = BackfillReport(reason, gap_ids, cursors=cursors)
            perps = [m for m in self.markets if m.endswith("-perp")]
            for market in self.markets:
                for source in ORDER_SOURCES:
                    walk = self._order_events(report, market, source)
                    await self._guard(report, f"account_order_data:{market}:{source}", walk)
            for market in perps:
                await self._guard(report, f"trade_history:{market}", self._trade_history(report, market))
            for market in self.markets:
                start = None if user_transactions_from is None else user_transactions_from.get(market)
                walk = self._user_transactions(report, market, start, fill_pages)
                await self._guard(report, f"user_transactions:{market}", walk)
            if perps:
                await self._guard(report, "position_settlement_transactions", self._settlements(report))
            if check_orders and self.projected_open_orders is not None:
                await self._guard(report, "open_orders", self._open_orders(report))
            report.requests = self.api.stats.requests - before
            report.duration_s = trio.current_time() - started
            await self.sink.append([self._entry(te.BACKFILL_COMPLETED, report.as_data())])
            self.runs += 1
            self.last_report = report
            done, self.completed = self.completed, trio.Event()
            done.set()
            log.info(
                "backfill (%s): %d gap(s) filled, %d new facts from %d requests in %.2f s%s",
                reason,
                len(report.gap_ids),
                sum(report.found.values()),
                sum(report.requests.values()),
                report.duration_s,
                f"; errors: {report.errors}" if report.errors else "",
            )
            return report

    async def _guard(self, report: BackfillReport, what: str, walk: Awaitable[None]) -> None:
        try:
            await walk
        except AuthError:
            raise
        except (ApiError, ExchangeUnreachable) as exc:
            report.errors[what] = str(exc)
            log.warning("backfill: %s failed: %s (its cursor stays; the next backfill retries)", what, exc)

    async def _append(self, report: BackfillReport, endpoint: str, items: list[NewEntry | QuarantineItem]) -> None:
        appended, _ = await self.sink.append(items)
        before = sum(report.fetched.values())
        report.fetched[endpoint] += len(items)
        report.found[endpoint] += appended
        # Progress for large backfills: one line per PROGRESS_EVERY facts fetched (a log line, not a redrawn bar:
        # `tracker run` is a service whose output is usually a journal or a file).
        after = before + len(items)
        if after // PROGRESS_EVERY > before // PROGRESS_EVERY:
            log.info(
                "backfill (%s): %s facts fetched so far, %s new (now walking %s)",
                report.reason,
                f"{after:,}",
                f"{sum(report.found.values()):,}",
                endpoint,
            )

    async def _order_events(self, report: BackfillReport, market: str, source: str) -> None:
        key = f"{market}|{source}"
        cursor: str | None = report.cursors.order_events.get(key)
        synthetic = cursor is None
        if cursor is None:
            first = self.wall() - timedelta(days=self.options.first_walk_days) + timedelta(hours=1)
            cursor = event_id_at(datetime_to_us(first))
        seen: set[str] = set()
        while True:
            params: dict[str, str | int] = {"market": self._name(market)}
            if cursor is not None:
                params["since_id"] = cursor
            try:
                page = await self.api.call("account_order_data", self.api.client.account_order_data, source, **params)
            except ApiError as exc:
                if exc.code == NO_EVENTS:
                    return
                if synthetic and cursor is not None and (exc.code or "").startswith("400."):
                    # The made-up "30 days ago" id was refused (the real server's rules for since_id are not
                    # documented): fall back to the server's default window, the last 24 h.
                    log.warning("account_order_data refused a synthetic since_id (%s): using its default window", exc)
                    cursor = None
                    continue
                raise
            synthetic = False
            rows = page if isinstance(page, list) else []
            keys = [str(r.get("event_id") or "") if isinstance(r, dict) else "" for r in rows]
            step = advance(cursor, keys, limit=self.options.page_limit, order=event_id_order, seen=seen)
            now = self.wall()
            items = [
                re_.entry_from_account_order_event(rows[i], account=self.account, market=market, received_at=now)
                for i in step.fresh
            ]
            await self._append(report, "account_order_data", items)
            if step.cursor is not None and len(step.cursor) == 36:
                cursor = step.cursor
                report.cursors.order_events[key] = cursor
                forget_passed(seen, cursor, order=event_id_order)
            if step.done:
                return

    async def _trade_history(self, report: BackfillReport, market: str) -> None:
        after = report.cursors.trade_history.get(market)
        seen: set[int] = set()
        while True:
            params: dict[str, str | int] = {"limit": self.options.page_limit, "sort": "asc"}
            if after is not None:
                params["after_id"] = after
            try:
                page = await self.api.call("trade_history", self.api.client.trade_history, market, **params)
            except ApiError as exc:
                if exc.code == NOT_DERIVATIVES:
                    return
                raise
            rows = page if isinstance(page, list) else []
            keys = [_int(r.get("trade_id")) if isinstance(r, dict) else -1 for r in rows]
            step = advance(after, keys, limit=self.options.page_limit, seen=seen)
            now = self.wall()
            items = [
                re_.entry_from_perp_trade(rows[i], account=self.account, received_at=now, market=market)
                for i in step.fresh
            ]
            await self._append(report, "trade_history", items)
            if step.cursor is not None and step.cursor >= 0:
                after = step.cursor
                report.cursors.trade_history[market] = after
                forget_passed(seen, after)
            if step.done:
                return

    async def _user_transactions(
        self, report: BackfillReport, market: str, start: int | None, fill_pages: FillPages | None = None
    ) -> None:
        cursor = report.cursors.user_transactions.get(market, 0)
        if start is not None:
            cursor = min(cursor, start)
        report.walk_from[market] = cursor
        seen: set[int] = set()
        while True:
            page = await self.api.call(
                "user_transactions",
                self.api.client.user_transactions,
                market,
                since_id=cursor,
                sort="asc",
                limit=self.options.page_limit,
            )
            rows = page if isinstance(page, list) else []
            if rows and market not in report.walk_start_at and isinstance(rows[0], dict):
                first_at = parse_rest_datetime(rows[0].get("datetime"))
                if first_at is not None:
                    report.walk_start_at[market] = first_at
            keys = [_int(r.get("id")) if isinstance(r, dict) else -1 for r in rows]
            fresh_or_cursor = [i for i, k in enumerate(keys) if k == cursor and k not in seen]
            step = advance(cursor, keys, limit=self.options.page_limit, seen=seen)
            now = self.wall()
            built = {
                i: re_.entry_from_user_transaction(
                    rows[i], account=self.account, received_at=now, markets_by_pair={}, market=market
                )
                for i in sorted({*step.fresh, *fresh_or_cursor})
            }
            seen.update(keys[i] for i in fresh_or_cursor)
            await self._append(report, "user_transactions", [built[i] for i in step.fresh])
            if step.cursor is not None and step.cursor >= 0:
                cursor = step.cursor
                if cursor > report.cursors.user_transactions.get(market, -1):
                    report.cursors.user_transactions[market] = cursor
                forget_passed(seen, cursor)
            if fill_pages is not None:
                fills = [
                    ex
                    for item in built.values()
                    if isinstance(item, NewEntry) and (ex := exchange_fill(item)) is not None
                ]
                await fill_pages(report, market, fills, cursor)
            del built, rows, page  # one page alive at a time: not this one while the next is fetched
            if step.done:
                return

    async def _settlements(self, report: BackfillReport) -> None:
        params: dict[str, str | int] = {}
        since = report.cursors.settlements_since
        if since is not None:
            params["since_timestamp"] = since
        page = await self.api.call(
            "position_settlement_transactions", self.api.client.position_settlement_transactions, **params
        )
        rows = page if isinstance(page, list) else []
        now = self.wall()
        items = [re_.entry_from_position_settlement(r, account=self.account, received_at=now) for r in rows]
        await self._append(report, "position_settlement_transactions", items)
        times = [t for r in rows if isinstance(r, dict) and (t := _int(r.get("settlement_time"))) >= 0]
        if times:
            newest = max(times)
            report.cursors.settlements_since = newest if newest < 10**11 else newest // 1_000_000

    async def _open_orders(self, report: BackfillReport) -> None:
        assert self.projected_open_orders is not None
        projected = await self.projected_open_orders()
        report.statuses = await check_open_orders(self, report, projected)


async def check_open_orders(
    backfiller: Backfiller, report: BackfillReport, projected: Sequence[OrderRow]
) -> list[ExchangeOrderStatus]:
    """``open_orders/`` against the projected open orders; ``order_status/`` for each disagreement older than the
    cache (logged as ``rest_order_status`` facts). Returns the statuses learned."""
    api = backfiller.api
    asked_at = backfiller.wall()
    rows = await api.call("open_orders", api.client.open_orders)
    exchange_open = [o for r in rows if isinstance(r, dict) and (o := open_order_row(r)) is not None]
    _, confirm = open_order_candidates(
        projected,
        exchange_open,
        asked_at=asked_at,
        markets=backfiller.markets,
        cache_s=backfiller.options.open_orders_cache_s,
    )
    return await ask_order_status(backfiller, report, confirm[: backfiller.options.max_status_checks])


async def ask_order_status(
    backfiller: Backfiller, report: BackfillReport, order_ids: Iterable[str]
) -> list[ExchangeOrderStatus]:
    api = backfiller.api
    statuses: list[ExchangeOrderStatus] = []
    items: list[NewEntry | QuarantineItem] = []
    for order_id in order_ids:
        try:
            answer = await api.call("order_status", api.client.order_status, order_id, omit_transactions=True)
        except ApiError as exc:
            if exc.code == NOT_FOUND_ORDER:
                statuses.append(ExchangeOrderStatus(order_id, "", found=False))
                continue
            raise
        item = re_.entry_from_order_status(answer, account=backfiller.account, received_at=backfiller.wall())
        items.append(item)
        if isinstance(item, NewEntry) and (status := exchange_status(item)) is not None:
            statuses.append(status)
    appended, _ = await backfiller.sink.append(items)
    report.fetched["order_status"] += len(items)
    report.found["order_status"] += appended
    return statuses


def open_order_row(row: dict[str, Any]) -> ExchangeOpenOrder | None:
    order_id = row.get("id")
    if order_id is None:
        return None
    market = row.get("market") or row.get("currency_pair")
    try:
        remaining = parse_decimal(row["amount"]) if row.get("amount") is not None else None
    except BadAmount:
        remaining = None
    return ExchangeOpenOrder(
        str(order_id),
        display_market_to_symbol(market) if isinstance(market, str) else None,
        remaining,
        parse_rest_datetime(row.get("datetime")),
    )


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


# --- the task -------------------------------------------------------------------------------------------------------


@dataclass
class GapWatch:
    """Folds the log's signal entries into windows and chain breaks (pure state; the task feeds it)."""

    account: str
    coverage: CoverageTracker = field(default_factory=CoverageTracker)
    chain: ChainTracker = field(default_factory=ChainTracker)
    windows: list[Window] = field(default_factory=list)
    breaks: list[ChainBreak] = field(default_factory=list)
    reconnects: int = 0

    def feed(self, entry: LogEntry) -> None:
        if entry.source == "ws":
            if entry.event_id is None or not entry.channel.startswith("private-my_orders_") or entry.market is None:
                return
            try:
                message = loads_exact(entry.payload)
            except ValueError:
                return
            source = message.get("order_source") if isinstance(message, dict) else None
            brk = self.chain.observe(
                entry.account,
                entry.market,
                source if isinstance(source, str) else None,
                entry.event_id,
                entry.pre_event_id,
                entry.seq,
            )
            if brk is not None:
                self.breaks.append(brk)
            return
        conn = entry.connection_id or ""
        if entry.event == te.SUBSCRIBED:
            channels = _data(entry).get("channels")
            names = [str(c) for c in channels] if isinstance(channels, list) else []
            self.windows.extend(self.coverage.subscribed(conn, names, entry.received_at))
            self.reconnects += 1
        elif entry.event == te.STALLED:
            silent = _data(entry).get("silent_for_s")
            since = entry.received_at
            if isinstance(silent, int | float):
                since -= timedelta(seconds=float(silent))
            self.coverage.stalled(conn, since, "no frame after a heartbeat")
        elif entry.event == te.RECONNECT_REQUESTED:
            self.coverage.reconnect_requested(conn, entry.received_at)
        elif entry.event == te.CLOSED:
            reason = _data(entry).get("reason")
            self.coverage.closed(conn, entry.received_at, str(reason) if reason else "")

    def take(self) -> tuple[list[Window], list[ChainBreak], int]:
        out = (self.windows, self.breaks, self.reconnects)
        self.windows, self.breaks, self.reconnects = [], [], 0
        return out


def _data(entry: LogEntry) -> dict[str, Any]:
    try:
        data = json.loads(entry.payload).get("data")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def market_names(api: PoliteApi) -> dict[str, str]:
    """``markets/``: symbol → display name (``btcusd`` → ``BTC/USD``), for ``account_order_data``'s ``market``."""
    try:
        rows = await api.call("markets", api.client.markets)
    except ApiError:
        return {}
    return {
        str(r["market_symbol"]).lower(): str(r["name"])
        for r in rows
        if isinstance(r, dict) and r.get("market_symbol") and r.get("name")
    }


async def watch_and_backfill(
    backfiller: Backfiller,
    *,
    stop: trio.Event,
    committed: Callable[[], trio.Event] | None = None,
    started_at: datetime,
    poll_s: float = 1.0,
    task_status: trio.TaskStatus[GapWatch] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Tail the log's signal entries from this run's start; backfill after each subscription (start-up and every
    reconnect) and each chain break, recording the windows and breaks that triggered it. Returns when ``stop``."""
    sink = backfiller.sink
    account = backfiller.account
    watch = GapWatch(account)
    after, previous_last = await sink.run_start(account, started_at)
    user_id = account
    channels = channels_for(backfiller.markets, user_id)
    watch.coverage.start_up(channels, previous_last, "tracker was not running" if previous_last else "first start")
    task_status.started(watch)
    while not stop.is_set():
        entries = await sink.signals_after(account, after)
        for entry in entries:
            watch.feed(entry)
            after = entry.seq
        if len(entries) >= 2000:
            continue
        windows, breaks, subscriptions = watch.take()
        if windows or breaks or subscriptions:
            reason = "chain_break" if breaks and not subscriptions else "subscribed"
            await backfiller.run(reason, windows=windows, breaks=breaks)
            continue
        with trio.move_on_after(poll_s):
            await (committed() if committed is not None else stop).wait()
