"""``run_demo``: the fake exchange and a real tracker in one trio run, with a few faults to show recovery.

The fake starts on free loopback ports with the demo key; ``run_tracker`` runs against it into the given database
with the projector beside it, for ``duration`` seconds. Faults are scheduled at 20 %, 40 % and 60 % of the duration: a
server-requested reconnect (make-before-break), an abrupt TCP drop, and a short delivery pause (frames only on REST).

A second run continues the same database. The fake starts a fresh account model each time, so its order, trade and
position id counters are moved past the largest ids already in the log (``_continue_ids``); otherwise a new order
could reuse an old order's id and show up as a conflict in the quarantine. Its books continue too: each trade
account starts from the balances the earlier runs left in ``v_balances`` (``Movements.continue_books``), with its
withdrawal request ids after theirs, so the exchange's ``account_balances/`` still equal the sum of the whole logged
ledger. The demo tracks the fake's sub-accounts and ends with a balance snapshot of each trade account. The seed
defaults to the log head, so every run differs. Orders left open by an earlier run stay open in the views: that fake
is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import trio

from tracker.config import Secret, Settings
from tracker.domain.chain import ChainWalker
from tracker.errors import TrackerError
from tracker.fake.server import DEMO_USER_ID, FakeExchange, open_fake_exchange
from tracker.runtime.early_signals import EarlySignals, signal_name
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.projector import projector_task
from tracker.runtime.recovery import recovery_task
from tracker.runtime.service import Services, StopSignals, open_stop_signals, run_tracker
from tracker.store.demo_queries import LogBaseline, log_baseline, run_counts
from tracker.store.engine import Engine
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore

DEMO_MARKETS = ("btcusd", "ethusd", "btcusd-perp")
DEFAULT_RATE = 20.0  # frames per second from the fake: enough to watch, small enough to read the report
DEMO_OPTIONS = IngestOptions(heartbeat_interval=2.0, heartbeat_timeout=3.0, backoff_base=0.2, backoff_cap=2.0)
SETTLE_S = 5.0
PERP_ID_FLOOR = 10**18  # spot order ids are ~9e15 in the fake, perp order ids ~2e18


@dataclass(frozen=True, slots=True)
class DemoCounts:
    """What this run added so far (not the database's totals)."""

    events: int = 0
    fills: int = 0
    reconnects: int = 0
    gaps: int = 0
    gaps_filled: int = 0


@dataclass
class DemoResult:
    seed: int
    seconds: float
    head_before: int
    head_after: int
    counts: DemoCounts
    account: str | None
    verified: int | None  # rows whose hash chain checked out, None when the chain is broken
    broken: str | None = None
    faults: list[str] = field(default_factory=list)


def _baseline(engine: Engine) -> LogBaseline:
    """The log head, the fills so far and the largest ids in the log (for ``_continue_ids``); refuses a database
    that holds another account than the demo's."""
    ProjectionStore(engine).catch_up(EventLog(engine))  # the balances an earlier run left (continue_books)
    base = log_baseline(engine, str(DEMO_USER_ID), PERP_ID_FLOOR)
    if base.other_account is not None:
        raise TrackerError(
            f"{engine.url.database} holds account {base.other_account}, not the demo's: the demo writes fake activity"
            " only into its own database; pick another --db"
        )
    return base


def _continue_ids(fx: FakeExchange, base: LogBaseline) -> None:
    """Move the fresh fake's id counters past every id an earlier demo run logged (see the module docstring)."""
    fx.model.ids.continue_after(
        spot_order=base.max_order_below,
        perp_order=base.max_order_from,
        transaction=base.max_trade,
        position_offset=base.head,  # any run-unique offset will do
    )
    if base.balances:  # an earlier run's books: this run's movements add to them (v_balance_checks stays exact)
        fx.model.movements.continue_books(base.balances, request_id_after=base.max_request)


def _counts(engine: Engine, base: LogBaseline) -> DemoCounts:
    """This run's numbers, from the log."""
    now = run_counts(engine, base.head)
    return DemoCounts(
        events=now.head - base.head,
        fills=max(now.fills - base.fills, 0),
        reconnects=now.reconnects,
        gaps=now.gaps,
        gaps_filled=now.gaps_filled,
    )


def _verify(event_log: EventLog) -> tuple[int | None, str | None]:
    walker = ChainWalker()
    for page in event_log.iter_after(0, 2000):
        if walker.feed(page) is not None:
            break
    broken = walker.finish()
    if broken is not None:
        return None, f"seq {broken.seq}: {broken.reason}"
    return walker.count, None


async def _faults(fx: FakeExchange, duration: float, note: Callable[[str], None]) -> None:
    """Three faults at fixed fractions of the run; each is announced through ``note``."""
    start = trio.current_time()

    async def at(fraction: float) -> None:
        await trio.sleep_until(start + duration * fraction)

    await at(0.2)
    note("fault: the exchange asks for a reconnect (bts:request_reconnect)")
    await fx.request_reconnect(close_after=min(1.0, duration / 10))
    await at(0.4)
    note("fault: every connection is dropped abruptly (TCP reset)")
    await fx.drop_connections()
    await at(0.6)
    pause = min(2.0, duration / 10)
    note(f"fault: frames withheld from the websocket for {pause:g} s (they stay visible over REST)")
    fx.pause_delivery()
    try:
        await trio.sleep(pause)
    finally:
        fx.resume_delivery()


async def _settle(engine: Engine, base: LogBaseline, services: Services, db: trio.CapacityLimiter) -> None:
    """Give a backfill still running (a gap seen just before the end) up to ``SETTLE_S`` to finish, so the summary
    does not report a gap as open only because the demo stopped in the middle of filling it."""
    with trio.move_on_after(SETTLE_S):
        while True:
            counts = await trio.to_thread.run_sync(_counts, engine, base, limiter=db)
            if counts.gaps_filled >= counts.gaps:
                return
            await services.writer_stats.committed.wait()


async def run_demo(
    engine: Engine,
    *,
    duration: float,
    rate: float = DEFAULT_RATE,
    seed: int | None = None,
    on_progress: Callable[[DemoCounts], None] | None = None,
    note: Callable[[str], None] | None = None,
    progress_interval: float = 0.5,
    faults: bool = True,
    handle_signals: bool = True,
    early: EarlySignals | None = None,
) -> DemoResult:
    """Run the fake and the tracker for ``duration`` seconds (or until SIGINT/SIGTERM), then project and verify.

    With ``handle_signals`` (``early``: those the process recorded before trio ran) the first stop signal ends the
    demo: before the tracker starts (while the fake does), with ``StartUpStopped``, nothing received; after, early,
    the settle and the ledger's check as at the end of ``duration``, then the service's lossless stop, the projection
    and the verification. Later signals are absorbed (``service.StopSignals``)."""
    ended = trio.Event()  # the demo's run is over: not yet the service's stop (the settle and the ledger's check first)
    async with open_stop_signals(ended, early) if handle_signals else nullcontext() as signals:
        return await _run_demo(
            engine, ended, signals, duration, rate, seed, on_progress, note, progress_interval, faults
        )


async def _run_demo(
    engine: Engine,
    ended: trio.Event,
    signals: StopSignals | None,
    duration: float,
    rate: float,
    seed: int | None,
    on_progress: Callable[[DemoCounts], None] | None,
    note: Callable[[str], None] | None,
    progress_interval: float,
    faults: bool,
) -> DemoResult:
    """``run_demo`` under its stop signals.

    One piece on purpose (~85 lines): the demo's story in order (baseline, fake, tracker, faults, progress, settle,
    project, verify), each step a call already; split further it would only pass its ten locals around."""
    event_log = EventLog(engine)
    db = trio.CapacityLimiter(1)
    base = await trio.to_thread.run_sync(_baseline, engine, limiter=db)
    seed = base.head if seed is None else seed
    notes: list[str] = []

    def say(text: str) -> None:
        notes.append(text)
        if note is not None:
            note(text)

    started = time.monotonic()
    services: Services | None = None
    async with open_fake_exchange(seed=seed, markets=DEMO_MARKETS) as fx:
        with signals.start_up("starting the fake exchange") if signals is not None else nullcontext():
            _continue_ids(fx, base)
        settings = Settings(
            db_url=str(engine.url),
            api_key=Secret(fx.api_key),
            api_secret=Secret(fx.api_secret),
            api_url=fx.api_url,
            ws_url=fx.ws_url,
            markets=fx.markets,
            subaccounts=fx.subaccounts,
            origins={},
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            services = await nursery.start(
                partial(
                    run_tracker,
                    settings,
                    event_log,
                    stop=stop,
                    handle_signals=False,  # the demo's own (run_demo)
                    ingest_options=DEMO_OPTIONS,
                    # The projector beside ingest; backfill at start-up and after each reconnect (no periodic
                    # reconciliation: the run is short).
                    extra_tasks=[projector_task(engine), recovery_task(reconcile_interval_s=0)],
                )
            )
            fx.set_rate(rate)
            async with trio.open_nursery() as side:
                if faults:
                    side.start_soon(_faults, fx, duration, say)
                if on_progress is not None:

                    async def show() -> None:
                        while True:
                            on_progress(await trio.to_thread.run_sync(_counts, engine, base, limiter=db))
                            await trio.sleep(progress_interval)

                    side.start_soon(show)
                with trio.move_on_after(duration):
                    await ended.wait()
                side.cancel_scope.cancel()
            if signals is not None and signals.received is not None:
                say(f"{signal_name(signals.received)}: the demo ends early, everything received is committed")
            fx.set_rate(None)
            fx.resume_delivery()
            assert services is not None
            await _settle(engine, base, services, db)
            if services.ledger is not None:  # the demo ends with each trade account's balances checked now
                await services.ledger.reconcile()
            stop.set()  # run_tracker closes its connections losslessly, commits everything and returns
    seconds = time.monotonic() - started
    await trio.to_thread.run_sync(ProjectionStore(engine).catch_up, event_log, limiter=db)
    counts = await trio.to_thread.run_sync(_counts, engine, base, limiter=db)
    verified, broken = await trio.to_thread.run_sync(_verify, event_log, limiter=db)
    return DemoResult(
        seed=seed,
        seconds=seconds,
        head_before=base.head,
        head_after=base.head + counts.events,
        counts=counts,
        account=services.account if services is not None else None,
        verified=verified,
        broken=broken,
        faults=notes,
    )
