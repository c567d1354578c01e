"""Discrepancies as work to finish: listing them, and recording a person's acknowledgement in the log.

An acknowledgement is a tracker-made log entry (``discrepancy_acknowledged``: the id, the note, who), like every other
fact tracker learns: it cannot be edited away, and the projection folds it into ``v_discrepancies`` (status
``acknowledged``, ``acknowledged_seq``, ``note``). Written through ``EventLog.append`` (one transaction on the hash
chain's head, safe beside a running ``tracker run``), then the projection catches up so the view shows it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from tracker.domain import tracker_events as te
from tracker.domain.timeutil import utc_now
from tracker.errors import StoreError
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import VIEWS
from tracker.store.projections import ProjectionStore

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
