"""Backfill: fill every potential gap from the REST API, politely, and say so in the log.

A websocket is not a ledger. This task watches the log (the connection lifecycle ingest records, and the
``pre_event_id`` chain of each my_orders stream) and, at start-up and after every (re)connect or chain break, walks
the REST endpoints of docs/bitstamp.md §5 from where the previous backfill stopped (gotcha 8):

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

This module is the walk and the task that starts it. Its parts live beside it, one job each:

- ``runtime/polite_api.py``: the rate budget and the retry policy every REST call goes through;
- ``runtime/log_sink.py`` over ``store/log_queries.py``: appends (one page, one transaction, behind the service's
  one-writer limiter) and the log reads (cursors, this run's start, gap signals);
- ``domain/gaps.py`` (``GapWatch``) with ``bitstamp/signals.py``: the signals folded into windows and chain breaks;
- ``domain/backfill.py``: cursors, options and the report ``backfill_completed`` carries;
- ``runtime/order_checks.py``: ``open_orders/`` and ``order_status/``.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final

import trio

from tracker.bitstamp import rest_entries as re_
from tracker.bitstamp.channels import channels_for
from tracker.bitstamp.parse import parse_entry
from tracker.bitstamp.rest_observations import exchange_fill, int_or_minus_one, parse_new_entry
from tracker.bitstamp.signals import gap_signal
from tracker.bitstamp.wire import datetime_to_us, parse_rest_datetime, unix_us_by_magnitude
from tracker.domain import tracker_events as te
from tracker.domain.backfill import BACKFILL_CHANNEL, ORDER_SOURCES, BackfillOptions, BackfillReport, Cursors
from tracker.domain.corroboration import adds_nothing
from tracker.domain.events import Fill, OrderEvent
from tracker.domain.gaps import (
    MARKET_WIDE_AFTER,
    ChainBreak,
    GapWatch,
    Window,
    advance,
    event_id_at,
    event_id_order,
    forget_passed,
)
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.domain.reconcile import ExchangeFill
from tracker.domain.rows import OrderRow
from tracker.domain.timeutil import utc_now
from tracker.errors import ExchangeError
from tracker.exchange.errors import ApiError
from tracker.runtime.log_sink import LogSink
from tracker.runtime.order_checks import OrderChecks
from tracker.runtime.polite_api import PoliteApi
from tracker.runtime.walk_health import WalkHealth
from tracker.store.log_queries import SIGNAL_PAGE

log = logging.getLogger("tracker.backfill")
PROGRESS_EVERY = 5_000  # facts fetched between two progress lines of one backfill

NO_EVENTS: Final = "404.008"
CORROBORATED_ENDPOINTS: Final = frozenset({"user_transactions", "trade_history", "account_order_data"})
MAX_OFFSET: Final = 200_000  # the deepest offset the paged endpoints accept (docs/bitstamp.md §5)
SETTLEMENT_WINDOW: Final = timedelta(days=30) - timedelta(hours=1)  # since_timestamp's reach, with a margin


def uuid4_hex() -> str:
    return uuid.uuid4().hex


# --- the backfill ---------------------------------------------------------------------------------------------------


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
        rng: random.Random | None = None,
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
        self.adopted_unclosed = False  # the first full walk closes the gaps earlier runs left open (``run``)
        self.health = WalkHealth(rng=rng)
        self.order_checks = OrderChecks(
            api,
            sink,
            account,
            self.markets,
            wall,
            cache_s=self.options.open_orders_cache_s,
            max_status_checks=self.options.max_status_checks,
        )

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

    def entry(self, event: str, data: dict[str, Any], market: str | None = None) -> NewEntry:
        """A tracker-made entry of this account on the backfill channel."""
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
            entries.append(self.entry(te.GAP_DETECTED, {"gap_id": gap_id, "trigger": reason, **window.as_data()}))
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
            entries.append(self.entry(te.GAP_DETECTED, data, market=brk.market))
        await self.sink.append(entries)
        if ids:
            log.info(
                "gap detected (%s): %d window(s) not live, %d order-stream break(s); backfilling from REST",
                reason,
                n_windows,
                len(ids) - n_windows,
            )
        return ids

    def _walks(
        self,
        report: BackfillReport,
        user_transactions_from: dict[str, int] | None,
        check_orders: bool,
        fill_pages: FillPages | None,
    ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """Every walk of a full backfill, in order, each under its key (``<endpoint>[:<market>[:<source>]]``): the unit
        that fails, is retried and is marked unavailable alone."""
        walks: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        perps = [m for m in self.markets if m.endswith("-perp")]
        for market in self.markets:
            for source in ORDER_SOURCES:
                walks.append(
                    (f"account_order_data:{market}:{source}", partial(self._order_events, report, market, source))
                )
        walks += [(f"trade_history:{market}", partial(self._trade_history, report, market)) for market in perps]
        for market in self.markets:
            start = None if user_transactions_from is None else user_transactions_from.get(market)
            walks.append(
                (f"user_transactions:{market}", partial(self._user_transactions, report, market, start, fill_pages))
            )
        if perps:
            walks.append(("position_settlement_transactions", partial(self._settlements, report)))
        if check_orders and self.projected_open_orders is not None:
            walks.append(("open_orders", partial(self._open_orders, report, self.projected_open_orders)))
        return walks

    async def run(
        self,
        reason: str,
        *,
        windows: Sequence[Window] = (),
        breaks: Sequence[ChainBreak] = (),
        user_transactions_from: dict[str, int] | None = None,
        check_orders: bool = True,
        fill_pages: FillPages | None = None,
        only: Iterable[str] | None = None,
    ) -> BackfillReport:
        """One backfill: GAP_DETECTED for each window/break, the walks, BACKFILL_COMPLETED. ``user_transactions_from``
        (reconciliation) starts those walks earlier than the cursors, e.g. ``{m: 0}`` for a full audit; ``fill_pages``
        (reconciliation) sees each page's fills once the page is in the log; ``only`` runs just the walks with those
        keys (a chain break's market and source, or the walks due for a retry). Walks marked unavailable are skipped.

        Memory is bounded by a page, not by the walk: each page is appended as it arrives and only counters, cursors
        and the keys of the last page (``forget_passed``) are kept.

        The first full walk of this backfiller (``only`` None) also lists, as filled, the gaps an earlier backfill
        recorded and never completed (a ``kill -9`` mid-walk, a task ended by a database outage): it starts from the
        cursors of the last completed backfill, which that cut-short walk started from too, so it covers their
        windows and breaks. Without this they stayed open for ever (``tracker status``: "gaps: 7 open") although
        nothing was missing (found by ``bench/soak.py --kill-every``). Under ``lock`` no other walk is under way, so
        every gap still open then was left by a walk that ended."""
        async with self.lock:
            started = trio.current_time()
            adopted: list[str] = []
            if only is None and not self.adopted_unclosed:
                adopted = await self.sink.unclosed_gaps(self.account)
            gap_ids = await self.record_gaps(windows, breaks, reason)
            cursors = await self._cursors()
            before = self.api.stats.requests.copy()
            report = BackfillReport(reason, adopted + gap_ids, cursors=cursors)
            wanted = None if only is None else set(only)
            for key, walk in self._walks(report, user_transactions_from, check_orders, fill_pages):
                if wanted is not None and key not in wanted:
                    continue
                if key in self.health.unavailable:
                    report.skipped[key] = self.health.unavailable[key]
                    continue
                await self._guard(report, key, walk)
            report.requests = self.api.stats.requests - before
            report.duration_s = trio.current_time() - started
            await self.sink.append([self.entry(te.BACKFILL_COMPLETED, report.as_data())])
            self.adopted_unclosed = self.adopted_unclosed or only is None
            self.runs += 1
            self.last_report = report
            done, self.completed = self.completed, trio.Event()
            done.set()
            log.info(
                "backfill (%s): %d gap(s) filled%s, %s new facts from %s requests in %.2f s%s",
                reason,
                len(report.gap_ids),
                f" ({len(adopted)} left open by an earlier walk that did not finish)" if adopted else "",
                f"{sum(report.found.values()):,}",  # grouped, as the progress lines write their counts
                f"{sum(report.requests.values()):,}",
                report.duration_s,
                f"; errors: {report.errors}" if report.errors else "",
            )
            return report

    async def _guard(self, report: BackfillReport, key: str, walk: Callable[[], Awaitable[None]]) -> None:
        """Run one walk; an exchange failure is recorded and judged (``WalkHealth``), never raised: live ingest and
        the other walks go on. Its cursor stays where the walk got to, so a retry repeats nothing."""
        try:
            await walk()
        except ExchangeError as exc:
            report.errors[key] = str(exc)
            outcome = self.health.failed(key, exc, trio.current_time())
            await self.sink.append([self.entry(outcome.event, outcome.as_data())])
            if outcome.event == te.ENDPOINT_UNAVAILABLE:
                log.warning("backfill: %s is unavailable until restart: %s", key, exc)
            else:
                log.warning("backfill: %s failed: %s (retried alone in %.1f s)", key, exc, outcome.retry_in_s or 0)
        else:
            self.health.succeeded(key)

    async def _append(self, report: BackfillReport, endpoint: str, items: list[NewEntry | QuarantineItem]) -> None:
        """Append a page's new facts: rows that repeat a logged fact exactly are counted as corroborated instead
        (``domain/corroboration.py``)."""
        corroborated = await self._corroborated(items) if endpoint in CORROBORATED_ENDPOINTS else set()
        report.corroborated[endpoint] += len(corroborated)
        appended, _ = await self.sink.append([item for i, item in enumerate(items) if i not in corroborated])
        before = sum(report.fetched.values())
        report.fetched[endpoint] += len(items)
        report.found[endpoint] += appended
        # Progress for large backfills: one line per PROGRESS_EVERY facts fetched (a log line, not a redrawn bar:
        # `tracker run` is a service whose output is usually a journal or a file).
        after = before + len(items)
        if after // PROGRESS_EVERY > before // PROGRESS_EVERY:
            found = sum(report.found.values())
            log.info(
                "backfill (%s): %s facts fetched so far, %s new (now walking %s)",
                report.reason,
                f"{after:,}",
                f"{found:,}",
                endpoint,
            )
            # In the log too, so `tracker status` shows a long first walk under way (a real account's history).
            progress = {"reason": report.reason, "fetched": after, "new": found, "walking": endpoint}
            await self.sink.append([self.entry(te.BACKFILL_PROGRESS, progress)])

    async def _corroborated(self, items: Sequence[NewEntry | QuarantineItem]) -> set[int]:
        """Indices of the REST entries whose fill or order event the log already holds, agreeing in every field."""
        observed: dict[int, Fill | OrderEvent] = {}
        for i, item in enumerate(items):
            if isinstance(item, NewEntry) and isinstance(event := parse_new_entry(item), Fill | OrderEvent):
                observed[i] = event
        if not observed:
            return set()
        trade_ids = [e.trade_id for e in observed.values() if isinstance(e, Fill)]
        event_ids = [e.event_id for e in observed.values() if isinstance(e, OrderEvent) and e.event_id]
        logged: dict[str, list[Fill | OrderEvent]] = {}
        for entry in await self.sink.entries_about(self.account, trade_ids, event_ids):
            event = parse_entry(entry)
            if isinstance(event, Fill):
                logged.setdefault(f"t:{event.trade_id}", []).append(event)
            elif isinstance(event, OrderEvent) and event.event_id:
                logged.setdefault(f"e:{event.event_id}", []).append(event)
        return {
            i
            for i, event in observed.items()
            if adds_nothing(
                event, logged.get(f"t:{event.trade_id}" if isinstance(event, Fill) else f"e:{event.event_id}", ())
            )
        }

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
            # API5506 (a spot-only account) ends this walk as unavailable: _guard and WalkHealth judge it.
            page = await self.api.call("trade_history", self.api.client.trade_history, market, **params)
            rows = page if isinstance(page, list) else []
            keys = [int_or_minus_one(r.get("trade_id")) if isinstance(r, dict) else -1 for r in rows]
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
            keys = [int_or_minus_one(r.get("id")) if isinstance(r, dict) else -1 for r in rows]
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
        """``position_settlement_transactions/`` to the end: oldest first (``sort=asc``), a page of ``page_limit`` at a
        time by ``offset`` (at most ``MAX_OFFSET``), from the cursor's second. ``since_timestamp`` may reach 30 days
        back at most (docs/bitstamp.md §5.7), so an older cursor (or none) starts just inside that window. The
        cursor is the newest ``settlement_time`` seen, read as s, ms or µs by its size; the repeated rows of the
        cursor's own second are absorbed by the log's dedup keys."""
        floor = datetime_to_us(self.wall() - SETTLEMENT_WINDOW) // 1_000_000
        since = max(report.cursors.settlements_since or 0, floor)
        offset = 0
        seen: set[str] = set()  # a page with nothing new ends the walk (a server ignoring offset cannot loop us)
        while True:
            page = await self.api.call(
                "position_settlement_transactions",
                self.api.client.position_settlement_transactions,
                since_timestamp=since,
                sort="asc",
                limit=self.options.page_limit,
                offset=offset,
            )
            rows = page if isinstance(page, list) else []
            now = self.wall()
            items = [re_.entry_from_position_settlement(r, account=self.account, received_at=now) for r in rows]
            await self._append(report, "position_settlement_transactions", items)
            times = [int_or_minus_one(r.get("settlement_time")) for r in rows if isinstance(r, dict)]
            seconds = [unix_us_by_magnitude(t) // 1_000_000 for t in times if t >= 0]
            if seconds:
                report.cursors.settlements_since = max(max(seconds), report.cursors.settlements_since or 0)
            ids = {str(r.get("transaction_id")) for r in rows if isinstance(r, dict)}
            fresh = ids - seen
            seen |= ids
            offset += len(rows)
            if not fresh or len(rows) < self.options.page_limit or offset + self.options.page_limit > MAX_OFFSET:
                return

    async def _open_orders(self, report: BackfillReport, projected_open_orders: ProjectedOrders) -> None:
        report.statuses = await self.order_checks.check_open_orders(report, await projected_open_orders())


# --- the task -------------------------------------------------------------------------------------------------------


async def market_names(api: PoliteApi) -> dict[str, str]:
    """``markets/``: symbol → display name (``btcusd`` → ``BTC/USD``), for ``account_order_data``'s ``market``. Any
    failure leaves the names unknown (the walks then send the symbol), never stops the start."""
    try:
        rows = await api.call("markets", api.client.markets)
    except ExchangeError as exc:
        log.warning("markets/: %s (account_order_data/ gets market symbols instead of names)", exc)
        return {}
    return {
        str(r["market_symbol"]).lower(): str(r["name"])
        for r in rows
        if isinstance(r, dict) and r.get("market_symbol") and r.get("name")
    }


BREAK_WALK_SPACING_S: Final = 1.0  # chain-break walks are coalesced: the next one waits at least this long


def break_walks(breaks: Iterable[ChainBreak]) -> set[str]:
    """The walks that cover chain breaks: each break's market, the events of both its order sources, and the market's
    fills (``trade_history`` for a perp, then ``user_transactions``). A break means frames of the
    connection were lost while it stayed up (no window was logged), and whatever withheld the order events withheld
    that market's ``my_trades`` frames too, which carry no chain of their own to show it: without these walks the
    fills stayed missing until the next full walk (a reconnect, the periodic reconciliation). For a perp market the
    settlements too (``position_settlement_transactions``): its ``my_settlements`` frames have no chain either, and
    one withheld with the connection up was missing (its position's realised PnL wrong) until the next full walk
    (found by ``bench/soak.py`` with reconciliation off).

    Both sources, whatever the source of the event that showed the break: the chain's scope is undocumented (per
    market or per market and source, docs/bitstamp.md §2.1), and where it runs over the market the missed events may
    be the other source's (stop orders withheld, then an orderbook event naming the last of them). Walking the
    break's own source alone left those orders missing until the next full walk (found by the soak with
    reconciliation off: 26 perp orders lost)."""
    keys: set[str] = set()
    for brk in breaks:
        keys.update(f"account_order_data:{brk.market}:{source}" for source in ORDER_SOURCES)
        if brk.market.endswith("-perp"):
            keys.add(f"trade_history:{brk.market}")
            keys.add("position_settlement_transactions")
        keys.add(f"user_transactions:{brk.market}")
    return keys


async def watch_and_backfill(
    backfiller: Backfiller,
    *,
    stop: trio.Event,
    committed: Callable[[], trio.Event] | None = None,
    started_at: datetime,
    poll_s: float = 1.0,
    down: str | None = None,
    task_status: trio.TaskStatus[GapWatch] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Tail the log's signal entries from this run's start and backfill: every walk after each subscription (start-up
    and every reconnect); only the broken market and source after chain breaks (coalesced: at most one such walk per
    ``BREAK_WALK_SPACING_S``); a failed walk alone when its retry is due (``WalkHealth``). Returns when ``stop``.
    ``down``: why the account was not tracked before this start (a process of several accounts gave it up as down):
    the start-up gap says so instead of "tracker was not running"."""
    sink = backfiller.sink
    account = backfiller.account
    watch = GapWatch(account)
    after, previous_last = await sink.run_start(account, started_at)
    channels = channels_for(backfiller.markets, account, extras=True)  # as ingest subscribes them (by default)
    not_running = f"account down in this run: {down}" if down else "tracker was not running"
    watch.coverage.start_up(channels, previous_last, not_running if previous_last else "first start")
    task_status.started(watch)
    pending: list[ChainBreak] = []
    last_break_walk = -math.inf
    while not stop.is_set():
        entries = await sink.signals_after(account, after)
        for entry in entries:
            if (signal := gap_signal(entry)) is not None:
                watch.feed(signal)
            after = entry.seq
        if len(entries) >= SIGNAL_PAGE:
            continue
        for market in watch.take_learned():
            log.warning(
                "my_orders %s: pre_event_id breaks while the connection stayed up: its chain runs market-wide (over"
                " events this account does not see); relying on connection windows for that stream",
                market,
            )
            learned = {"market": market, "breaks_with_connection_up": MARKET_WIDE_AFTER}
            await sink.append([backfiller.entry(te.CHAIN_MARKET_WIDE, learned, market=market)])
        windows, breaks, subscriptions = watch.take()
        pending += breaks
        now = trio.current_time()
        if windows or subscriptions:
            await backfiller.run("subscribed", windows=windows, breaks=pending)
            pending = []
            continue
        if pending and now - last_break_walk >= BREAK_WALK_SPACING_S:
            await backfiller.run("chain_break", breaks=pending, only=break_walks(pending))
            pending, last_break_walk = [], trio.current_time()
            continue
        if due := backfiller.health.due_now(now):
            await backfiller.run("retry", only=due)
            continue
        wake = [now + poll_s]
        if pending:
            wake.append(last_break_walk + BREAK_WALK_SPACING_S)
        if (next_due := backfiller.health.next_due()) is not None:
            wake.append(next_due)
        with trio.move_on_at(min(wake)):
            await (committed() if committed is not None else stop).wait()
