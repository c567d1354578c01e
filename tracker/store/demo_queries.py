"""The demo's reads of the log: where a run starts (and whose database it is), and what one run added.

Counts come from the log itself, never from the running tasks, so what the demo prints is what an auditor would find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, func, select

from tracker.domain import tracker_events as te
from tracker.store.projection_schema import VIEWS
from tracker.store.schema import event_log as event_log_table


@dataclass(frozen=True, slots=True)
class LogBaseline:
    head: int
    fills: int
    other_account: str | None  # an account other than the expected one, if the log holds any
    max_order_below: int  # the largest numeric order id under the split (spot ids in the fake)
    max_order_from: int  # the largest numeric order id at or above it (perp ids in the fake)
    max_trade: int  # the largest trade or ledger row id (the fake draws both from one counter)
    max_request: int = 0  # the largest withdrawal request id
    # {trade account: {currency: balance}} as the earlier runs left them (v_balances)
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunCounts:
    head: int
    fills: int
    reconnects: int
    gaps: int
    gaps_filled: int


def _int_ids(values: list[object]) -> list[int]:
    return [int(str(v)) for v in values if v is not None and str(v).isdigit()]


def log_baseline(engine: Engine, account: str, order_id_split: int) -> LogBaseline:
    """The log head, the fills so far, another account if any, and the largest ids in the log."""
    t = event_log_table
    with engine.connect() as conn:
        other = conn.execute(select(t.c.account).where(t.c.account != account).limit(1)).scalar()
        head = int(conn.execute(select(func.coalesce(func.max(t.c.seq), 0))).scalar_one())
        fills = int(conn.execute(select(func.count()).select_from(VIEWS["v_fills"])).scalar_one())
        orders = _int_ids(list(conn.execute(select(t.c.order_id).distinct()).scalars()))
        trades = _int_ids(list(conn.execute(select(t.c.trade_id).distinct()).scalars()))
        ledger, transfers, books = VIEWS["v_ledger"], VIEWS["v_transfers"], VIEWS["v_balances"]
        entries = _int_ids(list(conn.execute(select(ledger.c.entry_id).distinct()).scalars()))
        requests = _int_ids(list(conn.execute(select(transfers.c.request_id).distinct()).scalars()))
        balances: dict[str, dict[str, Decimal]] = {}
        for tai, currency, balance in conn.execute(
            select(books.c.trade_account_id, books.c.currency, books.c.balance).where(books.c.account == account)
        ):
            balances.setdefault(str(tai), {})[str(currency)] = Decimal(str(balance))
    return LogBaseline(
        head,
        fills,
        None if other is None else str(other),
        max((i for i in orders if i < order_id_split), default=0),
        max((i for i in orders if i >= order_id_split), default=0),
        max(trades + entries, default=0),
        max(requests, default=0),
        balances,
    )


def run_counts(engine: Engine, after_seq: int) -> RunCounts:
    """The log head and fills now, and what was logged after ``after_seq``: reconnects are closes other than the
    stop, gaps filled are the gap ids a ``backfill_completed`` names."""
    t = event_log_table
    wanted = (te.GAP_DETECTED, te.BACKFILL_COMPLETED, te.CLOSED)
    gaps = reconnects = 0
    filled: set[str] = set()
    with engine.connect() as conn:
        head = int(conn.execute(select(func.coalesce(func.max(t.c.seq), 0))).scalar_one())
        fills = int(conn.execute(select(func.count()).select_from(VIEWS["v_fills"])).scalar_one())
        query = select(t.c.event, t.c.payload).where(
            t.c.seq > after_seq, t.c.source == "tracker", t.c.event.in_(wanted)
        )
        for event, payload in conn.execute(query):
            data = te.entry_data(payload)
            if event == te.GAP_DETECTED:
                gaps += 1
            elif event == te.BACKFILL_COMPLETED:
                gap_ids = data.get("gap_ids")
                if isinstance(gap_ids, list):
                    filled.update(str(g) for g in gap_ids)
            elif te.reconnect_reason(str(data.get("reason") or "")) is not None:
                reconnects += 1
    return RunCounts(head, fills, reconnects, gaps, len(filled))


BALANCE_COLUMNS = ("trade_account_id", "currency", "balance", "exchange_total", "difference", "check", "snapshot_at")


def balance_summary(engine: Engine, account: str) -> list[tuple[object, ...]]:
    """Each computed balance (v_balances) beside the exchange's latest snapshot of it (v_balance_checks), in
    ``BALANCE_COLUMNS`` order; a currency no snapshot has checked yet shows ``None`` there."""
    books, checks = VIEWS["v_balances"], VIEWS["v_balance_checks"]
    with engine.connect() as conn:
        latest: dict[tuple[str, str], tuple[object, ...]] = {}
        query = select(
            checks.c.trade_account_id, checks.c.currency, checks.c.exchange_total, checks.c.difference,
            checks.c.status, checks.c.snapshot_at,
        ).where(checks.c.account == account).order_by(checks.c.snapshot_seq)  # fmt: skip
        for tai, currency, total, difference, status, at in conn.execute(query):
            latest[(str(tai), str(currency))] = (total, difference, status, at)
        rows = conn.execute(
            select(books.c.trade_account_id, books.c.currency, books.c.balance)
            .where(books.c.account == account)
            .order_by(books.c.trade_account_id, books.c.currency)
        ).all()
    out: list[tuple[object, ...]] = []
    for tai, currency, balance in sorted(rows, key=lambda r: (int(str(r[0])), str(r[1]))):
        check = latest.get((str(tai), str(currency)), (None, None, "not checked", None))
        out.append((tai, currency, balance, *check))
    return out
