"""Every query behind ``tracker audit``: aggregated in SQL, never all rows in Python.

Each figure of the report comes from one Core statement here and carries the SQL that made it (``Query``), compiled
for the database it ran on with its parameters written in, so a reader can paste it into ``sqlite3`` or ``psql`` and
get the same number. Money stays exact: the view columns are typed (``Money``: ``Decimal``), and sums are exact on
both backends (PostgreSQL ``numeric``; SQLite through tracker's exact ``sum``, see docs/sql.md "Exact money"). In a
bare ``sqlite3`` shell, write ``decimal_sum`` for ``sum`` to get the same digits.

The period is whole UTC days (``Period``): times compare against midnight bounds, days (``v_fees_daily.day``) against
the day text, so the daily table, the fill count and the lists agree on what is inside.

Optional views are detected with the inspector, never assumed: ``v_ledger``, ``v_balances`` and
``v_balance_checks`` (the ledger, added by a later migration) and extra columns of ``v_discrepancies`` (``note``,
``acknowledged_at``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from datetime import time as day_start
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    MetaData,
    Select,
    Table,
    and_,
    exists,
    func,
    inspect,
    literal_column,
    or_,
    select,
    type_coerce,
)

from tracker.audit.model import (
    LIST_LIMIT,
    Activity,
    Balances,
    Discrepancies,
    Integrity,
    LogSpan,
    Period,
    Query,
    TrackerEntry,
)
from tracker.audit.model import (
    Table as ReportTable,
)
from tracker.domain import tracker_events as te
from tracker.domain.chain import ChainWalker
from tracker.domain.self_trade_hint import describe
from tracker.store.chain_walk import Walked, start_walk
from tracker.store.discrepancy_queries import missed_self_trades
from tracker.store.integrity import check_integrity
from tracker.store.projection_schema import VIEWS, Money
from tracker.store.schema import UtcDateTime, event_log

LEDGER_VIEWS: Final = ("v_ledger", "v_balances", "v_balance_checks")
TRACKER_EVENTS: Final = tuple(sorted(te.TRACKER_EVENTS))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, day_start(), tzinfo=UTC)


def _time_range(column: Any, period: Period) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if period.since is not None:
        out.append(column >= _midnight(period.since))
    if period.until is not None:
        out.append(column < _midnight(period.until))
    return out


def _day_range(column: Any, period: Period) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if period.since is not None:
        out.append(column >= period.since.isoformat())
    if period.until is not None:
        out.append(column < period.until.isoformat())
    return out


def _account(column: Any, period: Period) -> list[ColumnElement[bool]]:
    return [] if period.account is None else [column == period.account]


def _scope(view: Any, period: Period) -> list[ColumnElement[bool]]:
    """A view's rows of the period's Bitstamp account and trade account (every view carries both columns)."""
    where = _account(view.c.account, period)
    if period.trade_account is not None:
        where.append(view.c.trade_account_id == period.trade_account)
    return where


def query_of(statement: Select[Any], conn: Connection) -> Query:
    """The statement as SQL for this database, parameters written in where they can be; else listed beside it."""
    try:
        sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
        return Query(sql)
    except Exception:
        compiled = statement.compile(conn)
        return Query(str(compiled), tuple((k, str(v)) for k, v in compiled.params.items()))


def _table(conn: Connection, statement: Select[Any], *, limit: int | None = None) -> ReportTable:
    """Rows of ``statement`` (at most ``limit``; then ``total`` is counted by a query of its own)."""
    query = query_of(statement, conn)
    shown = statement.limit(limit) if limit is not None else statement
    result = conn.execute(shown)
    columns = tuple(result.keys())
    rows = tuple(tuple(row) for row in result)
    total = -1
    if limit is not None and len(rows) >= limit:
        total = int(conn.execute(select(func.count()).select_from(statement.order_by(None).subquery())).scalar_one())
    return ReportTable(columns, rows, query, total)


def _sum(column: Any, name: str) -> Any:
    """An exact sum of a money column, read back as ``Decimal`` (``coalesce``: 0 over no rows)."""
    return type_coerce(func.coalesce(func.sum(column), 0), Money()).label(name)


# -- the log ---------------------------------------------------------------------------------------------------------


def log_span(engine: Engine, period: Period) -> LogSpan:
    t = event_log
    where = [*_time_range(t.c.received_at, period), *_account(t.c.account, period)]
    with engine.connect() as conn:
        first, last, count, first_at, last_at = conn.execute(
            select(func.min(t.c.seq), func.max(t.c.seq), func.count(), func.min(t.c.received_at),
                   func.max(t.c.received_at)).where(*where)
        ).one()  # fmt: skip
        by_source = _table(
            conn,
            select(t.c.source, func.count().label("events")).where(*where).group_by(t.c.source).order_by(t.c.source),
        )
    return LogSpan(first, last, int(count), _aware(first_at), _aware(last_at), by_source)


def _aware(value: Any) -> datetime | None:
    """``min``/``max`` of a time column lose the column's type on SQLite (text comes back): read it as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def integrity(engine: Engine) -> Integrity:
    """``tracker verify``'s two checks: the database's own, and the chain from seq 1 to the head as it is now."""
    with start_integrity(engine) as pending:
        return pending.result()


class PendingIntegrity:
    """``integrity`` under way (``start_integrity``): the chain walk in worker processes on a big SQLite log
    (``chain_walk``) and the database's check on a thread (it runs in SQLite's or PostgreSQL's own code, the GIL
    released), both while the caller runs the report's other queries. ``result()`` waits for both; ``close()`` (the
    ``with`` block's end) stops the workers if the caller failed first."""

    def __init__(self, engine: Engine) -> None:
        self.started = time.perf_counter()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-integrity")
        try:
            self.checking = self.pool.submit(check_integrity, engine)
            self.walk = start_walk(engine)
        except BaseException:
            self.pool.shutdown(wait=False, cancel_futures=True)
            raise

    def __enter__(self) -> PendingIntegrity:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.walk.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def result(self) -> Integrity:
        walker, broken = _chain_verdict(self.walk.result())
        report = self.checking.result()
        return Integrity(
            method=report.method,
            problems=report.problems,
            note=report.note,
            chain_rows=walker.count,
            head_seq=walker.head,
            head_hash=walker.head_hash,
            broken=broken,
            seconds=time.perf_counter() - self.started,
        )


def start_integrity(engine: Engine) -> PendingIntegrity:
    return PendingIntegrity(engine)


def _chain_verdict(walked: Walked) -> tuple[ChainWalker, str | None]:
    """The walk's result as the report says it: seq 1 to the head; a damaged page ends it with its message."""
    walker, broken = walked.walker, None
    if walked.unreadable is not None:
        broken = f"seq {walker.head + 1}: the row cannot be read ({walked.unreadable})"
    elif (found := walker.finish()) is not None:
        broken = f"seq {found.seq}: {found.reason}"
    return walker, broken


def tracker_entries(engine: Engine, period: Period) -> tuple[tuple[TrackerEntry, ...], Query]:
    """The tracker-made entries up to the period's end, from the start of the log: the coverage fold needs the
    lifecycle before the period to know what was live when it began (these are few: a handful per reconnect)."""
    t = event_log
    where = [t.c.source == "tracker", *_account(t.c.account, period)]
    if period.until is not None:
        where.append(t.c.received_at < _midnight(period.until))
    statement = (
        select(t.c.seq, t.c.event, t.c.connection_id, t.c.received_at, t.c.payload).where(*where).order_by(t.c.seq)
    )
    with engine.connect() as conn:
        query = query_of(statement, conn)
        entries = tuple(
            TrackerEntry(seq, event, connection_id or "", received_at, te.entry_data(payload))
            for seq, event, connection_id, received_at, payload in conn.execute(statement)
        )
    return entries, query


def merged_logs(engine: Engine, period: Period) -> tuple[TrackerEntry, ...]:
    """The ``log_merged`` entries of the period's account (of every account without one), at any time: a merge
    renumbered rows of any period, so the integrity section lists them all."""
    t = event_log
    statement = (
        select(t.c.seq, t.c.event, t.c.connection_id, t.c.received_at, t.c.payload)
        .where(t.c.source == "tracker", t.c.event == te.LOG_MERGED, *_account(t.c.account, period))
        .order_by(t.c.seq)
    )
    with engine.connect() as conn:
        return tuple(
            TrackerEntry(seq, event, connection_id or "", received_at, te.entry_data(payload))
            for seq, event, connection_id, received_at, payload in conn.execute(statement)
        )


# -- activity --------------------------------------------------------------------------------------------------------


def activity(engine: Engine, period: Period) -> Activity:
    fees, fills, orders = VIEWS["v_fees_daily"], VIEWS["v_fills"], VIEWS["v_orders"]
    selfs, settlements, liqs, positions = (
        VIEWS["v_self_trades"], VIEWS["v_settlements"], VIEWS["v_liquidations"], VIEWS["v_positions"],
    )  # fmt: skip
    fee_where = [*_day_range(fees.c.day, period), *_scope(fees, period)]
    fill_where = [*_time_range(fills.c.executed_at, period), *_scope(fills, period)]
    with engine.connect() as conn:
        fees_daily = _table(
            conn,
            select(
                fees.c.day,
                fees.c.market,
                fees.c.fills,
                fees.c.volume,
                fees.c.fees,
                fees.c.base_volume,
                fees.c.trade_account_id,
            )
            .where(*fee_where)
            .order_by(fees.c.day, fees.c.market, fees.c.trade_account_id),
            limit=LIST_LIMIT * 4,
        )
        fees_total = _table(
            conn,
            select(fees.c.market, func.sum(fees.c.fills).label("fills"), _sum(fees.c.volume, "volume"),
                   _sum(fees.c.fees, "fees"), _sum(fees.c.base_volume, "base_volume"))
            .where(*fee_where).group_by(fees.c.market).order_by(fees.c.market),
        )  # fmt: skip
        fill_counts = _table(
            conn,
            select(fills.c.market, fills.c.side, func.count().label("fills"), _sum(fills.c.fee, "fees"))
            .where(*fill_where).group_by(fills.c.market, fills.c.side).order_by(fills.c.market, fills.c.side),
        )  # fmt: skip
        order_counts = _table(
            conn,
            select(orders.c.status, orders.c.market, func.count().label("orders"))
            .where(*_time_range(orders.c.created_at, period), *_scope(orders, period))
            .group_by(orders.c.status, orders.c.market).order_by(orders.c.status, orders.c.market),
        )  # fmt: skip
        self_trades = _table(
            conn,
            select(selfs).where(*_time_range(selfs.c.occurred_at, period), *_scope(selfs, period))
            .order_by(selfs.c.occurred_at),
            limit=LIST_LIMIT,
        )  # fmt: skip
        settled = _table(
            conn,
            select(settlements.c.kind, settlements.c.ccy, func.count().label("count"),
                   _sum(settlements.c.amount, "amount"), _sum(settlements.c.funding_component, "funding"))
            .where(*_time_range(settlements.c.occurred_at, period), *_scope(settlements, period))
            .group_by(settlements.c.kind, settlements.c.ccy).order_by(settlements.c.kind, settlements.c.ccy),
        )  # fmt: skip
        liq_where = [*_time_range(liqs.c.occurred_at, period), *_scope(liqs, period)]
        liq_counts = _table(
            conn,
            select(liqs.c.event, func.count().label("count")).where(*liq_where)
            .group_by(liqs.c.event).order_by(liqs.c.event),
        )  # fmt: skip
        liq_list = _table(conn, select(liqs).where(*liq_where).order_by(liqs.c.occurred_at), limit=LIST_LIMIT)
        position_where = [*_scope(positions, period)]
        if period.since is not None or period.until is not None:
            in_range = select(fills.c.trade_id).where(
                fills.c.account == positions.c.account,
                fills.c.position_id == positions.c.position_id,
                *_time_range(fills.c.executed_at, period),
            )
            position_where.append(exists(in_range))
        position_rows = _table(
            conn,
            select(positions).where(*position_where).order_by(positions.c.market, positions.c.position_id),
            limit=LIST_LIMIT,
        )
    return Activity(
        fees_daily, fees_total, fill_counts, order_counts, self_trades, settled, liq_counts, liq_list, position_rows
    )


# -- balances (the ledger views, when a migration has added them) -----------------------------------------------------


def _reflect(conn: Connection, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


def balances(engine: Engine, period: Period) -> Balances:
    """The computed balance per (sub-account, currency) at the end of each UTC day (the ``balance_after`` of the day's
    last ledger leg, v_ledger), and every snapshot check (v_balance_checks)."""
    with engine.connect() as conn:
        present = set(inspect(conn).get_view_names())
        missing = tuple(name for name in LEDGER_VIEWS if name not in present)
        if missing:
            return Balances(missing)
        legs, checks_view = _reflect(conn, "v_ledger"), _reflect(conn, "v_balance_checks")
        as_of = type_coerce(legs.c.occurred_at, UtcDateTime())
        if conn.dialect.name == "postgresql":
            day = func.to_char(func.timezone("UTC", legs.c.occurred_at), "YYYY-MM-DD")
        else:
            day = func.substr(legs.c.occurred_at, 1, 10)
        ranked = (
            select(
                legs.c.trade_account_id,
                legs.c.currency,
                day.label("day"),
                type_coerce(legs.c.balance_after, Money()).label("balance"),
                as_of.label("as_of"),
                func.row_number()
                .over(
                    partition_by=(legs.c.trade_account_id, legs.c.currency, day),
                    order_by=(legs.c.seq.desc(), legs.c.leg.desc()),
                )
                .label("n"),
            )
            .where(legs.c.currency.is_not(None), *_time_range(legs.c.occurred_at, period))
            .where(*_scope(legs, period))
            .subquery()
        )
        series = _table(
            conn,
            select(ranked.c.trade_account_id, ranked.c.currency, ranked.c.day, ranked.c.balance, ranked.c.as_of)
            .where(ranked.c.n == 1)
            .order_by(ranked.c.trade_account_id, ranked.c.currency, ranked.c.day),
            limit=LIST_LIMIT * 4,
        )
        books = _reflect(conn, "v_balances")
        current = _table(
            conn,
            select(
                books.c.trade_account_id,
                books.c.currency,
                type_coerce(books.c.balance, Money()).label("balance"),
                type_coerce(books.c.as_of, UtcDateTime()).label("as_of"),
            )
            .where(*_scope(books, period))
            .order_by(books.c.trade_account_id, books.c.currency),
            limit=LIST_LIMIT,
        )
        c = checks_view.c
        checks = _table(
            conn,
            select(
                c.trade_account_id,
                c.currency,
                type_coerce(c.snapshot_at, UtcDateTime()).label("snapshot_at"),
                type_coerce(c.exchange_total, Money()).label("exchange_total"),
                type_coerce(c.computed_total, Money()).label("computed_total"),
                type_coerce(c.difference, Money()).label("difference"),
                c.status,
            )
            .where(*_time_range(c.snapshot_at, period), *_scope(checks_view, period))
            .order_by(c.snapshot_at, c.trade_account_id, c.currency),
            limit=LIST_LIMIT,
        )
    return Balances((), series, checks, current)


# -- discrepancies ---------------------------------------------------------------------------------------------------


def discrepancies(engine: Engine, period: Period, span: LogSpan) -> Discrepancies:
    """Whatever statuses ``v_discrepancies`` has (open, acknowledged, resolved, ...), with every column it has:
    those opened in the period's part of the log, and those opened before it and not resolved by its start."""
    with engine.connect() as conn:
        view = _reflect(conn, "v_discrepancies")
        where: list[ColumnElement[bool]] = [*_scope(view, period)]
        if span.last_seq is None:
            where.append(literal_column("1") == 0)  # nothing of the log is in the period
        elif period.since is not None or period.until is not None:
            first = span.first_seq or 0
            where.append(
                or_(
                    and_(view.c.opened_seq >= first, view.c.opened_seq <= span.last_seq),
                    and_(
                        view.c.opened_seq < first,
                        or_(view.c.resolved_seq.is_(None), view.c.resolved_seq >= first),
                    ),
                )
            )
        by_status = _table(
            conn,
            select(view.c.status, func.count().label("count")).where(*where)
            .group_by(view.c.status).order_by(view.c.status),
        )  # fmt: skip
        rows = _table(conn, select(view).where(*where).order_by(view.c.status, view.c.opened_seq), limit=LIST_LIMIT)
    listed = [dict(zip(rows.columns, row, strict=True)) for row in rows.rows]
    found = missed_self_trades(engine, listed)
    hints = tuple((str(row["id"]), describe(found[str(row["id"])])) for row in listed if str(row["id"]) in found)
    return Discrepancies(by_status, rows, hints)


__all__: Sequence[str] = (
    "activity",
    "balances",
    "discrepancies",
    "integrity",
    "log_span",
    "query_of",
    "tracker_entries",
)
