"""What ``tracker run`` runs: the service (writer + ingest, see service.py) with its standard companions.

- the projector, which keeps the ``proj_*`` tables (the ``v_*`` views) up with the log;
- the recovery task: backfill at start-up and after every (re)connect, reconciliation every
  ``settings.reconcile_interval_s``;
- the metrics updater, when a ``Metrics`` is given.

The accounts of the config file's ``[[accounts]]`` (one or several) run in one process (``run_accounts``): one
service per account, each with its own connections, writer, lease, backfill, reconciliation and ledger capture,
exactly as a process of its own would run it; one projector for the database; one signal handler whose stop is every
account's (each account has a stop of its own besides); their live appends combined (``append_combiner.py``: one lock
turn and one commit for all the accounts' frames instead of one per frame). Log lines carry ``account=N``, the
account's place in the config file. One account's failure is its own: it is down and tried again later while the
others go on (``account_supervisor.py``); which accounts are down, why and until when is kept for ``tracker status``
while the process runs (``down_board.py``).

SIGHUP reloads the config file (``config_reload.py`` says what changed, ``_reload`` applies it): removed and changed
accounts are stopped, their writers drained, before added and changed ones are checked and started; unchanged ones
run on untouched, an account moved in the file taking its new place as label. A file that does not load, or changes
what only a restart can, changes nothing (one ERROR line). A run of the environment's one account (``run_app``) has
nothing to reload: SIGHUP is one warning line.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from functools import partial

import trio

from tracker.config import ConfigError, Settings
from tracker.logs import account_context
from tracker.metrics import Metrics
from tracker.runtime.account_supervisor import (
    RETRY_BASE_S,
    RETRY_CAP_S,
    AccountState,
    account_only,
    name_account,
    supervise_account,
)
from tracker.runtime.append_combiner import AppendCombiner
from tracker.runtime.backoff import Backoff
from tracker.runtime.config_reload import AccountsDiff, Reloads, diff_accounts, watch_hangups
from tracker.runtime.disk_watch import disk_watch
from tracker.runtime.down_board import open_down_board
from tracker.runtime.early_signals import EarlySignals
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.lease import open_file_lock
from tracker.runtime.metrics_task import metrics_task
from tracker.runtime.preflight import account_of, check_markets, same_accounts
from tracker.runtime.projector import projector_task
from tracker.runtime.recovery import recovery_task
from tracker.runtime.service import (
    Services,
    StopSignals,
    TaskStarter,
    open_stop_signals,
    require_committed,
    run_tracker,
)
from tracker.runtime.supervise import supervise_task
from tracker.runtime.task_board import open_task_board
from tracker.runtime.writer import WriterStats
from tracker.store.engine import Engine
from tracker.store.errors import first_line
from tracker.store.event_log import EventLog

log = logging.getLogger("tracker.service")


def standard_tasks(engine: Engine, *, metrics: Metrics | None = None) -> list[TaskStarter]:
    """The ``extra_tasks`` of a normal run. Build them just before ``run_tracker``: the recovery task's creation time
    splits this run's log entries from the previous run's, and metrics count from then on."""
    tasks: list[TaskStarter] = [projector_task(engine), recovery_task(), disk_watch(engine)]
    if metrics is not None:
        tasks.append(metrics_task(metrics, engine))
    return tasks


async def run_app(
    settings: Settings,
    engine: Engine,
    *,
    metrics: Metrics | None = None,
    early: EarlySignals | None = None,
    stop_grace: float | None = None,
) -> None:
    """Check the configured markets against the exchange, then run until SIGINT/SIGTERM (everything committed). A
    SIGHUP has nothing to reload (the account is the environment's and the flags'): one WARNING line, and it goes
    on.

    SIGINT/SIGTERM are this run's from its first line (``early``: those the process recorded before trio ran): one
    before the service subscribes abandons the start-up (``StartUpStopped``); after, it is the service's lossless stop.
    A stop whose writer gave frames up in a database outage ends with ``NotCommitted`` (``require_committed``).
    ``stop_grace``: ``settings.stop_grace_s`` unless given (``run_tracker``)."""
    grace = settings.stop_grace_s if stop_grace is None else stop_grace
    stop = trio.Event()
    async with open_stop_signals(stop, early) as signals:
        with trio.open_signal_receiver(signal.SIGHUP) as hangups:
            with signals.start_up("checking the markets"):
                await check_markets(settings)
            event_log = EventLog(engine)
            # The task failures, for `tracker status` (task_board.py): under the SQLite file's lock, which tells
            # status they are ours.
            with open_file_lock(event_log):
                async with open_task_board(engine) as board, trio.open_nursery() as nursery:
                    hangup_scope = trio.CancelScope()
                    await nursery.start(watch_hangups, hangups, stop, None, hangup_scope)
                    services = await run_tracker(
                        settings,
                        event_log,
                        stop=stop,
                        handle_signals=False,
                        extra_tasks=standard_tasks(engine, metrics=metrics),
                        stop_grace=grace,
                        file_lock=False,
                        task_board=board,
                    )
                    hangup_scope.cancel()
    require_committed([services.writer_stats], grace)


async def run_accounts(
    accounts: Sequence[Settings],
    engine: Engine,
    *,
    metrics: Metrics | None = None,
    stop: trio.Event | None = None,
    handle_signals: bool = True,
    ingest_options: IngestOptions | None = None,
    companions: bool = True,
    retry_base_s: float = RETRY_BASE_S,
    reload_from: Callable[[], Sequence[Settings]] | None = None,
    reloads: Reloads | None = None,
    max_accounts: int | None = None,
    early: EarlySignals | None = None,
    stop_grace: float | None = None,
    task_status: trio.TaskStatus[list[AccountState]] = trio.TASK_STATUS_IGNORED,
) -> list[AccountState]:
    """``run_app`` for the accounts of the config file in this one process (the module docstring), until ``stop`` is
    set or SIGINT/SIGTERM arrives (with ``handle_signals``); everything each account received is committed.

    The markets and credentials of every account are checked (at once) before any connects: two keys of one
    Bitstamp account are refused, and so is a start at which every account fails its check. An account that fails
    its check, or whose service later ends on an error of its own, is down: logged, ``tracker_account_up`` 0, started
    again after a back-off from ``retry_base_s``, while the others go on (``account_supervisor.py``). An error that
    is not one account's (the database, a bug) ends the process. The services start together; the accounts' states
    (``AccountState``: its service, or why it is down) are reported in config order once every account runs or is
    down (the list is kept current by reloads), and returned at the end. The projector and the metrics run once for
    the process, beside the accounts (a standby account waiting for its lease holds nothing up). ``companions``
    False: the services without projector, backfill, reconciliation and metrics (benchmarks). ``metrics``: one set
    for the process (``metrics_task``'s ``services_of``).

    ``reload_from``: how the accounts are read again (``load_accounts`` with the start's flags); each request of
    ``reloads`` (SIGHUP with ``handle_signals``; a test's ``reloads.request()``) applies the file as it is then
    (``_reload``); one listing more than ``max_accounts`` is refused. Without it a SIGHUP is logged as having nothing
    to reload.

    With ``handle_signals`` the stop signals are this run's from its first line (``early``: those the process
    recorded before trio ran): one during the accounts' check abandons the start (``StartUpStopped``), nothing having
    been received. A stop at which a writer gave frames up in a database outage ends with ``NotCommitted`` once every
    account has stopped (``require_committed``). ``stop_grace``: the accounts' shared ``stop_grace_s`` unless given
    (a setting of the process: a reload that changes it is refused, ``config_reload.RESTART_ONLY``)."""
    if not accounts:
        raise ValueError("run_accounts needs one account or more")
    grace = accounts[0].stop_grace_s if stop_grace is None else stop_grace
    stop = trio.Event() if stop is None else stop
    async with _stop_signals(handle_signals, stop, early) as signals:
        if reload_from is not None and reloads is None:
            reloads = Reloads()
        states = [AccountState(index, settings) for index, settings in enumerate(accounts, 1)]
        with signals.start_up("checking the accounts' markets and keys") if signals is not None else nullcontext():
            await _check_at_start(states, metrics)
        writers: list[WriterStats] = []  # of every service that ran, for require_committed at the end
        combiner = AppendCombiner(EventLog(engine))
        # One event log for every account: their appends go one at a time through the log's lock anyway, and each
        # EventLog keeps a connection of its own. (The combiner's is apart: its turns must not wait for the accounts'
        # own thread appends, a backfill's say, on that connection.)
        event_log = EventLog(engine)
        # What the process runs once, beside the accounts (the projector, the metrics): under a service of its own, not
        # an account's, so that they run whether or not a given account is a standby waiting for its lease.
        process = Services.starting(accounts[0], stop, event_log, combiner)
        reported = 0
        all_reported = trio.Event()
        reloading = trio.CancelScope()

        def running_services() -> list[Services]:
            return [state.services for state in states if state.services is not None]

        async def check(state: AccountState) -> None:
            """An account's check before it starts again: the one at the start (``_check_at_start``), for one."""
            await _check(state)
            if (same := same_accounts((other.index, other.user) for other in states)) is not None:
                state.user = None
                raise ConfigError(same)

        async def supervise(
            state: AccountState, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            """Supervise account ``state`` until its own stop (a standby's start waits for its lease: the others go on
            meanwhile); ``state.ended`` once it returned, its writer drained."""

            async def service(*, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED) -> Services:
                """One start of the account's service. Its recovery task is made here, at each start: its creation time
                splits this run's log entries from the previous run's (a failed one's), so the start-up backfill walks
                from that run's last entry (``recovery_task``); and a start after a spell down has the reason logged
                in the start-up gap's detail, written under the account's writer (and lease), its user known again:
                the log says why the account was not tracked, not only that."""
                return await run_tracker(
                    state.settings,
                    event_log,
                    stop=state.stop,
                    handle_signals=False,
                    ingest_options=ingest_options,
                    extra_tasks=[recovery_task(down=state.down)] if companions else [],
                    stop_grace=grace,
                    combiner=combiner,
                    file_lock=False,
                    task_board=process.task_board,
                    task_status=task_status,
                )

            if stop.is_set():  # started by a reload the process's stop overtook
                state.stop.set()
            state.on_change = board.notify
            try:
                with account_context(state):  # the service's tasks and threads inherit it (read at each line)
                    backoff = Backoff(base=retry_base_s, cap=max(RETRY_CAP_S, retry_base_s))
                    await supervise_account(
                        state, check, service, state.stop, metrics=metrics, backoff=backoff, task_status=task_status
                    )
            finally:
                if state.services is not None:
                    writers.append(state.services.writer_stats)
                state.ended.set()

        async def launch(state: AccountState) -> None:
            nonlocal reported
            await running.start(supervise, state)
            reported += 1
            if reported == len(accounts):
                all_reported.set()

        async def stop_all() -> None:
            """The process's stop is every account's (a reload under way is abandoned: the accounts it stopped are
            draining, the ones it had not started yet never start)."""
            await stop.wait()
            reloading.cancel()
            for state in states:
                state.stop.set()

        async def reloader() -> None:
            assert reload_from is not None and reloads is not None
            with reloading:
                while True:
                    await reloads.next()
                    read_again = partial(_read_again, reload_from, max_accounts)
                    await _reload(states, read_again, reloads, check, start, metrics)
                    board.notify()  # removed and moved accounts

        def start(state: AccountState) -> trio.Event:
            """Account ``state``'s supervisor started by a reload: in ``running`` from the first moment (a stop
            meanwhile must not cancel its service's start), the event set once it runs or is down."""
            status = Reported()
            running.start_soon(partial(supervise, state, task_status=status))
            return status.event

        # SQLite: one lock for every account. The accounts down, for `tracker status` (down_board.py): under the
        # file's lock, which tells status it is ours.
        with open_file_lock(event_log), _hangup_receiver(signals is not None) as hangups:
            async with (
                open_down_board(engine, lambda: states) as board,
                open_task_board(engine) as task_board,
                trio.open_nursery() as nursery,
            ):
                process.task_board = task_board
                hangup_scope = trio.CancelScope()
                if hangups is not None:
                    await nursery.start(watch_hangups, hangups, stop, reloads, hangup_scope)
                if companions:
                    once = [projector_task(engine), disk_watch(engine)]
                    if metrics is not None:
                        once.append(metrics_task(metrics, engine, services_of=running_services))
                    for starter in once:
                        await nursery.start(supervise_task, starter, process)
                async with trio.open_nursery() as running:
                    running.start_soon(stop_all)
                    for state in states:
                        running.start_soon(launch, state)
                    await all_reported.wait()
                    if reload_from is not None:
                        running.start_soon(reloader)
                    task_status.started(states)
                hangup_scope.cancel()  # the projector and the metrics end at the stop by themselves
        for state in states:
            if state.down is not None:
                log.warning("%s was not tracked at the stop: %s", state.label, state.down)
        require_committed(writers, grace)
        return states


def _stop_signals(
    handle_signals: bool, stop: trio.Event, early: EarlySignals | None
) -> AbstractAsyncContextManager[StopSignals | None]:
    """SIGINT/SIGTERM as ``stop`` for the whole run (``open_stop_signals``), when this run handles signals."""
    return open_stop_signals(stop, early) if handle_signals else nullcontext()


def _hangup_receiver(handle_signals: bool) -> AbstractContextManager[AsyncIterator[int] | None]:
    """SIGHUP caught for the whole run (its default would end the process), when this run handles signals."""
    return trio.open_signal_receiver(signal.SIGHUP) if handle_signals else nullcontext()


async def _reload(
    states: list[AccountState],
    read_again: Callable[[Sequence[Settings]], Awaitable[tuple[tuple[Settings, ...], AccountsDiff]]],
    reloads: Reloads,
    check: Callable[[AccountState], Awaitable[None]],
    start: Callable[[AccountState], trio.Event],
    metrics: Metrics | None,
) -> None:
    """One reload: the config read again off the event loop, exactly as at the start; what changed
    (``diff_accounts``) applied to ``states`` (the accounts running, in file order: kept so). Removed and restarted
    accounts are stopped, each one's writer drained, before any new one starts (a rotated key of one Bitstamp account
    must not meet its old key); unchanged ones run on, taking their new place as label; new ones are checked, as at
    the start (a failure, or a key of an account already tracked, makes one down: its supervisor tries it again
    after a back-off), then started (``start``). Anything wrong with the new file: one ERROR line, nothing changed.
    """
    refused = None
    try:
        new, diff = await read_again([state.settings for state in states])
    except Exception as error:  # a file that fails to load in any way (bad TOML, a secret file gone...): never a crash
        refused = f"config not reloaded: {first_line(error)}; kept the running config"
    if refused is not None:
        log.error("%s", refused)
        reloads.finished(refused)
        return
    at = {state.index: state for state in states}
    going = [at[place] for place in diff.stopping]
    kept = [at[old] for old, _ in diff.unchanged]
    states[:] = kept  # the process's stop meanwhile stops what runs; the going ones are stopping already
    for state in going:
        state.stop.set()
    for state in going:
        await state.ended.wait()  # its writer committed everything it received
    for state in going:
        state.forget_metrics(metrics)
    moves = [(at[old], new_place) for old, new_place in diff.unchanged if old != new_place]
    for state, _ in moves:
        state.forget_metrics(metrics)  # all first: one's old number may be another's new one
    for state, place in moves:
        state.move_to(place, metrics)
    fresh = [AccountState(place, new[place - 1]) for place in diff.starting]
    states[:] = sorted([*kept, *fresh], key=lambda state: state.index)
    await _check_new(fresh, check, metrics)
    reported = [start(state) for state in fresh]  # at once
    outcome = diff.summary()
    log.info("%s", outcome)  # applied: what follows only waits
    for event in reported:
        await event.wait()
    reloads.finished(outcome)


async def _read_again(
    reload_from: Callable[[], Sequence[Settings]], max_accounts: int | None, running: Sequence[Settings]
) -> tuple[tuple[Settings, ...], AccountsDiff]:
    """The accounts read again (in a thread: the file and the secret files are read) and what changed from
    ``running``; the loader's or the diff's error raised."""
    new = tuple(await trio.to_thread.run_sync(reload_from))
    diff = diff_accounts(running, new, max_accounts=max_accounts)  # first: a file without [[accounts]] says so
    for one in new:
        one.require_credentials()
    return new, diff


class Reported:
    """A task status for a task started with ``start_soon``: ``event`` is set at its ``started``."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: object = None) -> None:
        self.event.set()


async def _check(state: AccountState) -> None:
    """Account ``state``'s markets and credentials: one call to the markets list, one token call (which tells
    ``state.user``)."""
    with account_context(state):
        await check_markets(state.settings)
        state.user = await account_of(state.settings)


async def _check_at_start(states: Sequence[AccountState], metrics: Metrics | None) -> None:
    """Every account's check, at once, before anything connects. An account that fails it on an error of its own
    is marked down (its supervisor tries again later); two keys of one account, or every account failing, end the
    start with the error (the first account's, named)."""
    failed = await _check_each(states, _check, metrics)
    for state in states:
        if state.index in failed:
            name_account(failed[state.index], state.label)  # for the error of a start at which every account failed
    if (same := same_accounts((state.index, state.user) for state in states)) is not None:
        raise ConfigError(same)
    if len(failed) == len(states):
        raise failed[min(failed)]


async def _check_new(
    fresh: Sequence[AccountState], check: Callable[[AccountState], Awaitable[None]], metrics: Metrics | None
) -> None:
    """The check of accounts a reload adds or restarts, at once: one that fails it on an error of its own is down (its
    supervisor waits a back-off, then checks it again); an error that is not one account's ends the process, as at
    the start."""
    await _check_each(fresh, check, metrics)


async def _check_each(
    states: Sequence[AccountState], check: Callable[[AccountState], Awaitable[None]], metrics: Metrics | None
) -> dict[int, BaseException]:
    """``check`` every account of ``states`` at once. One that fails on an error of its own is marked down; the
    errors are returned by the account's place. An error that is not one account's is raised, named."""
    failed: dict[int, BaseException] = {}

    async def one(state: AccountState) -> None:
        try:
            await check(state)
        except BaseException as error:
            if not account_only(error):
                name_account(error, state.label)
                raise
            state.mark_down(error, metrics)
            failed[state.index] = error

    async with trio.open_nursery() as nursery:
        for state in states:
            nursery.start_soon(one, state)
    return failed
