"""SQL for the ledger exports, ``tracker import-statement`` and the ledger reports: reads of ``v_ledger``,
``v_balances``, ``v_transfers`` and the older views, and the import's append.

The ledger views (``v_ledger``, ``v_balances``, ``v_balance_checks``, ``v_transfers``) are described here by the
ledger contract's columns (docs/sql.md); ``ledger_view`` prefers the projection schema's own description once it has
one, so the two cannot drift apart silently. Times: ``since`` inclusive, ``until`` exclusive (aware UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Column, ColumnElement, Engine, MetaData, Select, Table, Text, inspect, or_, select

from tracker.errors import StoreError, TrackerError
from tracker.export.ledger import LedgerLeg
from tracker.export.statement_match import DIFFERS, MISSING, ImportPlan
from tracker.store.event_log import AppendResult, EventLog
from tracker.store.projection_schema import VIEWS, Money
from tracker.store.projections import ProjectionStore
from tracker.store.schema import BigInt, UtcDateTime, event_log

ledger_metadata = MetaData()  # descriptions of views (migration 0006 creates them), never created from here


def _text(*names: str) -> list[Column[Any]]:
    return [Column(name, Text) for name in names]


LEDGER_VIEWS: Final[dict[str, Table]] = {
    "v_ledger": Table(
        "v_ledger", ledger_metadata,
        *_text("account", "trade_account_id", "entry_id", "leg"), Column("occurred_at", UtcDateTime()),
        Column("type", Text), Column("type_code", BigInt), *_text("subtype", "currency"), Column("amount", Money()),
        Column("fee", Money()), Column("market", Text), Column("rate", Money()),
        *_text("order_id", "trade_id", "txid", "source"), Column("seq", BigInt), Column("balance_after", Money()),
    ),
    "v_balances": Table(
        "v_balances", ledger_metadata,
        *_text("account", "trade_account_id", "currency"), Column("balance", Money()), Column("as_of", UtcDateTime()),
        Column("last_entry_id", Text), Column("entries", BigInt), Column("last_seq", BigInt),
    ),
    "v_balance_checks": Table(
        "v_balance_checks", ledger_metadata,
        *_text("account", "trade_account_id", "currency"), Column("snapshot_at", UtcDateTime()),
        Column("snapshot_seq", BigInt), Column("exchange_total", Money()), Column("exchange_available", Money()),
        Column("exchange_reserved", Money()), Column("computed_total", Money()), Column("difference", Money()),
        *_text("status", "first_entry_id"),
    ),
    "v_transfers": Table(
        "v_transfers", ledger_metadata,
        *_text("account", "trade_account_id", "direction", "currency"), Column("amount", Money()),
        Column("fee", Money()), Column("occurred_at", UtcDateTime()), Column("entry_id", Text),
        Column("entry_seq", BigInt), Column("request_id", Text), Column("request_status", BigInt),
        Column("request_status_name", Text), Column("request_seq", BigInt), *_text("txid", "address", "network"),
        Column("crypto_seq", BigInt), Column("matched_by", Text),
    ),
}  # fmt: skip


def ledger_view(name: str) -> Table:
    """The typed description of view ``name``: the projection schema's when it has one, else the contract's."""
    known = VIEWS.get(name)
    return known if known is not None else LEDGER_VIEWS[name]


def require_views(engine: Engine, *names: str) -> None:
    """A ``StoreError`` that says what to do, instead of the driver's "no such table", when a view is missing."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        missing = [name for name in names if not inspector.has_table(name)]
    if missing:
        raise StoreError(
            f"this database has no {', '.join(missing)}: run `tracker db upgrade` (the ledger views come with the"
            " ledger migration)"
        )


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    account: str | None = None  # the Bitstamp account label (the log's `account`)
    trade_account_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _range(column: Any, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column < until)
    return out


def read_legs(engine: Engine, where: LedgerFilter, *, include_statement: bool = True) -> list[LedgerLeg]:
    """``v_ledger`` rows as ``LedgerLeg``s in log order. ``include_statement=False`` leaves out legs a statement
    contributed (``source = 'statement'``): what a statement is matched against."""
    require_views(engine, "v_ledger")
    view = ledger_view("v_ledger")
    conditions = _range(view.c.occurred_at, where.since, where.until)
    if where.account is not None:
        conditions.append(view.c.account == where.account)
    if where.trade_account_id is not None:
        conditions.append(view.c.trade_account_id == where.trade_account_id)
    if not include_statement:
        conditions.append(or_(view.c.source.is_(None), view.c.source != "statement"))
    names = [column.name for column in LEDGER_VIEWS["v_ledger"].columns]
    query = select(*(view.c[name] for name in names)).where(*conditions)
    # v_ledger has no leg number: an entry's amount legs come by currency, the same order on both backends.
    query = query.order_by(view.c.seq, view.c.trade_account_id, view.c.entry_id, view.c.leg, view.c.currency)
    with engine.connect() as conn:
        return [_leg(dict(zip(names, row, strict=True))) for row in conn.execute(query)]


def _leg(values: dict[str, Any]) -> LedgerLeg:
    """A ``v_ledger`` row as a ``LedgerLeg``: ``type_code`` is text in the view (``"2"``, or an odd code the wire
    sent as text), a number in the leg (``None`` for a code that is no number)."""
    code = values["type_code"]
    if isinstance(code, str):
        values["type_code"] = int(code) if code.strip().lstrip("-").isdigit() else None
    return LedgerLeg(**values)


def log_accounts(engine: Engine) -> list[str]:
    """Every account label the log holds, sorted."""
    with engine.connect() as conn:
        return sorted(conn.execute(select(event_log.c.account).distinct()).scalars())


def statement_discrepancies(engine: Engine, account: str) -> dict[str, str]:
    """Id → status of every statement discrepancy (``statement_row_missing`` / ``_differs``) of ``account``."""
    view = VIEWS["v_discrepancies"]
    query = select(view.c.id, view.c.status).where(view.c.account == account, view.c.kind.in_((MISSING, DIFFERS)))
    with engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(query)}


def append_import(engine: Engine, plan: ImportPlan) -> AppendResult:
    """Append the statement's rows, then its discrepancies and resolutions (one append, in that order: a
    discrepancy's ``opened_seq`` comes after its row), and bring the projection up to date so the views show them."""
    log = EventLog(engine)
    result = log.append([*plan.facts, *plan.discrepancies, *plan.resolutions])
    ProjectionStore(engine).catch_up(log)
    return result


# --- reports -------------------------------------------------------------------------------------------------------

LEDGER_REPORTS: Final = ("ledger", "balances", "transfers", "settlements", "self-trades", "liquidations",
                         "discrepancies")  # fmt: skip


class ReportUnavailable(TrackerError):
    """A filter the report's view cannot apply (exit 2, with the fix)."""


@dataclass(frozen=True, slots=True)
class LedgerReport:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _run(engine: Engine, query: Select[Any]) -> LedgerReport:
    with engine.connect() as conn:
        result = conn.execute(query)
        return LedgerReport(tuple(result.keys()), [tuple(row) for row in result])


# Each report's order is total, so that it reads the same on either backend: in the ledger, a log entry's amounts
# before its fee, so that each currency's ``balance_after`` runs down the page in the fold's order; then each view's
# key; NULLs first on both backends (they put them at opposite ends unless told).
_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "ledger": ("seq", "entry_id", "leg", "currency"),
    "transfers": ("occurred_at", "entry_seq", "request_seq", "crypto_seq", "account", "currency", "direction"),
    "settlements": ("occurred_at", "account", "position_id", "transaction_id", "ccy", "kind"),
    "self-trades": ("occurred_at", "account", "market", "buy_order_id", "sell_order_id"),
    "liquidations": ("occurred_at", "account", "position_id", "event", "alert_type"),
}
_NOT_NULL: Final = frozenset({"seq", "entry_id", "leg", "account"})


def read_ledger_report(engine: Engine, kind: str, where: LedgerFilter) -> LedgerReport:
    """One of ``LEDGER_REPORTS``, filtered. ``where.trade_account_id`` filters the trade account (both sides of a
    self trade); a view without one, and a time filter on a view without time, is ``ReportUnavailable``."""
    if kind == "balances":
        return _balances(engine, where)
    if kind == "discrepancies":
        if where.since is not None or where.until is not None:
            raise ReportUnavailable(
                "report discrepancies: v_discrepancies has no time: drop --since/--until"
                " (tracker discrepancies --status filters it)"
            )
        view = VIEWS["v_discrepancies"]
        query = select(view).order_by(view.c.opened_seq, view.c.account, view.c.id)
        if where.account is not None:
            query = query.where(view.c.account == where.account)
        if where.trade_account_id is not None:  # the ledger's discrepancies name their trade account
            query = query.where(view.c.trade_account_id == where.trade_account_id)
        return _run(engine, query)
    names = {"ledger": "v_ledger", "transfers": "v_transfers", "settlements": "v_settlements",
             "self-trades": "v_self_trades", "liquidations": "v_liquidations"}  # fmt: skip
    if kind not in names:
        raise ValueError(f"unknown ledger report {kind!r}")
    require_views(engine, names[kind])
    view = ledger_view(names[kind])
    conditions = _range(view.c.occurred_at, where.since, where.until)
    if where.account is not None:
        conditions.append(view.c.account == where.account)
    if where.trade_account_id is not None:
        tai = where.trade_account_id
        if "buyers_trade_account_id" in view.c:  # a self trade of the account on either side
            conditions.append(or_(view.c.buyers_trade_account_id == tai, view.c.sellers_trade_account_id == tai))
        elif "trade_account_id" in view.c:
            conditions.append(view.c.trade_account_id == tai)
        else:
            raise ReportUnavailable(f"report {kind}: {names[kind]} has no trade_account_id column, so --account"
                                    " cannot filter it: drop --account")  # fmt: skip
    order = [view.c[name] if name in _NOT_NULL else view.c[name].nulls_first() for name in _ORDER[kind]]
    return _run(engine, select(view).where(*conditions).order_by(*order))


def _balances(engine: Engine, where: LedgerFilter) -> LedgerReport:
    """``v_balances``; with ``until``, the balances at that moment: the sum of the legs before it (exact, in
    Python)."""
    if where.since is not None:
        raise ReportUnavailable("report balances: a balance is as of a moment: use --until (without --since)")
    require_views(engine, "v_balances")
    view = ledger_view("v_balances")
    if where.until is None:
        conditions: list[ColumnElement[bool]] = []
        if where.account is not None:
            conditions.append(view.c.account == where.account)
        if where.trade_account_id is not None:
            conditions.append(view.c.trade_account_id == where.trade_account_id)
        order = [view.c.account, view.c.trade_account_id, view.c.currency]
        return _run(engine, select(view).where(*conditions).order_by(*order))
    sums: dict[tuple[str, str, str], list[Any]] = {}
    for leg in read_legs(engine, LedgerFilter(where.account, where.trade_account_id, None, where.until)):
        key = (leg.account, leg.trade_account_id, leg.currency or "")
        row = sums.setdefault(key, [Decimal(0), leg.occurred_at, leg.entry_id, set(), leg.seq])
        row[0] += leg.amount
        row[1], row[2], row[4] = leg.occurred_at, leg.entry_id, leg.seq
        row[3].add(leg.entry_id)
    columns = tuple(column.name for column in LEDGER_VIEWS["v_balances"].columns)
    rows = [(*key, total, as_of, last, len(ids), seq) for key, (total, as_of, last, ids, seq) in sorted(sums.items())]
    return LedgerReport(columns, rows)
