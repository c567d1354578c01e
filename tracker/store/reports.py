"""Read the public views for ``tracker report``: one Core query per report, filtered by account, market and time.

Times: ``since`` is inclusive and ``until`` exclusive (both aware UTC). The fee report filters its ``day`` column
(``YYYY-MM-DD`` text) by the days the range touches; positions have no time of their own and are kept when one of
their fills was executed in the range. ``account`` is the Bitstamp account, ``trade_account_id`` the trade account
(every view carries it; NULL where unknown, which no filter matches).

Each report's order is total (ties broken by the view's key, NULLs first), so a report reads the same, row for
row, on either backend (they put NULLs at opposite ends unless told).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, Engine, Select, exists, select, union

from tracker.store.projection_schema import VIEWS
from tracker.store.schema import event_log

ReportKind = Literal["fees", "fills", "orders", "positions"]
REPORTS: Final[tuple[ReportKind, ...]] = ("fees", "fills", "orders", "positions")


@dataclass(frozen=True, slots=True)
class ReportFilter:
    account: str | None = None  # the Bitstamp account (user id; ``tracker report --user``)
    market: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    trade_account_id: str | None = None  # ``0`` the main account, else a sub-account (``tracker report --account``)


@dataclass(frozen=True, slots=True)
class Report:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _query(kind: ReportKind, where: ReportFilter) -> Select[Any]:
    fills = VIEWS["v_fills"]
    conditions: list[ColumnElement[bool]] = []
    if kind == "fees":
        view = VIEWS["v_fees_daily"]
        if where.since is not None:
            conditions.append(view.c.day >= _day(where.since))
        if where.until is not None:  # the last day that has a moment before `until`
            conditions.append(view.c.day <= _day(where.until - timedelta(microseconds=1)))
        order = [view.c.day, view.c.market, view.c.account, view.c.trade_account_id.nulls_first()]
    elif kind == "fills":
        view = fills
        conditions += _time_range(view.c.executed_at, where)
        order = [view.c.executed_at.nulls_first(), view.c.trade_id, view.c.account]
    elif kind == "orders":
        view = VIEWS["v_orders"]
        conditions += _time_range(view.c.created_at, where)
        order = [view.c.created_at.nulls_first(), view.c.order_id, view.c.account]
    else:
        view = VIEWS["v_positions"]
        if where.since is not None or where.until is not None:
            in_range = select(fills.c.trade_id).where(
                fills.c.account == view.c.account,
                fills.c.position_id == view.c.position_id,
                *_time_range(fills.c.executed_at, where),
            )
            conditions.append(exists(in_range))
        order = [view.c.account, view.c.position_id]
    if where.account is not None:
        conditions.append(view.c.account == where.account)
    if where.trade_account_id is not None:  # a row whose trade account is unknown (NULL) matches none
        conditions.append(view.c.trade_account_id == where.trade_account_id)
    if where.market is not None:
        conditions.append(view.c.market == where.market)
    return select(view).where(*conditions).order_by(*order)


def _time_range(column: Any, where: ReportFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.since is not None:
        conditions.append(column >= where.since)
    if where.until is not None:
        conditions.append(column < where.until)
    return conditions


def read_report(engine: Engine, kind: ReportKind, where: ReportFilter) -> Report:
    query = _query(kind, where)
    with engine.connect() as conn:
        result = conn.execute(query)
        columns = tuple(result.keys())
        return Report(columns, [tuple(row) for row in result])


def known_markets(engine: Engine) -> list[str]:
    """Every market symbol the reported views mention, sorted: what ``--market`` can usefully name."""
    names = ("v_orders", "v_fills", "v_fees_daily", "v_positions")
    query = union(*(select(VIEWS[name].c.market.label("market")).distinct() for name in names))
    with engine.connect() as conn:
        return sorted(market for (market,) in conn.execute(query) if market)


def bitstamp_accounts(engine: Engine) -> list[str]:
    """Every Bitstamp account (user id) the log or the projected views name, sorted."""
    query = union(
        select(event_log.c.account).distinct(),
        *(select(VIEWS[name].c.account).distinct() for name in ("v_orders", "v_fills", "v_positions")),
    )
    with engine.connect() as conn:
        return sorted(conn.execute(query).scalars())
