"""The demo's reads of the log: where a run starts (and whose database it is), and what one run added.

Counts come from the log itself, never from the running tasks, so what the demo prints is what an auditor would find.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    max_trade: int


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
    return LogBaseline(
        head,
        fills,
        None if other is None else str(other),
        max((i for i in orders if i < order_id_split), default=0),
        max((i for i in orders if i >= order_id_split), default=0),
        max(trades, default=0),
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
