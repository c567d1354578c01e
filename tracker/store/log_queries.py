"""The queries backfill runs on the event log: where this run starts, the entries that can reveal a gap, and the
newest data of a tracker-made entry (cursors and summaries are read back from the log, never kept elsewhere).

Plain functions over an ``EventLog``: synchronous, one short read transaction each; the runtime calls them in a
worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from tracker.domain import tracker_events as te
from tracker.domain.log import LogEntry
from tracker.store.event_log import LOG_FIELDS, EventLog
from tracker.store.schema import event_log as event_log_table

_COLUMNS = tuple(event_log_table.c[name] for name in LOG_FIELDS)
SIGNAL_PAGE = 2000  # signal entries read per query (the watch reads again at once after a full page)
IN_CHUNK = 500  # ids per IN (...) list


def latest_tracker_data(event_log: EventLog, account: str, channel: str, event: str) -> dict[str, Any] | None:
    """The ``data`` of the newest tracker-made entry ``event`` on ``channel`` (e.g. the last ``backfill_completed``,
    whose cursors the next backfill starts from), or None."""
    t = event_log_table
    query = (
        select(t.c.payload)
        .where(t.c.channel == channel, t.c.account == account, t.c.event == event, t.c.source == "tracker")
        .order_by(t.c.seq.desc())
        .limit(1)
    )
    with event_log.engine.connect() as conn:
        payload = conn.execute(query).scalar_one_or_none()
    if payload is None:
        return None
    data = json.loads(payload).get("data")
    return data if isinstance(data, dict) else None


def last_reconciled_at(event_log: EventLog, account: str, channel: str) -> datetime | None:
    """When the account was last reconciled (the newest ``reconciled`` entry's ``received_at``), else when its log
    began (its first entry's), else None: the periodic reconciliation's clock survives restarts."""
    t = event_log_table
    newest = (
        select(t.c.received_at)
        .where(t.c.account == account, t.c.source == "tracker", t.c.channel == channel, t.c.event == te.RECONCILED)
        .order_by(t.c.seq.desc())
        .limit(1)
    )
    first = select(t.c.received_at).where(t.c.account == account).order_by(t.c.seq).limit(1)
    with event_log.engine.connect() as conn:
        at = conn.execute(newest).scalar_one_or_none()
        return at if at is not None else conn.execute(first).scalar_one_or_none()


def signals_after(event_log: EventLog, account: str, after: int, limit: int = SIGNAL_PAGE) -> list[LogEntry]:
    """Entries that can reveal a gap: tracker lifecycle entries and ws entries with an event_id (my_orders)."""
    t = event_log_table
    query = (
        select(*_COLUMNS)
        .where(
            t.c.seq > after,
            t.c.account == account,
            or_(t.c.source == "tracker", and_(t.c.source == "ws", t.c.event_id.is_not(None))),
        )
        .order_by(t.c.seq)
        .limit(limit)
    )
    with event_log.engine.connect() as conn:
        return [LogEntry(*row) for row in conn.execute(query)]


def run_start(event_log: EventLog, account: str, started_at: datetime) -> tuple[int, datetime | None]:
    """(seq before this run's first entry, received_at of the previous run's last entry), scanning back from the
    head: entries of this run have ``received_at >= started_at``. A ``log_merged`` entry is no run's: it was written
    when the account's log was merged into this database (``tracker db copy --merge``), after its last run ended,
    and the window tracker was not running starts at that run's last entry, not at the merge."""
    t = event_log_table
    hi: int | None = None
    merged = (t.c.source == "tracker") & (t.c.event == te.LOG_MERGED)
    with event_log.engine.connect() as conn:
        while True:
            query = select(t.c.seq, t.c.received_at).where(t.c.account == account, ~merged)
            if hi is not None:
                query = query.where(t.c.seq < hi)
            rows = list(conn.execute(query.order_by(t.c.seq.desc()).limit(500)))
            if not rows:
                return 0, None
            for seq, received_at in rows:
                if received_at < started_at:
                    return seq, received_at
            hi = rows[-1][0]


def unclosed_gaps(event_log: EventLog, account: str) -> list[str]:
    """The ids of the account's ``gap_detected`` entries that no ``backfill_completed`` lists, oldest first: gaps whose
    backfill was cut short (the process killed, the task ended by a database outage). One scan of both kinds of
    entries (as ``tracker status`` does), read once per run."""
    t = event_log_table
    query = (
        select(t.c.event, t.c.payload)
        .where(
            t.c.account == account,
            t.c.source == "tracker",
            t.c.event.in_((te.GAP_DETECTED, te.BACKFILL_COMPLETED)),
        )
        .order_by(t.c.seq)
    )
    detected: list[str] = []
    closed: set[str] = set()
    with event_log.engine.connect() as conn:
        for event, payload in conn.execute(query):
            data = te.entry_data(payload)
            if event == te.GAP_DETECTED:
                if isinstance(gap_id := data.get("gap_id"), str):
                    detected.append(gap_id)
            elif isinstance(ids := data.get("gap_ids"), list):
                closed.update(str(g) for g in ids)
    return [gap_id for gap_id in detected if gap_id not in closed]


def entries_about(
    event_log: EventLog, account: str, *, trade_ids: Iterable[str] = (), event_ids: Iterable[str] = ()
) -> list[LogEntry]:
    """The account's logged entries (any source) with one of these trade ids or order event ids: what a REST page's
    rows may repeat (the ``trade_id`` and ``event_id`` indexes serve it; ``IN_CHUNK`` ids per query)."""
    t = event_log_table
    out: list[LogEntry] = []
    with event_log.engine.connect() as conn:
        for column, ids in ((t.c.trade_id, sorted(set(trade_ids))), (t.c.event_id, sorted(set(event_ids)))):
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                query = select(*_COLUMNS).where(column.in_(chunk), t.c.account == account).order_by(t.c.seq)
                out += [LogEntry(*row) for row in conn.execute(query)]
    return out


def ledger_cursor(event_log: EventLog, account: str, channel: str, event: str, *, scan: int = 1000) -> int | None:
    """The highest ledger row id among the newest ``scan`` ``event`` entries on ``channel`` (a trade account's
    ``rest_ledger_row`` entries: the walk appends them in ascending id order, so the newest page holds the highest
    id), read from the dedup key's last part (``rest:{account}:ledger:{tai}:{id}``); None when there are none. The
    ledger walk resumes from it: a ``kill -9`` costs a re-walk of at most one page."""
    t = event_log_table
    query = (
        select(t.c.dedup_key)
        .where(t.c.channel == channel, t.c.account == account, t.c.event == event, t.c.source == "rest")
        .order_by(t.c.seq.desc())
        .limit(scan)
    )
    with event_log.engine.connect() as conn:
        keys = conn.execute(query).scalars().all()
    ids = [int(tail) for key in keys if (tail := key.rsplit(":", 1)[-1]).isdigit()]
    return max(ids, default=None)


def ws_activity_after(
    event_log: EventLog, account: str, after: int, channel_prefixes: Iterable[str]
) -> tuple[int, bool]:
    """(the account's newest seq, whether a ``ws`` entry after ``after`` is on a channel starting with one of
    ``channel_prefixes``): what tells the ledger walker that fills or settlements arrived."""
    t = event_log_table
    prefixes = list(channel_prefixes)
    with event_log.engine.connect() as conn:
        head = conn.execute(select(func.max(t.c.seq)).where(t.c.account == account, t.c.seq > after)).scalar()
        if head is None:
            return after, False
        if not prefixes:
            return int(head), False
        query = (
            select(t.c.seq)
            .where(
                t.c.account == account,
                t.c.seq > after,
                t.c.seq <= head,
                t.c.source == "ws",
                or_(*(t.c.channel.startswith(p, autoescape=True) for p in prefixes)),
            )
            .limit(1)
        )
        found = conn.execute(query).first() is not None
    return int(head), found
