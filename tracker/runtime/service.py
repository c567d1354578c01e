"""``run_tracker``: the service's one nursery. The writer, ingest and (later) the projector, backfill and reconciler.

Shutdown order is what makes "everything received is committed" true:

1. ``stop`` is set (SIGINT/SIGTERM, or the caller).
2. Ingest closes each connection losslessly (unsubscribe, heartbeat barrier, close) and returns; every producer
   closes its clone of the writer's send channel as it ends.
3. The writer sees the channel end, commits what is left, and returns. Nothing cancels the writer.

If ingest has not finished ``stop_grace`` seconds after the stop, its scope is cancelled (frames already read are
still handed to the writer: those sends are shielded), and the writer drains as above.

A run that fails (a refused key on a reconnect's token call, a bug in ingest) ends the same way before the error goes
on: the producers are gone, so the writer commits what it was handed and returns (within ``stop_grace``; a writer
that cannot commit in that time, the database gone too, is cancelled and spills to the side file, ``writer.py``).

One writer per account (``tracker/runtime/lease.py``): on SQLite the database file is locked before anything connects
(a second ``tracker run`` on it fails at once); on PostgreSQL the account's lease is taken right after a token call
tells which account the key belongs to, before subscribing. If another process holds it, this one waits as a hot
standby and goes on (subscribe, backfill) when it gets it. The writer appends only while the lease is held; the lease
is released after the writer's last commit.

Extra tasks (projector, backfill, reconciler) plug in through ``extra_tasks``: each is called as
``await nursery.start(task, services)`` and must honour ``services.stop`` or be cancelled at shutdown. Each runs under
``supervise.supervise_task``: a database outage or a bug in one of them never ends the run (it is started again;
live ingest goes on); a ``TrackerError`` from one does.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import trio

from tracker.config import Settings
from tracker.errors import StoreError
from tracker.exchange.rest import BitstampClient
from tracker.runtime.append_combiner import AppendCombiner
from tracker.runtime.early_signals import STOP_SIGNALS, EarlySignals, StartUpStopped, signal_name
from tracker.runtime.ingest import IngestOptions, IngestStats, run_ingest
from tracker.runtime.lease import WriteGate, hold_account_lease, open_file_lock
from tracker.runtime.loop_append import LoopAppend, loop_append
from tracker.runtime.polite_api import call_at_start
from tracker.runtime.supervise import supervise_task
from tracker.runtime.writer import Item, WriterStats, run_writer
from tracker.store.errors import is_transient
from tracker.store.event_log import EventLog
from tracker.store.integrity import unsaved_path
from tracker.store.lease import LeaseLost, account_lease_for

if TYPE_CHECKING:  # the tasks' modules import this one for ``Services``
    from tracker.runtime.backfill import Backfiller
    from tracker.runtime.ledger_capture import LedgerCapture
    from tracker.runtime.projector import ProjectorStatus
    from tracker.runtime.reconciler import Reconciler
    from tracker.runtime.task_board import TaskBoard

log = logging.getLogger("tracker.service")

WRITER_BUFFER = 4096


@dataclass
class Services:
    """What a running tracker exposes to extra tasks, metrics and tests."""

    settings: Settings
    stop: trio.Event
    log: EventLog
    writer_stats: WriterStats
    ingest_stats: IngestStats
    db_limiter: trio.CapacityLimiter  # one writer at a time: the writer task, backfill appends, projection catch-up
    account: str | None = None  # known once the first token call answered
    # PostgreSQL: when this process took the account's writer lease (None: stopped while a standby, or SQLite).
    lease_acquired_at: datetime | None = None
    # Set by the extra tasks as they start (status, metrics and tests read them).
    projector: ProjectorStatus | None = None
    backfiller: Backfiller | None = None
    reconciler: Reconciler | None = None
    ledger: LedgerCapture | None = None
    combiner: AppendCombiner | None = None  # several accounts in one process (run_accounts)
    config_index: int | None = None  # and the account's place in the config file (metrics' ``account`` label)
    # Extra tasks' failures that did not stop the run, per task (supervise.py; the tracker_task_failures metric).
    task_failures: Counter[str] = field(default_factory=Counter)
    # Where they are recorded for tracker status (task_board.py): the process's, given by run_app or run_accounts.
    task_board: TaskBoard | None = None

    @classmethod
    def starting(
        cls, settings: Settings, stop: trio.Event, log: EventLog, combiner: AppendCombiner | None = None
    ) -> Services:
        """A service's state before anything runs: empty stats, its own database limiter."""
        return cls(
            settings=settings,
            stop=stop,
            log=log,
            writer_stats=WriterStats(),
            ingest_stats=IngestStats(),
            db_limiter=trio.CapacityLimiter(1),
            combiner=combiner,
        )


class TaskStarter(Protocol):
    """An extra task: ``await nursery.start(starter, services)``; it reports ``started`` once ready and returns (or
    is cancelled) after ``services.stop``."""

    __qualname__: str

    def __call__(self, services: Services, *, task_status: trio.TaskStatus[Any] = ...) -> Awaitable[None]: ...


class StopSignals:
    """SIGINT/SIGTERM for a whole run (``open_stop_signals``). The first sets ``stop``; one that comes during a
    ``start_up`` block (nothing received yet) abandons the block, which raises ``StartUpStopped``. Later signals are
    absorbed, one log line each: a second Ctrl-C cannot abort a commit half-way, and the stop is bounded anyway
    (``stop_grace``: ingest's close, then the writer's last tries in a database outage; the module docstring)."""

    def __init__(self, stop: trio.Event, received: int | None = None) -> None:
        self.stop = stop
        self.received = received  # the first stop signal (one the start recorded before trio ran, too)
        self._start_ups: set[trio.CancelScope] = set()
        if received is not None:
            stop.set()

    async def watch(
        self, signals: AsyncIterator[int], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async for signum in signals:
            name = signal_name(signum)
            if self.received is not None or self.stop.is_set():
                log.info("received %s again: already stopping", name)
                continue
            self.received = signum
            self.stop.set()
            for scope in self._start_ups:
                scope.cancel()  # its StartUpStopped is the line that says so
            if not self._start_ups:
                log.info("received %s: stopping (committing everything received)", name)

    @contextmanager
    def start_up(self, phase: str) -> Iterator[None]:
        """A part of the start-up before anything is received (``phase``: what it does, for the line): a stop signal
        (before it, or during it) abandons it with ``StartUpStopped``."""
        scope = trio.CancelScope()
        if self.received is not None:
            scope.cancel()
        self._start_ups.add(scope)
        try:
            with scope:
                yield
        finally:
            self._start_ups.discard(scope)
        if self.received is not None:
            raise StartUpStopped(signal_name(self.received), phase)


@asynccontextmanager
async def open_stop_signals(stop: trio.Event, early: EarlySignals | None = None) -> AsyncIterator[StopSignals]:
    """SIGINT/SIGTERM as ``stop`` for the block (``StopSignals``); ``early``: the signals the process recorded before
    trio ran (``early_signals.py``), one of which counts as received here."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        handler = StopSignals(stop, early.received if early is not None else None)
        async with trio.open_nursery() as nursery:
            await nursery.start(handler.watch, signals)
            try:
                yield handler
            finally:
                nursery.cancel_scope.cancel()


def _loop_append(event_log: EventLog, gate: WriteGate, combiner: AppendCombiner | None) -> LoopAppend | None:
    """The writer's appends driven from the event loop: combined with the process's other accounts' (either backend),
    else its own on PostgreSQL (SQLite's are the thread's)."""
    if combiner is not None:
        return combiner.loop_append(gate)
    return loop_append(event_log, gate) if event_log.engine.dialect.name == "postgresql" else None


async def watch_signals(
    stop: trio.Event, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """SIGINT/SIGTERM as ``stop`` (``StopSignals``) until ``scope`` is cancelled (when the run is over)."""
    with scope, trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        await StopSignals(stop).watch(signals, task_status=task_status)


async def _cancel_at_stop(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


GAVE_UP = "stopping: the database did not answer within the stop's grace"


async def _give_up_after(give_up: trio.Event, gate: WriteGate, writer_done: trio.Event, grace: float) -> None:
    """Started at the stop: ``grace`` seconds later, a writer still at work gives up at its next failed try
    (``give_up``; writer.py). One waiting for the lease (its connection lost in the outage: the gate closed, the lease
    task trying to take it again until the writer is done) is woken to do so: the gate is failed, now or when it
    closes later."""
    with trio.move_on_after(grace):
        await writer_done.wait()
    if writer_done.is_set():
        return
    give_up.set()
    while not writer_done.is_set():
        if not gate.is_open and gate.lost is None:
            gate.fail(GAVE_UP)
        with trio.move_on_after(0.25):  # the gate is the threads' (threading.Event): polled, as wait_open polls it
            await writer_done.wait()


class NotCommitted(StoreError):
    """The stop's grace ran out in a database outage: frames received were not committed (``require_committed``)."""


def require_committed(stats: Iterable[WriterStats], grace: float) -> None:
    """Raise ``NotCommitted``, one line, when a writer gave up frames at the stop (``WriterStats.not_committed``).

    The line says what the next run does about them, and that is true: its start-up backfill walks every REST source
    from the cursors of the last walk this log recorded (backfill.py), which came before any frame of this run that
    was not committed, so every fill, order and settlement among them is fetched again; self-trade and liquidation
    alerts have no REST source (docs/bitstamp.md): ``tracker db import-unsaved`` appends them from the side file."""
    gave_up = [one for one in stats if one.not_committed]
    if not gave_up:
        return
    count = sum(one.not_committed for one in gave_up)
    files = ", ".join(sorted({str(one.unsaved) for one in gave_up if one.unsaved is not None}))
    raise NotCommitted(
        f"stopped with the database unavailable for the stop's {grace:g} s grace: {count} received frame(s) not"
        f" committed (saved in {files}: `tracker db import-unsaved <file>` appends them once the database is back);"
        " the next `tracker run` also recovers them from the exchange's REST API in its start-up backfill (all but"
        " self-trade and liquidation alerts, which REST does not report)"
    )


async def run_tracker(
    settings: Settings,
    event_log: EventLog,
    *,
    stop: trio.Event | None = None,
    handle_signals: bool = True,
    client: BitstampClient | None = None,
    ingest_options: IngestOptions | None = None,
    extra_tasks: Sequence[TaskStarter] = (),
    stop_grace: float | None = None,
    combiner: AppendCombiner | None = None,
    file_lock: bool = True,
    task_board: TaskBoard | None = None,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> Services:
    """Run until ``stop`` is set (or a signal arrives); returns the services with final stats. Exit is clean.

    One piece on purpose (~95 lines): it is the task tree of the module docstring written out, the nesting of the
    file lock, the nursery, the producers' nursery and the writer's channel is what orders the shutdown, and pieces
    of it in other functions would hide that order behind calls.

    ``stop_grace``: after a stop, how long ingest may take to close and a writer in a database outage keeps trying
    (the module docstring); ``settings.stop_grace_s`` (``TRACKER_STOP_GRACE``) unless given.

    ``combiner``: the live appends of this and other accounts' writers in this process go through it
    (``run_accounts``); ``file_lock`` False: the caller holds the SQLite file's lock for every account it runs.
    ``task_board``: where the extra tasks' contained failures are recorded for ``tracker status`` (the process's:
    ``task_board.py``)."""
    stop = trio.Event() if stop is None else stop
    grace = settings.stop_grace_s if stop_grace is None else stop_grace
    api_key, api_secret = settings.require_credentials()
    own_client = client is None
    client = client or BitstampClient(settings.api_url, api_key, api_secret)
    services = Services.starting(settings, stop, event_log, combiner)
    services.task_board = task_board
    engine = event_log.engine
    gate = WriteGate()
    writer_done = trio.Event()
    give_up = trio.Event()  # the stop's grace is over: the writer's next failed try is its last

    def retry_if(error: BaseException) -> bool:
        """A database outage; or, once the writer gives up, the lease it was waiting for (``_give_up_after_stop``)."""
        return is_transient(error) or (isinstance(error, LeaseLost) and gate.lost == GAVE_UP)

    async def at_stop() -> None:
        """The stop's grace: then ingest's close is cancelled (frames read still handed over), and a writer still
        failing gives up (``_give_up_after``, outside the producers: the writer outlives them)."""
        await stop.wait()
        producers.cancel_scope.deadline = trio.current_time() + grace
        nursery.start_soon(_give_up_after, give_up, gate, writer_done, grace)

    async def write() -> None:
        try:
            await run_writer(
                gate.guard(event_log.append),
                receive,
                stats=services.writer_stats,
                limiter=services.db_limiter,
                retry_if=retry_if,
                give_up=give_up,
                spill_to=lambda: unsaved_path(engine),  # frames the database cannot take: beside it (writer.py)
                loop_append=_loop_append(event_log, gate, combiner),
            )
        finally:
            writer_done.set()

    try:
        with open_file_lock(event_log) if file_lock else nullcontext():
            async with trio.open_nursery() as nursery:
                signal_scope = trio.CancelScope()
                if handle_signals:
                    await nursery.start(watch_signals, stop, signal_scope)
                send, receive = trio.open_memory_channel[Item](WRITER_BUFFER)
                nursery.start_soon(write)
                # The producers own the writer's channel: when they are all gone, the writer drains and returns.
                try:
                    async with send, trio.open_nursery() as producers:
                        lease = None
                        if engine.dialect.name == "postgresql":
                            # The account is known only from a token; the lease is taken before anything subscribes.
                            # A stop meanwhile abandons the call (nothing is received yet), as it ends a standby's wait.
                            with trio.CancelScope() as asking:
                                producers.start_soon(_cancel_at_stop, stop, asking)
                                token = await call_at_start("websockets_token/", client.websockets_token)
                                lease = account_lease_for(engine, token.user_id)
                        if lease is not None:
                            acquired_at = await nursery.start(hold_account_lease, lease, gate, stop, writer_done)
                            services.lease_acquired_at = acquired_at
                        # Not when stopped first: as a standby (no lease), or before the token or lease was had.
                        if not stop.is_set() and (lease is None or services.lease_acquired_at is not None):
                            producers.start_soon(at_stop)
                            ingest_ctx = await producers.start(
                                lambda task_status: run_ingest(
                                    client,
                                    settings.ws_url,
                                    send.clone(),
                                    markets=settings.markets,
                                    stop=stop,
                                    options=ingest_options,
                                    stats=services.ingest_stats,
                                    task_status=task_status,
                                )
                            )
                            services.account = ingest_ctx.account
                            for starter in extra_tasks:
                                await producers.start(supervise_task, starter, services)
                        task_status.started(services)
                except BaseException:
                    # The run fails (a refused key, a bug; not a stop): the producers are gone and the channel is
                    # closed, so the writer commits what it holds and returns, as at a stop. Bounded: a writer that
                    # cannot commit (the database gone too) is cancelled with the run and spills (writer.py).
                    with trio.move_on_after(grace) as drain:
                        drain.shield = True
                        await writer_done.wait()
                    raise
                signal_scope.cancel()
    finally:
        if own_client:
            with trio.CancelScope(shield=True):
                await client.aclose()
    stats = services.writer_stats
    log.info(
        "stopped: %d frames committed (%d duplicates, %d quarantined) in %d batches%s",
        stats.items,
        stats.duplicates,
        stats.quarantined,
        stats.batches,
        f"; {stats.not_committed} not committed (the database did not answer)" if stats.not_committed else "",
    )
    return services
