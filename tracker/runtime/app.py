"""What ``tracker run`` runs: the service (writer + ingest, see service.py) with its standard companions.

- the projector, which keeps the ``proj_*`` tables (the ``v_*`` views) up with the log;
- the recovery task: backfill at start-up and after every (re)connect, reconciliation every
  ``settings.reconcile_interval_s``;
- the metrics updater, when a ``Metrics`` is given.

Several accounts (the config file's ``[[accounts]]``) run in one process (``run_accounts``): one service per account,
each with its own connections, writer, lease, backfill, reconciliation and ledger capture, exactly as a process of its
own would run it; one projector for the database; one signal handler that stops them all; their live appends
combined (``append_combiner.py``: one lock turn and one commit for all the accounts' frames instead of one per
frame). Log lines carry ``account=N``, the account's place in the config file.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from tracker.config import ConfigError, Settings
from tracker.errors import TrackerError
from tracker.logs import account_context
from tracker.metrics import Metrics
from tracker.runtime.append_combiner import AppendCombiner
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.lease import open_file_lock
from tracker.runtime.metrics_task import metrics_task
from tracker.runtime.preflight import account_of, check_markets, same_accounts
from tracker.runtime.projector import projector_task
from tracker.runtime.recovery import recovery_task
from tracker.runtime.service import Services, TaskStarter, restart_on_db_outage, run_tracker, watch_signals
from tracker.store.engine import Engine
from tracker.store.event_log import EventLog


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
    task_status: trio.TaskStatus[list[Services]] = trio.TASK_STATUS_IGNORED,
) -> list[Services]:
    """``run_app`` for several accounts in this one process (the module docstring), until ``stop`` is set or
    SIGINT/SIGTERM arrives (with ``handle_signals``); everything each account received is committed. The markets and
    credentials of every account are checked before any connects (two keys of one Bitstamp account: an error); the
    services start together and are reported in config order once all have started. A failure that ends one
    account's service (not a transient one: those it rides out itself) ends the process, as it ends a process
    running that account alone. The projector and the metrics run once for the process, beside the accounts (a
    standby account waiting for its lease holds nothing up). ``companions`` False: the services without projector,
    backfill, reconciliation and metrics (benchmarks). ``metrics``: one set for the process (``metrics_task``'s
    ``services_of``)."""
    if len(accounts) < 2:
        raise ValueError("run_accounts is for two accounts or more: run_app runs one")
    users: list[str] = []
    for index, settings in enumerate(accounts, 1):
        with account_context(str(index)):
            try:
                await check_markets(settings)
                users.append(await account_of(settings))  # the credentials checked before anything starts
            except BaseException as error:
                _name_account(error, f"account {index} of [[accounts]]")
                raise
    if (same := same_accounts(users)) is not None:
        raise ConfigError(same)
    stop = trio.Event() if stop is None else stop
    combiner = AppendCombiner(EventLog(engine))
    # One event log for every account: their appends go one at a time through the log's lock anyway, and each
    # EventLog keeps a connection of its own. (The combiner's is apart: its turns must not wait for the accounts'
    # own thread appends, a backfill's say, on that connection.)
    event_log = EventLog(engine)
    # What the process runs once, beside the accounts (the projector, the metrics): under a service of its own, not
    # an account's, so that they run whether or not a given account is a standby waiting for its lease.
    process = Services.starting(accounts[0], stop, event_log, combiner)
    started: list[Services | None] = [None] * len(accounts)
    all_started = trio.Event()

    def running_services() -> list[Services]:
        return [services for services in started if services is not None]

    async def launch(index: int, settings: Settings) -> None:
        """Start account ``index``'s service (a standby's start waits for its lease: the others go on meanwhile)."""
        with account_context(str(index)):  # the service's tasks and threads inherit it
            started[index - 1] = await running.start(
                partial(
                    _run_account,
                    index,
                    settings,
                    event_log,
                    stop=stop,
                    handle_signals=False,
                    ingest_options=ingest_options,
                    extra_tasks=[recovery_task()] if companions else [],
                    combiner=combiner,
                    file_lock=False,
                )
            )
        if all(services is not None for services in started):
            all_started.set()

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
                for index, settings in enumerate(accounts, 1):
                    running.start_soon(launch, index, settings)
                await all_started.wait()
                task_status.started(running_services())
            signals.cancel()  # the projector and the metrics end at the stop by themselves
    return running_services()


async def _run_account(
    index: int, *args: Any, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED, **kwargs: Any
) -> Services:
    """``run_tracker(*args, **kwargs)`` for the config file's account ``index``: an error that ends it names the
    account (``tracker: error: account 2 of [[accounts]]: signature rejected: ...``)."""
    try:
        return await run_tracker(*args, task_status=task_status, **kwargs)
    except BaseException as error:
        _name_account(error, f"account {index} of [[accounts]]")
        raise


def _name_account(error: BaseException, label: str) -> None:
    """Prefix every ``TrackerError`` in ``error`` (a group's leaves too) with ``label``, once (an error the combined
    append raised in several accounts' writers is one object: it keeps the first account's name): the CLI prints the
    first one's message."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            _name_account(inner, label)
    elif isinstance(error, TrackerError) and error.args and not getattr(error, "account_named", False):
        error.args = (f"{label}: {error.args[0]}", *error.args[1:])
        error.account_named = True  # type: ignore[attr-defined]
