"""Discrepancies as work to finish: listing them, and recording a person's acknowledgement in the log.

An acknowledgement is a tracker-made log entry (``discrepancy_acknowledged``: the id, the note, who), like every other
fact tracker learns: it cannot be edited away, and the projection folds it into ``v_discrepancies`` (status
``acknowledged``, ``acknowledged_seq``, ``note``). Written through ``EventLog.append`` (one transaction on the hash
chain's head, safe beside a running ``tracker run``), then the projection catches up so the view shows it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Engine, select

from tracker.bitstamp.parse import parse_entry
from tracker.domain import tracker_events as te
from tracker.domain.events import OrderEvent
from tracker.domain.log import LogEntry
from tracker.domain.self_trade_hint import MissedSelfTrade, missed_self_trade
from tracker.domain.timeutil import utc_now
from tracker.errors import StoreError
from tracker.store.event_log import LOG_FIELDS, EventLog
from tracker.store.projection_schema import PROJECTION_TABLES, VIEWS
from tracker.store.projections import ProjectionStore
from tracker.store.schema import event_log as event_log_table

STATUSES = ("open", "acknowledged", "resolved")


def list_discrepancies(
    engine: Engine, *, statuses: tuple[str, ...] = ("open",), kind: str | None = None, account: str | None = None
) -> list[dict[str, Any]]:
    """``v_discrepancies`` rows with these statuses (newest first), optionally of one kind or account."""
    view = VIEWS["v_discrepancies"]
    query = select(view).where(view.c.status.in_(statuses)).order_by(view.c.opened_seq.desc(), view.c.id)
    if kind is not None:
        query = query.where(view.c.kind == kind)
    if account is not None:
        query = query.where(view.c.account == account)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


HINTED_KINDS: Final = ("order_fills_mismatch",)
IN_CHUNK: Final = 400  # order ids per IN (...) list


def missed_self_trades(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> dict[str, MissedSelfTrade]:
    """Per discrepancy id among ``rows`` (``list_discrepancies``'s), the hint that its ``order_fills_mismatch`` is a
    self trade whose frame is not in the log, where the order's logged events say so (``domain/self_trade_hint.py``).

    Read: the order's row and its link (``amount_filled``, ``fills_sum``, the logged offsets) and the order's log
    entries from its first seq on, for all the orders at once: one range scan of the primary key from the oldest
    order's first seq (no index on ``order_id`` since migration 0003; a REST replay of an order's event can come
    after its last applied seq, so the range runs to the head)."""
    wanted: dict[tuple[str, str], str] = {}
    for row in rows:
        entity = str(row["entity"])
        if row["kind"] in HINTED_KINDS and row["status"] != "resolved" and entity.startswith("order:"):
            wanted[(str(row["account"]), entity.removeprefix("order:"))] = str(row["id"])
    if not wanted:
        return {}
    orders, links, log = PROJECTION_TABLES["orders"], PROJECTION_TABLES["order_links"], event_log_table
    figures: dict[tuple[str, str], tuple[Decimal, Decimal, Decimal, int]] = {}
    events: dict[tuple[str, str], list[OrderEvent]] = {key: [] for key in wanted}
    with engine.connect() as conn, conn.begin():
        for account, order_id in wanted:
            order = conn.execute(
                select(orders.c.amount_filled, orders.c.first_seq).where(
                    orders.c.account == account, orders.c.order_id == order_id
                )
            ).first()
            link = conn.execute(
                select(links.c.fills_sum, links.c.self_trade_offset).where(
                    links.c.account == account, links.c.order_id == order_id
                )
            ).first()
            if order is not None:
                fills_sum, offset = (Decimal(0), Decimal(0)) if link is None else (link[0], link[1])
                figures[(account, order_id)] = (order[0], fills_sum, offset, int(order[1]))
        if not figures:
            return {}
        first = min(seq for *_, seq in figures.values())
        ids = sorted({order_id for _, order_id in figures})
        columns = [log.c[name] for name in LOG_FIELDS]
        for start in range(0, len(ids), IN_CHUNK):
            query = (
                select(*columns)
                .where(log.c.seq >= first, log.c.order_id.in_(ids[start : start + IN_CHUNK]))
                .order_by(log.c.seq)
            )
            for values in conn.execute(query):
                entry = LogEntry(*values)
                key = (entry.account, entry.order_id or "")
                if key in figures and entry.seq >= figures[key][3]:
                    event = parse_entry(entry)
                    if isinstance(event, OrderEvent):
                        events[key].append(event)
    out: dict[str, MissedSelfTrade] = {}
    for key, (amount_filled, fills_sum, offset, _) in figures.items():
        hint = missed_self_trade(
            events[key], amount_filled=amount_filled, fills_sum=fills_sum, self_trade_offset=offset
        )
        if hint is not None:
            out[wanted[key]] = hint
    return out


def acknowledge(
    engine: Engine,
    discrepancy_id: str,
    *,
    note: str,
    by: str,
    wall: Callable[[], datetime] = utc_now,
) -> dict[str, Any]:
    """Record that ``by`` acknowledged the open discrepancy ``discrepancy_id`` because ``note``; returns its row
    afterwards. An unknown id, or one not open, is a ``StoreError`` saying which."""
    view = VIEWS["v_discrepancies"]
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(view).where(view.c.id == discrepancy_id)).mappings()]
    if not rows:
        raise StoreError(f"no discrepancy {discrepancy_id!r}: `tracker discrepancies --status all` lists them")
    row = rows[0]
    if row["status"] != "open":
        raise StoreError(f"discrepancy {discrepancy_id} is {row['status']}, not open: nothing to acknowledge")
    event_log = EventLog(engine)
    entry = te.tracker_entry(
        account=str(row["account"]),
        event=te.DISCREPANCY_ACKNOWLEDGED,
        data={"id": discrepancy_id, "note": note, "by": by, "at": wall().isoformat()},
        received_at=wall(),
        uid=uuid.uuid4().hex,
        channel="discrepancies",
    )
    event_log.append([entry])
    ProjectionStore(engine).catch_up(event_log)
    with engine.connect() as conn:
        return dict(conn.execute(select(view).where(view.c.id == discrepancy_id)).mappings().one())
