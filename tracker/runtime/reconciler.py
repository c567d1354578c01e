"""Reconciliation: the projection against the exchange, periodically (``reconcile_interval_s``) and on demand.

One run:

1. a backfill (``Backfiller.run``, reason ``reconcile``) whose ``user_transactions/`` walks start at the
   reconciliation window (the whole history for a full run, else where the previous reconciliation stopped), so every
   REST fact it sees is in the log and the exchange's fills of the window are at hand;
2. the projection catches up with the log (``ProjectionStore.catch_up``: exactly-once, safe beside the projector);
3. the pure diffs of ``tracker.domain.reconcile``: fills and fees per market, page by page during the walk (the
   projection catches up after each page is logged; ``FillAudit`` compares the page's rows with the projected fills
   whose ids fall in the page's id range, one indexed query, so memory is bounded by a page, not by the history);
   open orders vs ``open_orders/`` with
   ``order_status/`` confirming each disagreement older than the 10 s cache; order states vs ``order_status/`` for
   orders closed since the previous run (at most ``max_status_checks``); the balances' own arithmetic;
4. ``discrepancy`` entries for new findings, ``discrepancy_resolved`` for open reconciliation discrepancies checked
   again and found clean (ids are stable: ``recon:<kind>:<entity>``), then one ``reconciled`` entry with the summary
   and the cursors; the projection catches up again so ``v_discrepancies`` shows the result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

import trio
from sqlalchemy import func, or_, select

from tracker.domain import tracker_events as te
from tracker.domain.money import BadAmount, parse_decimal
from tracker.domain.reconcile import (
    RECON_PREFIX,
    Balance,
    Diff,
    ExchangeFill,
    FillAudit,
    Finding,
    OrderAudit,
    diff_balances,
    plan,
)
from tracker.domain.rows import TABLES, DiscrepancyRow, FillRow, OrderRow, Row
from tracker.exchange.errors import ApiError
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backfill import (
    Backfiller,
    BackfillOptions,
    BackfillReport,
    LogSink,
    PoliteApi,
    RateLimiter,
    ask_order_status,
    market_names,
    open_order_row,
    watch_and_backfill,
)
from tracker.runtime.ingest import discover_markets
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore

log = logging.getLogger("tracker.reconciler")

RECONCILE_CHANNEL: Final = "reconcile"
ORDER_CHUNK: Final = 1000  # projected orders per query and per step of the orders audit


# --- reading the projection -----------------------------------------------------------------------------------------


def id_ranges(lo: int, hi: int) -> list[tuple[int, str, str]]:
    """``(digits, first, last)`` per digit count of the decimal texts of ``lo..hi``: for a text trade id,
    ``lo <= int(id) <= hi`` is ``length(id) = digits and first <= id <= last`` (canonical digits, no leading zeros),
    a range the fills' primary key index ``(account, trade_id)`` serves."""
    lo = max(lo, 0)
    if hi < lo:
        return []
    low, high = str(lo), str(hi)
    return [
        (n, low if n == len(low) else "1" + "0" * (n - 1), high if n == len(high) else "9" * n)
        for n in range(len(low), len(high) + 1)
    ]


class ProjectionReader:
    """Reads the ``proj_*`` tables for one account (worker threads; catch-up behind the given limiter)."""

    def __init__(self, store: ProjectionStore, event_log: EventLog, limiter: trio.CapacityLimiter) -> None:
        self.store = store
        self.log = event_log
        self.limiter = limiter

    async def catch_up(self) -> int:
        head = await trio.to_thread.run_sync(self.log.head)
        return await trio.to_thread.run_sync(partial(self.store.catch_up, self.log, until=head), limiter=self.limiter)

    def _select(self, name: str, *conditions: Any) -> list[Row]:
        table = self.store.tables[name]
        row_type = TABLES[name]
        order = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
        with self.store.engine.connect() as conn:
            return [row_type(*values) for values in conn.execute(select(table).where(*conditions).order_by(*order))]

    async def rows(self, name: str, account: str, **equal: Any) -> list[Any]:
        table = self.store.tables[name]
        conditions = [table.c.account == account, *(table.c[k] == v for k, v in equal.items())]
        return await trio.to_thread.run_sync(lambda: self._select(name, *conditions))

    def _fills_between(
        self,
        account: str,
        market: str,
        lo: int,
        hi: int,
        since: datetime | None,
        after: tuple[int, str] | None,
        limit: int | None,
    ) -> list[FillRow]:
        """Projected fills of ``market`` with ``lo <= trade id <= hi`` (numerically), in id order, after the key
        ``after`` (digits, trade id), at most ``limit``."""
        table = self.store.tables["fills"]
        out: list[FillRow] = []
        with self.store.engine.connect() as conn:
            for digits, first, last in id_ranges(lo, hi):
                if after is not None and digits < after[0]:
                    continue
                conditions = [
                    table.c.account == account,
                    table.c.trade_id >= first,
                    table.c.trade_id <= last,
                    func.length(table.c.trade_id) == digits,
                    table.c.market == market,
                ]
                if after is not None and digits == after[0]:
                    conditions.append(table.c.trade_id > after[1])
                if since is not None:
                    conditions.append(table.c.executed_at >= since)
                query = select(table).where(*conditions).order_by(table.c.trade_id)
                if limit is not None:
                    query = query.limit(limit - len(out))
                out += [FillRow(*values) for values in conn.execute(query)]
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def fills_between(
        self, account: str, market: str, lo: int, hi: int, *, executed_since: datetime | None = None
    ) -> list[FillRow]:
        """The projected fills of one page's id range (about a page of them)."""
        return await trio.to_thread.run_sync(
            partial(self._fills_between, account, market, lo, hi, executed_since, None, None)
        )

    async def fill_chunks(
        self, account: str, market: str, lo: int, hi: int, *, executed_since: datetime | None = None, chunk: int
    ) -> AsyncIterator[list[FillRow]]:
        """The projected fills of an id range of any size, ``chunk`` at a time (keyset pages)."""
        after: tuple[int, str] | None = None
        while True:
            rows = await trio.to_thread.run_sync(
                partial(self._fills_between, account, market, lo, hi, executed_since, after, chunk)
            )
            if rows:
                yield rows
            if len(rows) < chunk:
                return
            after = (len(rows[-1].trade_id), rows[-1].trade_id)

    async def open_orders(self, account: str) -> list[OrderRow]:
        return await self.rows("orders", account, status="open")

    async def orders_named(self, account: str, ids: Iterable[str]) -> list[OrderRow]:
        """The orders named in ``ids`` (the exchange's open orders), 400 per query."""
        table = self.store.tables["orders"]
        wanted = sorted(set(ids))
        rows: list[OrderRow] = []
        for start in range(0, len(wanted), 400):
            chunk = wanted[start : start + 400]
            rows += await trio.to_thread.run_sync(
                lambda chunk=chunk: self._select("orders", table.c.account == account, table.c.order_id.in_(chunk))
            )
        return rows

    def _order_chunk(self, account: str, changed_after_seq: int | None, after: str | None, limit: int) -> list[Any]:
        table = self.store.tables["orders"]
        conditions = [table.c.account == account]
        if changed_after_seq is not None:
            conditions.append(or_(table.c.status == "open", table.c.last_seq > changed_after_seq))
        if after is not None:
            conditions.append(table.c.order_id > after)
        query = select(table).where(*conditions).order_by(table.c.order_id).limit(limit)
        with self.store.engine.connect() as conn:
            return [OrderRow(*values) for values in conn.execute(query)]

    async def order_chunks(
        self, account: str, *, changed_after_seq: int | None, chunk: int
    ) -> AsyncIterator[list[OrderRow]]:
        """All orders of the account (``changed_after_seq`` None), else the open ones and those changed after that
        log seq: ``chunk`` at a time, in order id order (keyset pages on the primary key)."""
        after: str | None = None
        while True:
            rows = await trio.to_thread.run_sync(self._order_chunk, account, changed_after_seq, after, chunk)
            if rows:
                yield rows
            if len(rows) < chunk:
                return
            after = rows[-1].order_id

    async def discrepancies(self, account: str) -> list[DiscrepancyRow]:
        """The account's open discrepancies (resolved ones accumulate with the history; nothing here needs them)."""
        return await self.rows("discrepancies", account, status="open")


# --- one run --------------------------------------------------------------------------------------------------------


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
    max_status_checks: int = 200
    cache_s: float = 10.0
    grace_s: float = 5.0


class Reconciler:
    def __init__(
        self,
        backfiller: Backfiller,
        reader: ProjectionReader,
        *,
        options: ReconcileOptions | None = None,
        wall: Callable[[], datetime] | None = None,
    ) -> None:
        self.backfiller = backfiller
        self.reader = reader
        self.options = options or ReconcileOptions()
        self.wall = wall or backfiller.wall
        self.runs = 0

    @property
    def account(self) -> str:
        return self.backfiller.account

    def _entry(self, event: str, data: dict[str, Any]) -> Any:
        return te.tracker_entry(
            account=self.account,
            event=event,
            data=data,
            received_at=self.backfiller.wall(),
            uid=self.backfiller.uid(),
            channel=RECONCILE_CHANNEL,
        )

    async def run_once(self, *, full: bool = False) -> ReconcileResult:
        started = trio.current_time()
        bf = self.backfiller
        requests_before = bf.api.stats.total
        previous = await bf.sink.latest(self.account, RECONCILE_CHANNEL, te.RECONCILED) or {}
        prev_cursors = previous.get("user_transactions") if isinstance(previous, dict) else None
        prev_seq = int(previous.get("checkpoint", 0)) if isinstance(previous, dict) else 0
        if full or not isinstance(prev_cursors, dict):
            walk_from = dict.fromkeys(bf.markets, 0)
            prev_seq = 0
        else:
            walk_from = {m: int(prev_cursors.get(m, 0)) for m in bf.markets}
        # Entities whose "checked" matters: those of open reconciliation discrepancies (to resolve them).
        watch = frozenset(
            d.entity for d in await self.reader.discrepancies(self.account) if d.discrepancy_id.startswith(RECON_PREFIX)
        )
        audits: dict[str, FillAudit] = {}

        def since_for(report: BackfillReport, market: str) -> datetime | None:
            # Only fills from around the window on (ids grow with time; a day of margin for clock quirks).
            start_at = report.walk_start_at.get(market)
            return None if full or start_at is None else start_at - timedelta(days=1)

        async def fill_page(report: BackfillReport, market: str, fills: list[ExchangeFill], cursor: int) -> None:
            audit = audits.get(market)
            if audit is None:
                audit = audits[market] = FillAudit(market, report.walk_from.get(market, 0), watch)
            if cursor < audit.next_id and not fills:
                return
            if not full and market not in report.walk_start_at:
                audit.next_id = max(audit.next_id, cursor + 1)  # no window start known yet: not judged (as before)
                return
            await self.reader.catch_up()  # the page is in the log; the projection must have it too
            since = since_for(report, market)
            projected = await self.reader.fills_between(
                self.account, market, audit.next_id, cursor, executed_since=since
            )
            audit.page(projected, fills, cursor)

        report = await bf.run("reconcile", user_transactions_from=walk_from, check_orders=False, fill_pages=fill_page)
        checkpoint = await self.reader.catch_up()
        diff = Diff()
        errors = dict(report.errors)
        for market in bf.markets:
            if f"user_transactions:{market}" in report.errors:
                continue  # the window was not fully read: judge it next time
            if not full and market not in report.walk_start_at:
                continue  # the exchange returned nothing for the window: nothing to compare yet
            walk_from_id = report.walk_from.get(market, 0)
            audit = audits.get(market) or FillAudit(market, walk_from_id, watch)
            to_id = report.cursors.user_transactions.get(market, walk_from_id)
            # Projected fills past the exchange's last row, up to the furthest id walked before: not listed any more.
            chunks = self.reader.fill_chunks(
                self.account,
                market,
                audit.next_id,
                to_id,
                executed_since=since_for(report, market),
                chunk=bf.options.page_limit,
            )
            async for chunk in chunks:
                audit.tail(chunk, to_id)
            diff.extend(audit.diff())
        try:
            diff.extend(await self._orders(report, prev_seq, watch, full=full))
        except ApiError as exc:
            errors["orders"] = str(exc)
        try:
            diff.extend(await self._balances())
        except ApiError as exc:
            errors["account_balances"] = str(exc)
        existing = await self.reader.discrepancies(self.account)
        todo = plan(diff, existing)
        entries = [
            self._entry(te.DISCREPANCY, {"id": f.id, "kind": f.kind, "entity": f.entity, "detail": f.detail})
            for f in todo.open
        ]
        entries += [
            self._entry(
                te.DISCREPANCY_RESOLVED, {"id": d.discrepancy_id, "detail": f"checked again: clean ({d.detail})"}
            )
            for d in todo.resolve
        ]
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
        entries.append(self._entry(te.RECONCILED, summary))
        await bf.sink.append(entries)
        await self.reader.catch_up()
        unresolved = await self.reader.discrepancies(self.account)
        self.runs += 1
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

    async def _orders(self, report: BackfillReport, since_seq: int, watch: frozenset[str], *, full: bool) -> Diff:
        """Open orders against ``open_orders/`` and order states against ``order_status/`` for disagreements and
        orders closed since the previous run (all closed ones on a full run), newest first, within the budget: over
        the projected orders a chunk at a time (``OrderAudit``)."""
        bf = self.backfiller
        api = bf.api
        asked_at = self.wall()
        rows = await api.call("open_orders", api.client.open_orders)
        exchange_open = [o for r in rows if isinstance(r, dict) and (o := open_order_row(r)) is not None]
        changed_after = None if full else since_seq
        audit = OrderAudit(
            exchange_open,
            asked_at=asked_at,
            markets=bf.markets,
            budget=self.options.max_status_checks,
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
        return audit.statuses(await ask_order_status(bf, report, wanted))

    async def _balances(self) -> Diff:
        api = self.backfiller.api
        rows = await api.call("account_balances", api.client.account_balances)
        balances = []
        for r in rows:
            if not isinstance(r, dict) or not r.get("currency"):
                continue
            try:
                balances.append(
                    Balance(
                        str(r["currency"]),
                        parse_decimal(r.get("total")),
                        parse_decimal(r.get("available")),
                        parse_decimal(r.get("reserved")),
                    )
                )
            except BadAmount:
                continue
        return diff_balances(balances)


async def run_periodic(
    reconciler: Reconciler,
    *,
    interval_s: float,
    stop: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reconcile every ``interval_s`` (first run after one interval: start-up already backfills) until ``stop``."""
    task_status.started()
    while True:
        with trio.move_on_after(interval_s):
            await stop.wait()
        if stop.is_set():
            return
        try:
            await reconciler.run_once()
        except ApiError as exc:
            log.warning("reconciliation failed: %s (next try in %g s)", exc, interval_s)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_discrepancies(rows: Sequence[DiscrepancyRow], fmt: str = "table") -> str:
    """Pure formatting of unresolved discrepancies (``tracker reconcile`` prints it)."""
    import json

    if fmt == "json":
        return json.dumps(
            [
                {"id": d.discrepancy_id, "kind": d.kind, "entity": d.entity, "detail": d.detail, "status": d.status,
                 "opened_seq": d.opened_seq}
                for d in rows
            ],
            indent=2,
        )  # fmt: skip
    if not rows:
        return "no unresolved discrepancies"
    header = ("kind", "entity", "detail")
    table = [header, *((d.kind, d.entity, d.detail) for d in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in table]
    return "\n".join([*lines, f"{len(rows)} unresolved discrepanc{'y' if len(rows) == 1 else 'ies'}"])


# --- wiring into ``run_tracker`` ------------------------------------------------------------------------------------


def recovery_task(
    *,
    started_at: datetime | None = None,
    client_factory: Callable[[Any], BitstampClient] | None = None,
    reconcile_interval_s: float | None = None,
    backfill_options: BackfillOptions | None = None,
    limiter: RateLimiter | None = None,
) -> Callable[..., Any]:
    """An ``extra_tasks`` starter for ``run_tracker``: the backfill watcher and the periodic reconciler.

    Build it just before ``run_tracker`` (``started_at`` defaults to now: the log entries of this run are the ones
    received from then on, and the start-up window runs from the previous run's last entry). The starter makes its own
    ``BitstampClient`` from the settings (or ``client_factory(settings)``), shares the service's ``db_limiter`` for
    appends, and exposes the ``Backfiller`` and ``Reconciler`` as ``services.extra["backfiller"|"reconciler"]``.
    ``reconcile_interval_s`` defaults to ``settings.reconcile_interval_s`` (0 or less: no periodic runs).
    """
    since = started_at or utc_now()

    async def run_recovery(services: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        settings = services.settings
        if client_factory is not None:
            client = client_factory(settings)
        else:
            key, secret = settings.require_credentials()
            client = BitstampClient(settings.api_url, key, secret)
        async with client:
            api = PoliteApi(client, limiter)
            markets = tuple(settings.markets) if settings.markets else await discover_markets(client)
            names = await market_names(api)
            account = str(services.account)
            # Projection catch-up behind the writer's limiter: one SQLite writer at a time, no busy-waiting.
            reader = ProjectionReader(ProjectionStore(services.log.engine), services.log, services.db_limiter)

            async def projected_open_orders() -> list[OrderRow]:
                await reader.catch_up()
                return await reader.open_orders(account)

            backfiller = Backfiller(
                api,
                LogSink(services.log, services.db_limiter),
                account=account,
                markets=markets,
                names=names,
                options=backfill_options,
                projected_open_orders=projected_open_orders,
            )
            reconciler = Reconciler(backfiller, reader)
            services.extra["backfiller"] = backfiller
            services.extra["reconciler"] = reconciler
            interval = settings.reconcile_interval_s if reconcile_interval_s is None else reconcile_interval_s
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        watch_and_backfill,
                        backfiller,
                        stop=services.stop,
                        committed=lambda: services.writer_stats.committed,
                        # A standby's run starts when it takes the lease: what the old holder logged until then is
                        # the previous run's, so the start-up window starts at the holder's last entry.
                        started_at=services.extra.get("lease_acquired_at") or since,
                    )
                )
                if interval and interval > 0:
                    await nursery.start(partial(run_periodic, reconciler, interval_s=interval, stop=services.stop))
                task_status.started()

    return run_recovery


async def reconcile_once(
    settings: Any,
    engine: Any,
    *,
    full: bool = True,
    options: ReconcileOptions | None = None,
    client: BitstampClient | None = None,
    wall: Callable[[], datetime] | None = None,
) -> ReconcileResult:
    """``tracker reconcile``: one backfill and reconciliation run outside the service (projects the log itself)."""
    event_log = EventLog(engine)
    own = client is None
    if client is None:
        key, secret = settings.require_credentials()
        client = BitstampClient(settings.api_url, key, secret)
    try:
        api = PoliteApi(client)
        token = await api.call("websockets_token", client.websockets_token)
        account = token.user_id
        markets = tuple(settings.markets) if settings.markets else await discover_markets(client)
        names = await market_names(api)
        one_writer = trio.CapacityLimiter(1)
        reader = ProjectionReader(ProjectionStore(engine), event_log, one_writer)
        backfiller = Backfiller(
            api,
            LogSink(event_log, one_writer),
            account=account,
            markets=markets,
            names=names,
        )
        return await Reconciler(backfiller, reader, options=options, wall=wall).run_once(full=full)
    finally:
        if own:
            await client.aclose()
