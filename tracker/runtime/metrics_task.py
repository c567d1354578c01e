"""The metrics updater: an ``extra_tasks`` starter for ``run_tracker`` that keeps ``tracker.metrics.Metrics`` current.

Once a second (and once more at the stop) it reads what the running service already keeps (the writer's duplicate
count and commit latencies, the open connections) and what the log says since its last look (cursor on ``seq`` and
on the quarantine's ``id``, so each round reads only what is new):

- ``ws`` entries → ``tracker_frames_ingested_total{channel_kind}`` (the channel's name: my_orders, my_trades, ...);
- ``rest`` entries → ``tracker_backfilled_events_total{endpoint}`` (their channel is the REST endpoint);
- ``gap_detected`` → ``tracker_gaps_total{kind}`` (its trigger), a ``closed`` connection other than at the stop →
  ``tracker_reconnects_total{reason}`` (requested, dropped, stalled, error);
- new quarantine rows → ``tracker_frames_quarantined_total{kind}``;
- gauges: the log head, projection lag (head minus the projector's checkpoint), unresolved discrepancies.

Counting from the log rather than from hooks in each task keeps this module the only coupling: the exported numbers
are exactly what was committed. Counting starts at the head when the task is built (before the run connects), so
the counters count this run.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from sqlalchemy import Engine, func, select

from tracker.bitstamp.channels import parse_channel
from tracker.domain import tracker_events as te
from tracker.metrics import Metrics
from tracker.store.projection_schema import CHECKPOINT_NAME, VIEWS, projector_checkpoint
from tracker.store.schema import event_log, quarantine

log = logging.getLogger("tracker.metrics")

INTERVAL_S = 1.0
_PAGE = 5000


@dataclass
class _Cursor:
    seq: int = 0
    quarantine_id: int = 0
    duplicates: int = 0
    latencies: int = 0


@dataclass(frozen=True, slots=True)
class _Delta:
    frames: Counter[str]
    backfilled: Counter[str]
    gaps: Counter[str]
    reconnects: Counter[str]
    quarantined: Counter[str]
    head: int
    checkpoint: int
    discrepancies_open: int


def channel_kind(channel: str) -> str:
    try:
        return parse_channel(channel).name
    except ValueError:
        return "other"


def reconnect_reason(reason: str) -> str | None:
    """The label of a ``closed`` lifecycle reason; ``None`` for a close that is not a reconnect (the stop)."""
    text = reason.lower()
    if text == "stopped":
        return None
    if text == "replaced":
        return "requested"
    if "stall" in text:
        return "stalled"
    if "drop" in text or "1006" in text or "closed by the peer" in text:
        return "dropped"
    return "error"


def payload_data(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read(engine: Engine, cursor: _Cursor) -> _Delta:
    t = event_log.c
    frames: Counter[str] = Counter()
    backfilled: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    reconnects: Counter[str] = Counter()
    quarantined: Counter[str] = Counter()
    with engine.connect() as conn:
        head = int(conn.execute(select(func.coalesce(func.max(t.seq), 0))).scalar_one())
        while cursor.seq < head:
            until = min(cursor.seq + _PAGE, head)
            span = (t.seq > cursor.seq, t.seq <= until)
            for source, channel, n in conn.execute(
                select(t.source, t.channel, func.count())
                .where(*span, t.source != "tracker")
                .group_by(t.source, t.channel)
            ):
                if source == "ws":
                    frames[channel_kind(channel)] += int(n)
                else:
                    backfilled[channel or "other"] += int(n)
            for event, payload in conn.execute(
                select(t.event, t.payload).where(
                    *span, t.source == "tracker", t.event.in_((te.GAP_DETECTED, te.CLOSED))
                )
            ):
                data = payload_data(payload)
                if event == te.GAP_DETECTED:
                    gaps[str(data.get("trigger") or "unknown")] += 1
                elif (label := reconnect_reason(str(data.get("reason") or ""))) is not None:
                    reconnects[label] += 1
            cursor.seq = until
        q = quarantine.c
        for kind, n, last in conn.execute(
            select(q.kind, func.count(), func.max(q.id)).where(q.id > cursor.quarantine_id).group_by(q.kind)
        ):
            quarantined[kind] += int(n)
            cursor.quarantine_id = max(cursor.quarantine_id, int(last))
        checkpoint = conn.execute(
            select(projector_checkpoint.c.seq).where(projector_checkpoint.c.name == CHECKPOINT_NAME)
        ).scalar()
        view = VIEWS["v_discrepancies"]
        discrepancies = int(
            conn.execute(select(func.count()).select_from(view).where(view.c.status == "open")).scalar_one()
        )
    return _Delta(frames, backfilled, gaps, reconnects, quarantined, head, int(checkpoint or 0), discrepancies)


def _start(engine: Engine) -> _Cursor:
    """Counters count from now: the cursors start at the current head and quarantine id."""
    with engine.connect() as conn:
        seq = int(conn.execute(select(func.coalesce(func.max(event_log.c.seq), 0))).scalar_one())
        qid = int(conn.execute(select(func.coalesce(func.max(quarantine.c.id), 0))).scalar_one())
    return _Cursor(seq=seq, quarantine_id=qid)


def _apply(metrics: Metrics, delta: _Delta) -> None:
    for kind, n in delta.frames.items():
        metrics.frames.labels(channel_kind=kind).inc(n)
    for endpoint, n in delta.backfilled.items():
        metrics.backfilled.labels(endpoint=endpoint).inc(n)
    for kind, n in delta.gaps.items():
        metrics.gaps.labels(kind=kind).inc(n)
    for reason, n in delta.reconnects.items():
        metrics.reconnects.labels(reason=reason).inc(n)
    for kind, n in delta.quarantined.items():
        metrics.quarantined.labels(kind=kind).inc(n)
    metrics.log_head.set(delta.head)
    metrics.projection_lag.set(max(delta.head - delta.checkpoint, 0))
    metrics.discrepancies_open.set(delta.discrepancies_open)


def _apply_service(metrics: Metrics, services: Any, cursor: _Cursor) -> None:
    """What only the running service knows: duplicates, commit latencies, open connections."""
    writer = services.writer_stats
    if writer.duplicates > cursor.duplicates:
        metrics.duplicates.inc(writer.duplicates - cursor.duplicates)
        cursor.duplicates = writer.duplicates
    observed = sum(writer.latency_counts)
    new = observed - cursor.latencies
    if new > 0:
        sample = writer.latency_sample
        for seconds in itertools.islice(sample, max(len(sample) - new, 0), None):
            metrics.commit_latency.observe(seconds)
        cursor.latencies = observed
    metrics.connections.set(services.ingest_stats.connected_now)


def metrics_task(metrics: Metrics, engine: Engine, *, interval: float = INTERVAL_S) -> Any:
    """An ``extra_tasks`` starter: ``run_tracker(..., extra_tasks=[metrics_task(metrics, engine)])``. Build it just
    before ``run_tracker``: the counters count what is logged from then on."""

    cursor = _start(engine)  # now, before the run connects: everything this run logs is counted

    async def update_metrics(services: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        limiter = trio.CapacityLimiter(1)

        async def round_() -> None:
            delta = await trio.to_thread.run_sync(partial(_read, engine, cursor), limiter=limiter)
            _apply(metrics, delta)
            _apply_service(metrics, services, cursor)

        await round_()
        task_status.started()
        while not services.stop.is_set():
            with trio.move_on_after(interval):
                await services.stop.wait()
            await round_()

    return update_metrics
