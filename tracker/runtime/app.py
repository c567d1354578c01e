"""What ``tracker run`` runs: the service (writer + ingest, see service.py) with its standard companions.

- the projector, which keeps the ``proj_*`` tables (the ``v_*`` views) up with the log;
- the recovery task: backfill at start-up and after every (re)connect, reconciliation every
  ``settings.reconcile_interval_s``;
- the metrics updater, when a ``Metrics`` is given.

Several accounts (the config file's ``[[accounts]]``) run in one process (``run_accounts``): one service per account,
each with its own connections, writer, lease, backfill, reconciliation and ledger capture, exactly as a process of its
own would run it; one projector for the database; one signal handler that stops them all; their live appends
combined (``append_combiner.py``: one lock turn and one commit for all the accounts' frames instead of one per
frame). Log lines carry ``account=N``, the account's place in the config file. One account's failure is its own: it
is down and tried again later while the others go on (``account_supervisor.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.lease import open_file_lock
from tracker.runtime.metrics_task import metrics_task
from tracker.runtime.preflight import account_of, check_markets, same_accounts
from tracker.runtime.projector import projector_task
from tracker.runtime.recovery import recovery_task
from tracker.runtime.service import Services, TaskStarter, restart_on_db_outage, run_tracker, watch_signals
from tracker.store.engine import Engine
from tracker.store.event_log import EventLog

log = logging.getLogger("tracker.service")


def standard_tasks(engine: Engine, *, metrics: Metrics | None = None) -> list[TaskStarter]:
    """The ``extra_tasks`` of a normal run. Build them just before ``run_tracker``: the recovery task's creation time
    splits this run's log entries from the previous run's, and metrics count from then on."""
    tasks: list[TaskStarter] = [projector_task(engine), recovery_task()]
    if metrics is not None:
        tasks.append(metrics_task(metrics, engine))
    return tasks


async def run_app(settings: Settings, engine: Engine, *, metrics: Metrics | None = None) -> None:
    """Check the configured markets against the exchange, then run until SIGINT/SIGTERM (everything committed)."""
    await check_markets(settings)
    await run_tracker(settings, EventLog(engine), extra_tasks=standard_tasks(engine, metrics=metrics))


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
    task_status: trio.TaskStatus[list[AccountState]] = trio.TASK_STATUS_IGNORED,
) -> list[AccountState]:
    """``run_app`` for several accounts in this one process (the module docstring), until ``stop`` is set or
    SIGINT/SIGTERM arrives (with ``handle_signals``); everything each account received is committed.

    The markets and credentials of every account are checked (at once) before any connects: two keys of one
    Bitstamp account are refused, and so is a start at which every account fails its check. An account that fails
    its check, or whose service later ends on an error of its own, is down: logged, ``tracker_account_up`` 0, started
    again after a back-off from ``retry_base_s``, while the others go on (``account_supervisor.py``). An error that
    is not one account's (the database, a bug) ends the process. The services start together; the accounts' states
    (``AccountState``: its service, or why it is down) are reported in config order once every account runs or is
    down, and returned at the end. The projector and the metrics run once for the process, beside the accounts (a
    standby account waiting for its lease holds nothing up). ``companions`` False: the services without projector,
    backfill, reconciliation and metrics (benchmarks). ``metrics``: one set for the process (``metrics_task``'s
    ``services_of``)."""
    if len(accounts) < 2:
        raise ValueError("run_accounts is for two accounts or more: run_app runs one")
    states = [AccountState(index, settings) for index, settings in enumerate(accounts, 1)]
    await _check_at_start(states, metrics)
    stop = trio.Event() if stop is None else stop
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

    def running_services() -> list[Services]:
        return [state.services for state in states if state.services is not None]

    async def check(state: AccountState) -> None:
        """An account's check before it starts again: the one at the start (``_check_at_start``), for one."""
        await _check(state)
        if (same := same_accounts([other.user for other in states])) is not None:
            state.user = None
            raise ConfigError(same)

    async def launch(state: AccountState) -> None:
        """Supervise account ``state`` (a standby's start waits for its lease: the others go on meanwhile)."""
        nonlocal reported

        async def service(*, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED) -> Services:
            """One start of the account's service. Its recovery task is made here, at each start: its creation time
            splits this run's log entries from the previous run's (a failed one's), so the start-up backfill walks
            from that run's last entry (``recovery_task``)."""
            return await run_tracker(
                state.settings,
                event_log,
                stop=stop,
                handle_signals=False,
                ingest_options=ingest_options,
                extra_tasks=[recovery_task()] if companions else [],
                combiner=combiner,
                file_lock=False,
                task_status=task_status,
            )

        with account_context(str(state.index)):  # the service's tasks and threads inherit it
            backoff = Backoff(base=retry_base_s, cap=max(RETRY_CAP_S, retry_base_s))
            await running.start(
                partial(supervise_account, state, check, service, stop, metrics=metrics, backoff=backoff)
            )
        reported += 1
        if reported == len(states):
            all_reported.set()

    with open_file_lock(event_log):  # SQLite: one lock on the file for every account this process writes
        async with trio.open_nursery() as nursery:
            signals = trio.CancelScope()
            if handle_signals:
                await nursery.start(watch_signals, stop, signals)
            if companions:
                once = [projector_task(engine)]
                if metrics is not None:
                    once.append(metrics_task(metrics, engine, services_of=running_services))
                for starter in once:
                    await nursery.start(restart_on_db_outage, starter, process)
            async with trio.open_nursery() as running:
                for state in states:
                    running.start_soon(launch, state)
                await all_reported.wait()
                task_status.started(states)
            signals.cancel()  # the projector and the metrics end at the stop by themselves
    for state in states:
        if state.down is not None:
            log.warning("%s was not tracked at the stop: %s", state.label, state.down)
    return states


async def _check(state: AccountState) -> None:
    """Account ``state``'s markets and credentials: one call to the markets list, one token call (which tells
    ``state.user``)."""
    with account_context(str(state.index)):
        await check_markets(state.settings)
        state.user = await account_of(state.settings)


async def _check_at_start(states: Sequence[AccountState], metrics: Metrics | None) -> None:
    """Every account's check, at once, before anything connects. An account that fails it on an error of its own
    is marked down (its supervisor tries again later); two keys of one account, or every account failing, end the
    start with the error (the first account's, named)."""
    failed: dict[int, BaseException] = {}

    async def one(state: AccountState) -> None:
        try:
            await _check(state)
        except BaseException as error:
            if not account_only(error):
                name_account(error, state.label)
                raise
            state.mark_down(error, metrics)
            name_account(error, state.label)  # for the error of a start at which every account failed
            failed[state.index] = error

    async with trio.open_nursery() as nursery:
        for state in states:
            nursery.start_soon(one, state)
    if (same := same_accounts([state.user for state in states])) is not None:
        raise ConfigError(same)
    if len(failed) == len(states):
        raise failed[min(failed)]
