"""The metrics updater: an ``extra_tasks`` starter for ``run_tracker`` that keeps ``tracker.metrics.Metrics`` current.

Once a second (and once more at the stop) it reads what the running service already keeps (the writer's duplicate
count and commit latencies, the open connections) and what the log says since its last look (cursor on ``seq`` and
on the quarantine's ``id``, so each round reads only what is new):

- ``ws`` entries → ``tracker_frames_ingested_total{channel_kind}`` (the channel's name: my_orders, my_trades, ...);
- ``rest`` entries → ``tracker_backfilled_events_total{endpoint}`` (their channel is the REST endpoint);
- ``gap_detected`` → ``tracker_gaps_total{kind}`` (its trigger), a ``closed`` connection other than at the stop →
  ``tracker_reconnects_total{reason}`` (requested, dropped, stalled, error);
- new quarantine rows → ``tracker_frames_quarantined_total{kind}``;
- the ledger capture's own counts (``services.ledger.stats``: ledger rows and balance snapshots it appended, snapshots
  given up after raced movements, walk durations);
- gauges: the log head, projection lag (head minus the projector's checkpoint), unresolved discrepancies, and per
  websocket channel the receive time of its newest entry (``tracker_channel_last_event_timestamp_seconds``; set from
  the whole log at the start, so it is right from the first scrape), and the database's size and its disk's free
  space (``store/space.py``: ``tracker_database_bytes``, ``tracker_disk_free_bytes{path}``, SQLite only).

The SQL lives in ``store/metrics_queries.py``; this module only turns its raw facts into labels and values.

Counting from the log rather than from hooks in each task keeps this module the only coupling: the exported numbers
are exactly what was committed. Counting starts at the head when the task is built (before the run connects), so
the counters count this run.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

import trio

from tracker.bitstamp.channels import parse_channel
from tracker.domain import tracker_events as te
from tracker.metrics import Metrics
from tracker.runtime.ledger_walk import LedgerStats
from tracker.runtime.service import Services, TaskStarter
from tracker.store.engine import Engine
from tracker.store.metrics_queries import MetricsRead, last_event_per_channel, read_metrics, start_cursors
from tracker.store.space import Space, read_space

log = logging.getLogger("tracker.metrics")

INTERVAL_S = 1.0
COUNTED_EVENTS = (te.GAP_DETECTED, te.CLOSED, te.WALK_FAILED, te.ENDPOINT_UNAVAILABLE, te.CHANNEL_REFUSED)


@dataclass
class _Cursor:
    seq: int = 0
    quarantine_id: int = 0
    duplicates: int = 0
    latencies: int = 0
    ledger_rows: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0
    races: int = 0
    task_failures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Delta:
    frames: Counter[str]
    backfilled: Counter[str]
    gaps: Counter[str]
    reconnects: Counter[str]
    walks: Counter[tuple[str, str, str]]  # (event, endpoint or channel kind, code)
    quarantined: Counter[str]
    head: int
    checkpoint: int
    discrepancies_open: int
    last_event: dict[str, datetime]  # ws channel -> receive time of its newest entry in this round
    space: Space | None = None  # the database's size and its disk's free space now


def channel_kind(channel: str) -> str:
    try:
        return parse_channel(channel).name
    except ValueError:
        return "other"


def _read(engine: Engine, cursor: _Cursor) -> _Delta:
    read = read_metrics(
        engine, after_seq=cursor.seq, after_quarantine_id=cursor.quarantine_id, tracker_events=COUNTED_EVENTS
    )
    cursor.seq, cursor.quarantine_id = read.head, read.last_quarantine_id
    return replace(delta_of(read), space=read_space(engine))


def delta_of(read: MetricsRead) -> _Delta:
    """The labelled counts of one round's raw facts."""
    frames: Counter[str] = Counter()
    backfilled: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    reconnects: Counter[str] = Counter()
    walks: Counter[tuple[str, str, str]] = Counter()
    last_event: dict[str, datetime] = {}
    for activity in read.channels:
        if activity.source == "ws":
            frames[channel_kind(activity.channel)] += activity.entries
            if activity.last_at is not None:
                last_event[activity.channel] = activity.last_at
        else:
            backfilled[activity.channel or "other"] += activity.entries
    for event, payload in read.tracker_events:
        data = te.entry_data(payload)
        if event == te.GAP_DETECTED:
            gaps[str(data.get("trigger") or "unknown")] += 1
        elif event in (te.WALK_FAILED, te.ENDPOINT_UNAVAILABLE):
            walks[(event, str(data.get("endpoint") or "other"), str(data.get("code") or data.get("status") or ""))] += 1
        elif event == te.CHANNEL_REFUSED:
            walks[(event, channel_kind(str(data.get("channel") or "")), "")] += 1
        elif (label := te.reconnect_reason(str(data.get("reason") or ""))) is not None:
            reconnects[label] += 1
    return _Delta(
        frames,
        backfilled,
        gaps,
        reconnects,
        walks,
        Counter(read.quarantined),
        read.head,
        read.checkpoint,
        read.discrepancies_open,
        last_event,
    )


def _start(engine: Engine) -> _Cursor:
    """Counters count from now: the cursors start at the current head and quarantine id."""
    seq, qid = start_cursors(engine)
    return _Cursor(seq=seq, quarantine_id=qid)


def set_last_events(metrics: Metrics, last_event: dict[str, datetime]) -> None:
    for channel, moment in last_event.items():
        metrics.channel_last_event.labels(channel=channel).set(moment.timestamp())


def _apply(metrics: Metrics, delta: _Delta) -> None:
    for kind, n in delta.frames.items():
        metrics.frames.labels(channel_kind=kind).inc(n)
    for endpoint, n in delta.backfilled.items():
        metrics.backfilled.labels(endpoint=endpoint).inc(n)
    for kind, n in delta.gaps.items():
        metrics.gaps.labels(kind=kind).inc(n)
    for reason, n in delta.reconnects.items():
        metrics.reconnects.labels(reason=reason).inc(n)
    for (event, what, code), n in delta.walks.items():
        if event == te.WALK_FAILED:
            metrics.walk_failures.labels(endpoint=what, code=code).inc(n)
        elif event == te.ENDPOINT_UNAVAILABLE:
            metrics.endpoints_unavailable.labels(endpoint=what, code=code).inc(n)
        else:
            metrics.channels_refused.labels(channel_kind=what).inc(n)
    for kind, n in delta.quarantined.items():
        metrics.quarantined.labels(kind=kind).inc(n)
    metrics.log_head.set(delta.head)
    metrics.projection_lag.set(max(delta.head - delta.checkpoint, 0))
    metrics.discrepancies_open.set(delta.discrepancies_open)
    set_last_events(metrics, delta.last_event)
    if (space := delta.space) is not None:
        if space.database_bytes is not None:
            metrics.database_bytes.set(space.database_bytes)
        if space.disk_free_bytes is not None and space.disk_path is not None:
            metrics.disk_free_bytes.labels(path=space.disk_path).set(space.disk_free_bytes)


def _apply_service(metrics: Metrics, services: Services, cursor: _Cursor) -> None:
    """What only the running service knows: duplicates, commit latencies, the ledger capture's counts, its extra
    tasks' contained failures (open connections: ``_apply_connections``)."""
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
    if services.ledger is not None:
        _apply_ledger(metrics, services.ledger.stats, cursor)
    for task, failures in list(services.task_failures.items()):
        if failures > cursor.task_failures.get(task, 0):
            metrics.task_failures.labels(task=task).inc(failures - cursor.task_failures.get(task, 0))
            cursor.task_failures[task] = failures


def _apply_ledger(metrics: Metrics, stats: LedgerStats, cursor: _Cursor) -> None:
    """The ledger capture's counts of this run (rows and snapshots it appended, races, walk durations)."""
    for tai, rows in list(stats.rows.items()):
        if rows > cursor.ledger_rows.get(tai, 0):
            metrics.ledger_rows.labels(trade_account_id=tai).inc(rows - cursor.ledger_rows.get(tai, 0))
            cursor.ledger_rows[tai] = rows
    if stats.snapshots > cursor.snapshots:
        metrics.balance_snapshots.inc(stats.snapshots - cursor.snapshots)
        cursor.snapshots = stats.snapshots
    if stats.races > cursor.races:
        metrics.balance_snapshot_races.inc(stats.races - cursor.races)
        cursor.races = stats.races
    for seconds in stats.take_walk_seconds():
        metrics.ledger_walk_seconds.observe(seconds)


def metrics_task(
    metrics: Metrics,
    engine: Engine,
    *,
    interval: float = INTERVAL_S,
    services_of: Callable[[], Sequence[Services]] | None = None,
) -> TaskStarter:
    """An ``extra_tasks`` starter: ``run_tracker(..., extra_tasks=[metrics_task(metrics, engine)])``. Build it just
    before ``run_tracker``: the counters count what is logged from then on.

    ``services_of``: several accounts in this process (``run_accounts``): every account's newest service, asked
    each round (they start one after the other). The service-side figures are then this process's: duplicates and
    commit latencies of every account's writer, their open connections summed, their ledger captures' counts
    together (per trade account id, as the metric's label has it). Without it: the service the task runs in."""

    cursor = _start(engine)  # now, before the run connects: everything this run logs is counted
    set_last_events(metrics, last_event_per_channel(engine))  # the gauge is right from the first scrape
    # Per service (by id), its own duplicates, latencies and ledger counts. The service is kept beside its cursor, so
    # that its id cannot be another's while the entry exists; a service no longer running (an account's failed one,
    # replaced by a new service) is dropped at the next round.
    cursors: dict[int, tuple[Services, _Cursor]] = {}

    async def update_metrics(
        services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        limiter = trio.CapacityLimiter(1)

        async def round_() -> None:
            delta = await trio.to_thread.run_sync(partial(_read, engine, cursor), limiter=limiter)
            _apply(metrics, delta)
            running = [services] if services_of is None else list(services_of())
            for one in running:
                if one is services:
                    _apply_service(metrics, one, cursor)
                else:
                    _apply_service(metrics, one, cursors.setdefault(id(one), (one, _Cursor()))[1])
            for gone in cursors.keys() - {id(one) for one in running}:
                del cursors[gone]
            metrics.connections.set(sum(one.ingest_stats.connected_now for one in running))
            for one in running:
                if one.config_index is not None:  # several accounts: each one's own too
                    metrics.account_connections.labels(account=str(one.config_index)).set(
                        one.ingest_stats.connected_now
                    )

        await round_()
        task_status.started()
        while True:
            with trio.move_on_after(interval):
                await services.stop.wait()
            # The last round is one that began after the stop: a stop during a round (its read already done) would
            # otherwise leave out what was committed just before the stop.
            stopping = services.stop.is_set()
            await round_()
            if stopping:
                return

    return update_metrics
