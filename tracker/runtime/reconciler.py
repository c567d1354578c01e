"""Reconciliation: the projection against the exchange, periodically (``reconcile_interval_s``) and on demand.

One run:

1. a backfill (``Backfiller.run``, reason ``reconcile``) whose ``user_transactions/`` walks start at the
   reconciliation window (the whole history for a full run, else where the previous reconciliation stopped), so every
   REST fact it sees is in the log and the exchange's fills of the window are at hand;
2. the projection catches up with the log (``ProjectionStore.catch_up``: exactly-once, safe beside the projector);
3. the pure diffs of ``tracker.domain.reconcile``: fills and fees per market, page by page during the walk
   (``FillPager``: the projection catches up after each page is logged, and ``FillAudit`` compares the page's rows
   with the projected fills whose ids fall in the page's id range, one indexed query, so memory is bounded by a page,
   not by the history); open orders vs ``open_orders/`` with ``order_status/`` confirming each disagreement older
   than the 10 s cache; order states vs ``order_status/`` for orders closed since the previous run (at most
   ``max_status_checks``); the balances' own arithmetic;
4. ``discrepancy`` entries for new findings, ``discrepancy_resolved`` for open reconciliation discrepancies checked
   again and found clean (ids are stable: ``recon:<kind>:<entity>``), then one ``reconciled`` entry with the summary
   and the cursors; the projection catches up again so ``v_discrepancies`` shows the result.

With a ledger capture (``runtime/ledger_capture.py``), each run also takes a balance snapshot of every tracked trade
account (the consistent cut) and reads ``crypto-transactions/`` again, before the discrepancies are planned; its
summary is the ``ledger`` part of the ``reconciled`` entry.

The wiring (building the API, the backfiller and this from settings) is ``runtime/recovery.py``; the reads of the
projection are ``store/projection_reads.py``; printing is the CLI's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final

import trio

from tracker.bitstamp import rest_observations
from tracker.domain import tracker_events as te
from tracker.domain.backfill import BackfillReport
from tracker.domain.log import NewEntry
from tracker.domain.reconcile import (
    RECON_PREFIX,
    Diff,
    ExchangeFill,
    FillAudit,
    Finding,
    OrderAudit,
    diff_balances,
    first_wait,
    plan,
)
from tracker.domain.rows import DiscrepancyRow, FillRow, OrderRow
from tracker.errors import ExchangeError
from tracker.exchange.errors import ApiError
from tracker.runtime.backfill import Backfiller
from tracker.runtime.ledger_capture import LedgerCapture
from tracker.store.event_log import EventLog
from tracker.store.projection_reads import ProjectionQueries
from tracker.store.projections import ProjectionStore

log = logging.getLogger("tracker.reconciler")

RECONCILE_CHANNEL: Final = "reconcile"
ORDER_CHUNK: Final = 1000  # projected orders per query and per step of the orders audit


class ProjectionReader:
    """The projection of one database as reconciliation sees it: catch-up (behind the given one-writer limiter) and
    bounded reads, each in a worker thread."""

    def __init__(self, store: ProjectionStore, event_log: EventLog, limiter: trio.CapacityLimiter) -> None:
        self.store = store
        self.log = event_log
        self.limiter = limiter
        self.queries = ProjectionQueries(store.engine, store.tables)

    async def catch_up(self) -> int:
        head = await trio.to_thread.run_sync(self.log.head)
        return await trio.to_thread.run_sync(partial(self.store.catch_up, self.log, until=head), limiter=self.limiter)

    async def fills_between(
        self, account: str, market: str, lo: int, hi: int, *, executed_since: datetime | None = None
    ) -> list[FillRow]:
        """The projected fills of one page's id range (about a page of them)."""
        return await trio.to_thread.run_sync(
            partial(self.queries.fills_between, account, market, lo, hi, executed_since)
        )

    async def fill_chunks(
        self, account: str, market: str, lo: int, hi: int, *, executed_since: datetime | None = None, chunk: int
    ) -> AsyncIterator[list[FillRow]]:
        """The projected fills of an id range of any size, ``chunk`` at a time (keyset pages)."""
        after: tuple[int, str] | None = None
        while True:
            rows = await trio.to_thread.run_sync(
                partial(self.queries.fills_between, account, market, lo, hi, executed_since, after, chunk)
            )
            if rows:
                yield rows
            if len(rows) < chunk:
                return
            after = (len(rows[-1].trade_id), rows[-1].trade_id)

    async def open_orders(self, account: str) -> list[OrderRow]:
        return await trio.to_thread.run_sync(self.queries.open_orders, account)

    async def orders_named(self, account: str, ids: Iterable[str]) -> list[OrderRow]:
        return await trio.to_thread.run_sync(self.queries.orders_named, account, list(ids))

    async def order_chunks(
        self, account: str, *, changed_after_seq: int | None, chunk: int
    ) -> AsyncIterator[list[OrderRow]]:
        """All orders of the account (``changed_after_seq`` None), else the open ones and those changed after that
        log seq: ``chunk`` at a time, in order id order (keyset pages on the primary key)."""
        after: str | None = None
        while True:
            rows = await trio.to_thread.run_sync(self.queries.order_page, account, changed_after_seq, after, chunk)
            if rows:
                yield rows
            if len(rows) < chunk:
                return
            after = rows[-1].order_id

    async def discrepancies(self, account: str) -> list[DiscrepancyRow]:
        """The account's open discrepancies: the unresolved ones (acknowledged ones are not counted)."""
        return await trio.to_thread.run_sync(self.queries.open_discrepancies, account)

    async def active_discrepancies(self, account: str) -> list[DiscrepancyRow]:
        """Open and acknowledged (resolved ones accumulate with the history; nothing here needs them)."""
        return await trio.to_thread.run_sync(self.queries.active_discrepancies, account)


@dataclass
class ReconcileResult:
    findings: list[Finding]
    opened: list[Finding]
    resolved: list[DiscrepancyRow]
    unresolved: list[DiscrepancyRow]  # every open discrepancy of the account afterwards (any kind)
    checked: int
    report: BackfillReport
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    max_status_checks: int = 200  # order_status/ calls per run at most (tracker reconcile --max-status-checks)
    # Periodic runs: order_status/ may use this share of the exchange's request budget, spread over the runs of a
    # window (3 % of 10,000 per 10 min: 300, i.e. 150 a run every 5 min, 30 a run every minute).
    status_share: float = 0.03
    cache_s: float = 10.0
    grace_s: float = 5.0


class FillPager:
    """The fills audit of one run, fed page by page as the backfill walks ``user_transactions/`` (its ``page`` is the
    backfill's ``fill_pages`` callback), then finished market by market (``finish``)."""

    def __init__(self, reader: ProjectionReader, account: str, watch: frozenset[str], *, full: bool) -> None:
        self.reader = reader
        self.account = account
        self.watch = watch
        self.full = full
        self.audits: dict[str, FillAudit] = {}

    def since(self, report: BackfillReport, market: str) -> datetime | None:
        """Only fills from around the window on (ids grow with time; a day of margin for clock quirks)."""
        start_at = report.walk_start_at.get(market)
        return None if self.full or start_at is None else start_at - timedelta(days=1)

    def _audit(self, report: BackfillReport, market: str) -> FillAudit:
        audit = self.audits.get(market)
        if audit is None:
            audit = self.audits[market] = FillAudit(market, report.walk_from.get(market, 0), self.watch)
        return audit

    async def page(self, report: BackfillReport, market: str, fills: list[ExchangeFill], cursor: int) -> None:
        audit = self._audit(report, market)
        if cursor < audit.next_id and not fills:
            return
        if not self.full and market not in report.walk_start_at:
            audit.next_id = max(audit.next_id, cursor + 1)  # no window start known yet: not judged (as before)
            return
        await self.reader.catch_up()  # the page is in the log; the projection must have it too
        projected = await self.reader.fills_between(
            self.account, market, audit.next_id, cursor, executed_since=self.since(report, market)
        )
        audit.page(projected, fills, cursor)

    async def finish(self, report: BackfillReport, markets: Iterable[str], chunk: int) -> Diff:
        """Each fully walked market's audit, with the projected fills past the exchange's last row (up to the
        furthest id walked before: fills the exchange does not list any more)."""
        diff = Diff()
        for market in markets:
            if f"user_transactions:{market}" in report.errors:
                continue  # the window was not fully read: judge it next time
            if not self.full and market not in report.walk_start_at:
                continue  # the exchange returned nothing for the window: nothing to compare yet
            audit = self._audit(report, market)
            to_id = report.cursors.user_transactions.get(market, report.walk_from.get(market, 0))
            since = self.since(report, market)
            tail = self.reader.fill_chunks(
                self.account, market, audit.next_id, to_id, executed_since=since, chunk=chunk
            )
            async for rows in tail:
                audit.tail(rows, to_id)
            diff.extend(audit.diff())
        return diff


class Reconciler:
    def __init__(
        self,
        backfiller: Backfiller,
        reader: ProjectionReader,
        *,
        options: ReconcileOptions | None = None,
        wall: Callable[[], datetime] | None = None,
        ledger: LedgerCapture | None = None,
    ) -> None:
        self.backfiller = backfiller
        self.ledger = ledger
        self.reader = reader
        self.options = options or ReconcileOptions()
        self.wall = wall or backfiller.wall
        self.runs = 0
        self.ran = trio.Event()  # replaced after each run: wait on it (wait_runs) for the next one

    @property
    def account(self) -> str:
        return self.backfiller.account

    async def wait_runs(self, n: int) -> None:
        """Wait until at least ``n`` runs of this reconciler have completed (tests)."""
        while self.runs < n:
            await self.ran.wait()

    def _entry(self, event: str, data: dict[str, Any]) -> NewEntry:
        return te.tracker_entry(
            account=self.account,
            event=event,
            data=data,
            received_at=self.backfiller.wall(),
            uid=self.backfiller.uid(),
            channel=RECONCILE_CHANNEL,
        )

    async def _window(self, full: bool) -> tuple[dict[str, int], int]:
        """Where this run's walks start per market, and the log seq of the previous run (0: every order)."""
        markets = self.backfiller.markets
        previous = await self.backfiller.sink.latest(self.account, RECONCILE_CHANNEL, te.RECONCILED) or {}
        cursors = previous.get("user_transactions")
        if full or not isinstance(cursors, dict):
            return dict.fromkeys(markets, 0), 0
        return {m: int(cursors.get(m, 0)) for m in markets}, int(previous.get("checkpoint", 0))

    async def first_wait(self, interval_s: float) -> float:
        """Seconds until this process's first periodic run (``domain.reconcile.first_wait``: the interval counted from
        the last ``reconciled`` entry in the log, whichever process wrote it)."""
        last = await self.backfiller.sink.last_reconciled_at(self.account, RECONCILE_CHANNEL)
        return first_wait(interval_s, last, self.backfiller.wall())

    def status_budget(self, interval_s: float) -> int:
        """order_status/ calls one periodic run may make: its share of the request budget (at least 10)."""
        per_window, window_s = self.backfiller.api.limiter.limits[-1]
        share = self.options.status_share * per_window * min(interval_s, window_s) / window_s
        return max(10, min(self.options.max_status_checks, int(share)))

    async def run_once(self, *, full: bool = False, status_budget: int | None = None) -> ReconcileResult:
        started = trio.current_time()
        bf = self.backfiller
        requests_before = bf.api.stats.total
        walk_from, prev_seq = await self._window(full)
        # Entities whose "checked" matters: those of open reconciliation discrepancies (to resolve them).
        watch = frozenset(
            d.entity
            for d in await self.reader.active_discrepancies(self.account)
            if d.discrepancy_id.startswith(RECON_PREFIX)
        )
        fills = FillPager(self.reader, self.account, watch, full=full)
        report = await bf.run("reconcile", user_transactions_from=walk_from, check_orders=False, fill_pages=fills.page)
        checkpoint = await self.reader.catch_up()
        diff = await fills.finish(report, bf.markets, bf.options.page_limit)
        errors = dict(report.errors)
        try:
            budget = self.options.max_status_checks if status_budget is None else status_budget
            diff.extend(await self._orders(report, prev_seq, watch, full=full, budget=budget))
        except ApiError as exc:
            errors["orders"] = str(exc)
        try:
            balances = await bf.api.call("account_balances", bf.api.client.account_balances)
            diff.extend(diff_balances(rest_observations.balances(balances)))
        except ApiError as exc:
            errors["account_balances"] = str(exc)
        ledger = await self.ledger.reconcile() if self.ledger is not None else None
        if ledger is not None:
            errors.update({f"ledger {key}": why for key, why in ledger["errors"].items()})
        todo = plan(diff, await self.reader.active_discrepancies(self.account))
        summary = {
            "full": full,
            "checked": diff.n_checked,
            "findings": len(diff.findings),
            "opened": [f.id for f in todo.open],
            "resolved": [d.discrepancy_id for d in todo.resolve],
            "still_open": [f.id for f in todo.still_open],
            "errors": errors,
            "requests_total": bf.api.stats.total - requests_before,
            "duration_s": round(trio.current_time() - started, 3),
            "user_transactions": {m: report.cursors.user_transactions.get(m, 0) for m in bf.markets},
            "checkpoint": checkpoint,
        }
        if ledger is not None:
            summary["ledger"] = ledger
        await bf.sink.append([*self._discrepancy_entries(todo.open, todo.resolve), self._entry(te.RECONCILED, summary)])
        await self.reader.catch_up()
        unresolved = await self.reader.discrepancies(self.account)
        self.runs += 1
        done, self.ran = self.ran, trio.Event()
        done.set()
        log.info(
            "reconciled: %d checked, %d new discrepancies, %d resolved, %d unresolved",
            diff.n_checked,
            len(todo.open),
            len(todo.resolve),
            len(unresolved),
        )
        return ReconcileResult(
            diff.findings, list(todo.open), list(todo.resolve), unresolved, diff.n_checked, report, errors
        )

    def _discrepancy_entries(self, opened: Iterable[Finding], resolved: Iterable[DiscrepancyRow]) -> list[NewEntry]:
        entries = [
            self._entry(te.DISCREPANCY, {"id": f.id, "kind": f.kind, "entity": f.entity, "detail": f.detail})
            for f in opened
        ]
        entries += [
            self._entry(
                te.DISCREPANCY_RESOLVED, {"id": d.discrepancy_id, "detail": f"checked again: clean ({d.detail})"}
            )
            for d in resolved
        ]
        return entries

    async def _orders(
        self, report: BackfillReport, since_seq: int, watch: frozenset[str], *, full: bool, budget: int
    ) -> Diff:
        """Open orders against ``open_orders/`` and order states against ``order_status/`` for disagreements and
        orders closed since the previous run (all closed ones on a full run), newest first, within the budget: over
        the projected orders a chunk at a time (``OrderAudit``)."""
        bf = self.backfiller
        asked_at = self.wall()
        exchange_open = rest_observations.open_orders(await bf.api.call("open_orders", bf.api.client.open_orders))
        changed_after = None if full else since_seq
        audit = OrderAudit(
            exchange_open,
            asked_at=asked_at,
            markets=bf.markets,
            budget=budget,
            since_seq=changed_after,
            cache_s=self.options.cache_s,
            grace_s=self.options.grace_s,
            watch=watch,
        )
        named = await self.reader.orders_named(self.account, [o.order_id for o in exchange_open])
        # Orders the exchange lists that the chunks below do not bring (closed, unchanged since the previous run).
        audit.chunk(
            [o for o in named if changed_after is not None and o.status != "open" and o.last_seq <= changed_after]
        )
        async for chunk in self.reader.order_chunks(self.account, changed_after_seq=changed_after, chunk=ORDER_CHUNK):
            audit.chunk(chunk)
        wanted = audit.candidates(o.order_id for o in named)
        return audit.statuses(await bf.order_checks.ask_order_status(report, wanted))


async def run_periodic(
    reconciler: Reconciler,
    *,
    interval_s: float,
    stop: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reconcile every ``interval_s`` until ``stop``. The first run comes one interval after the last reconciliation
    in the log (or after the account's log began: start-up already backfills), so restarts do not postpone it for
    ever; when that is past, at once (its backfill waits for the start-up one's lock)."""
    task_status.started()
    wait = await reconciler.first_wait(interval_s)
    while True:
        with trio.move_on_after(wait):
            await stop.wait()
        wait = interval_s
        if stop.is_set():
            return
        try:
            await reconciler.run_once(status_budget=reconciler.status_budget(interval_s))
        except ExchangeError as exc:  # no answer of the exchange ends the run: the next one tries again
            log.warning("reconciliation failed: %s (next try in %g s)", exc, interval_s)
