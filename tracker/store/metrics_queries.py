"""The queries behind ``tracker run --metrics-port``: what the log, the quarantine and the projection say since the
metrics updater's last look (runtime/metrics_task.py turns these raw facts into Prometheus labels and values).

Each round reads only what is new: entries after a ``seq`` cursor (in pages, so a long pause does not read a million
rows at once) and quarantine rows after an ``id`` cursor, all in one read transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select

from tracker.store.projection_schema import CHECKPOINT_NAME, VIEWS, projector_checkpoint
from tracker.store.schema import event_log, quarantine

PAGE = 5000


@dataclass(frozen=True, slots=True)
class ChannelActivity:
    """Entries of one (source, channel) in the span read: how many and when the newest was received."""

    source: str  # ws | rest (tracker's own lifecycle entries are read as ``tracker_events``)
    channel: str
    entries: int
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class MetricsRead:
    head: int  # the log head; the next round reads after it
    channels: list[ChannelActivity]
    tracker_events: list[tuple[str, str]]  # (event, payload) of the lifecycle events asked for, in seq order
    quarantined: dict[str, int] = field(default_factory=dict)  # new quarantine rows by kind
    last_quarantine_id: int = 0  # the quarantine cursor for the next round
    checkpoint: int = 0  # the projector's checkpoint (0 before its first batch)
    discrepancies_open: int = 0


def start_cursors(engine: Engine) -> tuple[int, int]:
    """The log head and the newest quarantine id: counting "from now" starts after both."""
    with engine.connect() as conn:
        seq = _head(conn)
        qid = int(conn.execute(select(func.coalesce(func.max(quarantine.c.id), 0))).scalar_one())
    return seq, qid


def last_event_per_channel(engine: Engine) -> dict[str, datetime]:
    """Per websocket channel, when its newest entry was received (over the whole log: the gauge anyone alerts on
    must be right from the first scrape, not only after the channel's next frame)."""
    t = event_log.c
    query = select(t.channel, func.max(t.received_at)).where(t.source == "ws").group_by(t.channel)
    with engine.connect() as conn:
        return {channel: at for channel, at in conn.execute(query) if at is not None}


def read_metrics(
    engine: Engine, *, after_seq: int, after_quarantine_id: int, tracker_events: tuple[str, ...], page: int = PAGE
) -> MetricsRead:
    """Everything logged after ``after_seq`` and quarantined after ``after_quarantine_id``, plus the gauges."""
    t = event_log.c
    activity: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    events: list[tuple[str, str]] = []
    with engine.connect() as conn:
        head = _head(conn)
        cursor = after_seq
        while cursor < head:
            until = min(cursor + page, head)
            span = (t.seq > cursor, t.seq <= until)
            for source, channel, n, last_at in conn.execute(
                select(t.source, t.channel, func.count(), func.max(t.received_at))
                .where(*span, t.source != "tracker")
                .group_by(t.source, t.channel)
            ):
                entries, seen = activity.get((source, channel), (0, None))
                newest = last_at if seen is None or (last_at is not None and last_at > seen) else seen
                activity[(source, channel)] = (entries + int(n), newest)
            events += [
                (event, payload)
                for event, payload in conn.execute(
                    select(t.event, t.payload)
                    .where(*span, t.source == "tracker", t.event.in_(tracker_events))
                    .order_by(t.seq)
                )
            ]
            cursor = until
        q = quarantine.c
        quarantined: dict[str, int] = {}
        last_id = after_quarantine_id
        for kind, n, newest_id in conn.execute(
            select(q.kind, func.count(), func.max(q.id)).where(q.id > after_quarantine_id).group_by(q.kind)
        ):
            quarantined[kind] = int(n)
            last_id = max(last_id, int(newest_id))
        checkpoint = conn.execute(
            select(projector_checkpoint.c.seq).where(projector_checkpoint.c.name == CHECKPOINT_NAME)
        ).scalar()
        view = VIEWS["v_discrepancies"]
        discrepancies = int(
            conn.execute(select(func.count()).select_from(view).where(view.c.status == "open")).scalar_one()
        )
    channels = [ChannelActivity(source, channel, n, at) for (source, channel), (n, at) in activity.items()]
    return MetricsRead(head, channels, events, quarantined, last_id, int(checkpoint or 0), discrepancies)


def _head(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(event_log.c.seq), 0))).scalar_one())
