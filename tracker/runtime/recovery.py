"""Wiring backfill, ledger capture and reconciliation: one builder from settings, used by ``tracker run``
(``recovery_task``: the backfill watcher, the ledger capture and the periodic reconciler beside ingest) and by
``tracker reconcile`` (``reconcile_once``).

All share the same pieces: a ``PoliteApi`` over a ``BitstampClient`` (one rate budget), the account's markets
(configured, else discovered) and their display names, a ``LogSink`` and a ``ProjectionReader`` behind one one-writer
limiter (the service's, so there is still one SQLite writer at a time), the ``Backfiller``, the ``LedgerCapture``
(the main account and ``settings.subaccounts``) and the ``Reconciler`` over them.

A sub-account with its own API key (``settings.subaccount_keys``) gets its own ``BitstampClient`` (no
``X-Auth-Subaccount-Id`` header: the key says which account [D]) and its own ``PoliteApi`` over the same
``RateLimiter`` (one rate budget per process); those clients are opened and closed with the main one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import trio

from tracker.config import Settings
from tracker.domain.backfill import BackfillOptions
from tracker.domain.rows import OrderRow
from tracker.domain.timeutil import utc_now
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backfill import Backfiller, market_names, watch_and_backfill
from tracker.runtime.ingest import discover_markets
from tracker.runtime.ledger_capture import LedgerCapture
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi, RateLimiter
from tracker.runtime.reconciler import ProjectionReader, ReconcileOptions, Reconciler, ReconcileResult, run_periodic
from tracker.runtime.service import Services, TaskStarter
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore


@dataclass(frozen=True, slots=True)
class Recovery:
    backfiller: Backfiller
    reconciler: Reconciler
    ledger: LedgerCapture


async def build_recovery(
    client: BitstampClient,
    settings: Settings,
    event_log: EventLog,
    db_limiter: trio.CapacityLimiter,
    *,
    account: str,
    limiter: RateLimiter | None = None,
    backfill_options: BackfillOptions | None = None,
    reconcile_options: ReconcileOptions | None = None,
    wall: Callable[[], datetime] | None = None,
    subaccount_clients: Mapping[str, BitstampClient] | None = None,
) -> Recovery:
    """The backfiller and reconciler of ``account`` (asks the exchange for the markets and their names).
    ``subaccount_clients``: the clients of the sub-accounts with their own API key (``open_subaccount_clients``)."""
    api = PoliteApi(client, limiter)
    own_apis: dict[str, PoliteApi] = {}
    for tai, sub_client in (subaccount_clients or {}).items():
        own_apis[tai] = PoliteApi(sub_client, api.limiter)  # one rate budget per process
        own_apis[tai].stats = api.stats
    markets = tuple(settings.markets) if settings.markets else await discover_markets(client)
    names = await market_names(api)
    # Projection catch-up behind the writer's limiter: one SQLite writer at a time, no busy-waiting.
    reader = ProjectionReader(ProjectionStore(event_log.engine), event_log, db_limiter)

    async def projected_open_orders() -> list[OrderRow]:
        await reader.catch_up()
        return await reader.open_orders(account)

    sink = LogSink(event_log, db_limiter)
    backfiller = Backfiller(
        api,
        sink,
        account=account,
        markets=markets,
        names=names,
        options=backfill_options,
        projected_open_orders=projected_open_orders,
    )
    ledger = LedgerCapture(
        api,
        sink,
        account=account,
        trade_accounts=("0", *settings.subaccounts),
        interval_s=settings.ledger_interval_s,
        wall=wall or utc_now,
        own_apis=own_apis,
    )
    reconciler = Reconciler(backfiller, reader, options=reconcile_options, wall=wall, ledger=ledger)
    return Recovery(backfiller, reconciler, ledger)


def client_from(settings: Settings) -> BitstampClient:
    key, secret = settings.require_credentials()
    return BitstampClient(settings.api_url, key, secret)


@asynccontextmanager
async def open_subaccount_clients(
    settings: Settings, make: Callable[[str, str, str], BitstampClient] | None = None
) -> AsyncIterator[dict[str, BitstampClient]]:
    """A ``BitstampClient`` per sub-account with its own API key (``settings.subaccount_keys``), closed on exit;
    ``make(api_url, key, secret)`` builds one (tests)."""
    build = make or BitstampClient
    async with AsyncExitStack() as stack:
        clients: dict[str, BitstampClient] = {}
        for sub in settings.subaccount_keys:
            if sub.ident in settings.subaccounts:
                key, secret = sub.reveal()
                clients[sub.ident] = await stack.enter_async_context(build(settings.api_url, key, secret))
        yield clients


def recovery_task(
    *,
    started_at: datetime | None = None,
    client_factory: Callable[[Settings], BitstampClient] | None = None,
    reconcile_interval_s: float | None = None,
    backfill_options: BackfillOptions | None = None,
    limiter: RateLimiter | None = None,
    down: str | None = None,
) -> TaskStarter:
    """An ``extra_tasks`` starter for ``run_tracker``: the backfill watcher and the periodic reconciler.

    Build it just before ``run_tracker`` (``started_at`` defaults to now: the log entries of this run are the ones
    received from then on, and the start-up window runs from the previous run's last entry). The starter makes its own
    ``BitstampClient`` from the settings (or ``client_factory(settings)``), shares the service's ``db_limiter`` for
    appends, and exposes the ``Backfiller``, ``Reconciler`` and ``LedgerCapture`` as ``services.backfiller`` /
    ``services.reconciler`` / ``services.ledger``.
    ``reconcile_interval_s`` defaults to ``settings.reconcile_interval_s`` (0 or less: no periodic runs).
    ``down``: why the account was down before this start (``run_accounts``), for the start-up gap's detail.
    """
    since = started_at or utc_now()

    async def run_recovery(
        services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        settings = services.settings
        if services.account is None:
            raise RuntimeError("recovery_task started before ingest knew the account")
        async with (client_factory or client_from)(settings) as client, open_subaccount_clients(settings) as subs:
            recovery = await build_recovery(
                client,
                settings,
                services.log,
                services.db_limiter,
                account=services.account,
                limiter=limiter,
                backfill_options=backfill_options,
                subaccount_clients=subs,
            )
            services.backfiller = recovery.backfiller
            services.reconciler = recovery.reconciler
            services.ledger = recovery.ledger
            interval = settings.reconcile_interval_s if reconcile_interval_s is None else reconcile_interval_s
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        watch_and_backfill,
                        recovery.backfiller,
                        stop=services.stop,
                        committed=lambda: services.writer_stats.committed,
                        # A standby's run starts when it takes the lease: what the old holder logged until then is
                        # the previous run's, so the start-up window starts at the holder's last entry.
                        started_at=services.lease_acquired_at or since,
                        down=down,
                    )
                )
                await nursery.start(
                    partial(
                        recovery.ledger.run,
                        stop=services.stop,
                        backfill_completed=lambda: recovery.backfiller.completed,
                        committed=lambda: services.writer_stats.committed,
                    )
                )
                if interval and interval > 0:
                    await nursery.start(
                        partial(run_periodic, recovery.reconciler, interval_s=interval, stop=services.stop)
                    )
                task_status.started()

    return run_recovery


async def reconcile_once(
    settings: Settings,
    event_log: EventLog,
    *,
    full: bool = True,
    options: ReconcileOptions | None = None,
    client: BitstampClient | None = None,
    wall: Callable[[], datetime] | None = None,
) -> ReconcileResult:
    """``tracker reconcile``: one backfill and reconciliation run outside the service (projects the log itself)."""
    own = client is None
    client = client or client_from(settings)
    try:
        async with open_subaccount_clients(settings) as subs:
            return await _reconcile(client, settings, event_log, subs, full=full, options=options, wall=wall)
    finally:
        if own:
            await client.aclose()


async def _reconcile(
    client: BitstampClient,
    settings: Settings,
    event_log: EventLog,
    subs: Mapping[str, BitstampClient],
    *,
    full: bool,
    options: ReconcileOptions | None,
    wall: Callable[[], datetime] | None,
) -> ReconcileResult:
    """One run of ``reconcile_once`` with its clients open."""
    # The first call, unretried, as `tracker run` makes it: an unreachable exchange or bad credentials fail in one
    # line at once (the walks that follow retry as usual).
    token = await client.websockets_token()
    recovery = await build_recovery(
        client,
        settings,
        event_log,
        trio.CapacityLimiter(1),
        account=token.user_id,
        reconcile_options=options,
        wall=wall,
        subaccount_clients=subs,
    )
    return await recovery.reconciler.run_once(full=full)
