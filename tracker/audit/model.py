"""The audit report's content as plain values: what the store reads, what the document renders.

Every figure travels with its ``Query`` (the SQL that produced it and its parameters), so the document can show, for
each number, how to reproduce it. Values are exact: money is ``Decimal`` (or the exact decimal text SQLite stores),
times are aware UTC ``datetime`` (or SQLite's UTC text); ``cells.py`` turns both into the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Final

Cell = str | int | Decimal | datetime | date | bool | None
LIST_LIMIT: Final = 500  # rows listed per detail table; the count of all rows is always given beside it


@dataclass(frozen=True, slots=True)
class Query:
    """How to reproduce a figure: the SQL as run and the values of its parameters."""

    sql: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Table:
    """Rows read by one query. ``total`` counts every row the query matches; ``rows`` holds at most ``LIST_LIMIT``
    of them (``total`` is read with its own count query when the list is capped)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    query: Query
    total: int = -1

    @property
    def count(self) -> int:
        return len(self.rows) if self.total < 0 else self.total

    @property
    def capped(self) -> bool:
        return self.count > len(self.rows)

    def column(self, name: str) -> list[Cell]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass(frozen=True, slots=True)
class Period:
    """Whole UTC days: ``since`` inclusive, ``until`` exclusive (None: open). ``account`` (the Bitstamp account, user
    id) None: every account. ``trade_account`` (``0`` the main account, else a sub-account) None: every trade account;
    it narrows the views that carry ``trade_account_id``, not the log's own sections (integrity, coverage)."""

    since: date | None = None
    until: date | None = None
    account: str | None = None
    trade_account: str | None = None


@dataclass(frozen=True, slots=True)
class LogSpan:
    """The part of the log the period covers (by ``received_at``)."""

    first_seq: int | None
    last_seq: int | None
    events: int
    first_at: datetime | None
    last_at: datetime | None
    by_source: Table


@dataclass(frozen=True, slots=True)
class Integrity:
    """``tracker verify`` over the log: the database's own check, then the hash chain from seq 1 to the head."""

    method: str  # e.g. "SQLite integrity_check"; "" when none could run
    problems: tuple[str, ...]
    note: str | None  # why pages were not checked (PostgreSQL without amcheck)
    chain_rows: int  # rows whose links checked out
    head_seq: int
    head_hash: str
    broken: str | None  # "seq N: reason" of the first bad row, None when intact
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems and self.broken is None


@dataclass(frozen=True, slots=True)
class TrackerEntry:
    """One tracker-made log entry (connection lifecycle, gaps, backfills, failures) with its JSON ``data``."""

    seq: int
    event: str
    connection_id: str
    received_at: datetime
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class Activity:
    fees_daily: Table  # day, market, fills, volume, fees, base_volume, trade_account_id
    fees_total: Table  # market, fills, volume, fees (exact sums over fees_daily)
    fills: Table  # market, side, fills, fees (from v_fills: the count the daily table must agree with)
    orders: Table  # status, market, orders
    self_trades: Table  # the list
    settlements: Table  # kind, ccy, count, amount, funding
    liquidations: Table  # event, count
    liquidation_list: Table
    positions: Table


@dataclass(frozen=True, slots=True)
class Balances:
    """Absent (``missing`` names the views not found) or the balance series and the snapshot checks."""

    missing: tuple[str, ...]
    series: Table | None = None  # trade_account_id, currency, day, balance, as_of (the last balance of each day)
    checks: Table | None = None  # trade_account_id, currency, snapshot_at, exchange_total, computed_total, difference
    current: Table | None = None  # v_balances: trade_account_id, currency, balance, as_of (the balance now)


@dataclass(frozen=True, slots=True)
class Discrepancies:
    by_status: Table  # status, count
    rows: Table  # every column v_discrepancies has (note, acknowledged_at, ... when present)
    # (id, text) of the rows the orders' logged events explain (domain/self_trade_hint.py): not in the view
    hints: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuditData:
    version: str
    database: str  # URL without password
    made_at: datetime
    period: Period
    span: LogSpan
    integrity: Integrity
    tracker_entries: tuple[TrackerEntry, ...]
    tracker_query: Query
    activity: Activity
    balances: Balances
    discrepancies: Discrepancies
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per section (for the limits note)
    # ``log_merged`` entries of the period's account, whatever their time (tracker db copy --merge): which seqs came
    # from another log, renumbered, and that log's head anchor.
    merged: tuple[TrackerEntry, ...] = ()
