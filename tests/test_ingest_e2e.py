"""End to end over real sockets: the fake exchange (HTTP + WebSocket on 127.0.0.1, port 0) → ``run_tracker`` → the
event log on SQLite (and PostgreSQL for one test). For each fault, the set of frames the fake delivered equals the set
of ws payloads in the log, and nothing is doubled.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep used as synchronisation (waits are on the
writer's committed count and the fake's hub events). Timed behaviour (heartbeat, backoff) is covered under
``autojump_clock`` in test_ws_supervision.py; here the intervals are short and real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from tracker.bitstamp.channels import parse_channel
from tracker.domain.log import LogEntry
from tracker.exchange.errors import AuthError
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.service import Services, run_tracker
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(60)

MARKETS = ("btcusd", "ethusd", "btcusd-perp")
FAST = IngestOptions(heartbeat_interval=0.5, heartbeat_timeout=1.0, backoff_base=0.05, backoff_cap=0.5)


@dataclass
class Run:
    fx: FakeExchange
    services: Services
    log: EventLog
    stop: trio.Event
    delivered: list[str]

    def entries(self) -> list[LogEntry]:
        out: list[LogEntry] = []
        for page in self.log.iter_after(0):
            out.extend(page)
        return out

    def ws_payloads(self) -> list[str]:
        return [e.payload for e in self.entries() if e.source == "ws"]

    def lifecycle(self) -> list[str]:
        return [e.event for e in self.entries() if e.source == "tracker"]

    async def wait_committed(self, predicate: Callable[[], bool]) -> None:
        stats = self.services.writer_stats
        while not predicate():
            await stats.committed.wait()

    async def wait_all_delivered_committed(self) -> None:
        wanted = set(self.delivered)
        with trio.move_on_after(20):  # then say what is missing (clearer than the pytest timeout)
            await self.wait_committed(lambda: wanted <= set(self.ws_payloads()))
        missing = wanted - set(self.ws_payloads())
        assert not missing, f"{len(missing)} delivered frames never committed, e.g. {sorted(missing)[:2]}"

    async def wait_lifecycle(self, event: str, count: int = 1) -> None:
        await self.wait_committed(lambda: self.lifecycle().count(event) >= count)


async def drop_and_wait(fx: FakeExchange) -> None:
    """Abrupt drop; returns once the fake has forgotten the dropped connections (so it no longer counts them)."""
    old = set(fx.hub.conns)
    await fx.drop_connections()
    await fx.hub.wait_for(lambda: not (old & fx.hub.conns))


def record_deliveries(fx: FakeExchange) -> list[str]:
    """Wrap the hub's delivery so the test knows exactly which frames reached a live subscriber."""
    delivered: list[str] = []
    original = fx.hub.deliver

    async def deliver(emissions):  # type: ignore[no-untyped-def]
        emissions = list(emissions)
        if not fx.hub.paused:
            for e in emissions:
                if any(e.channel in c.subs and not c.stream.stalled for c in fx.hub.conns):
                    delivered.append(e.text)
        return await original(emissions)

    fx.hub.deliver = deliver  # type: ignore[method-assign]
    return delivered


@asynccontextmanager
async def tracker_running(
    db_url: str, *, markets: tuple[str, ...] | None = MARKETS, seed: int = 1
) -> AsyncIterator[Run]:
    upgrade(db_url)
    engine = open_engine(db_url)
    try:
        async with open_fake_exchange(seed=seed, markets=MARKETS) as fx:
            delivered = record_deliveries(fx)
            settings = fx.settings(db_url, markets=markets, subaccounts=())
            log = EventLog(engine)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                services: Services = await nursery.start(
                    lambda task_status: run_tracker(
                        settings, log, stop=stop, handle_signals=False, ingest_options=FAST, task_status=task_status
                    )
                )
                run = Run(fx, services, log, stop, delivered)
                yield run
                await run.wait_all_delivered_committed()
                stop.set()
            assert_exactly_delivered(run)
    finally:
        engine.dispose()


def assert_exactly_delivered(run: Run) -> None:
    payloads = run.ws_payloads()
    assert len(payloads) == len(set(payloads)), "a frame was appended twice"
    assert set(payloads) == set(run.delivered), (
        f"lost {len(set(run.delivered) - set(payloads))}, extra {len(set(payloads) - set(run.delivered))}"
    )


async def test_every_channel_kind_lands_in_the_log(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        emitted = await run.fx.generate(400)
        await run.wait_all_delivered_committed()
        names = {parse_channel(e.channel).name for e in run.entries() if e.source == "ws"}
        assert {"my_orders", "my_trades", "live_trades", "my_settlements", "my_liquidations"} <= names, names
        assert {e.market for e in run.entries() if e.source == "ws"} == {*MARKETS, None}
        assert len(emitted) == len(run.delivered)
    assert run.lifecycle()[:2] == ["connected", "subscribed"]
    assert run.lifecycle()[-1] == "closed"
    closed = json.loads([e for e in run.entries() if e.event == "closed"][-1].payload)
    assert closed["data"]["reason"] == "stopped"


async def test_markets_discovered_when_unset(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url, markets=None) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(50)


async def test_request_reconnect_make_before_break(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(50)
        # The fake closes the old connection itself after close_after: a bound for a failure only (the tracker closes
        # it once the new one is subscribed), long enough for a loaded machine's token call, connect and subscribes.
        await run.fx.request_reconnect(close_after=15.0)
        for _ in range(20):
            await run.fx.generate(5)
            await trio.lowlevel.checkpoint()
        await run.wait_lifecycle("subscribed", 2)
        await run.fx.wait_connections(1)
        await run.fx.generate(50)
    events = run.lifecycle()
    # the new connection was subscribed before the old one closed
    assert events.index("closed") > [i for i, e in enumerate(events) if e == "subscribed"][1]


async def test_abrupt_drop(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(50)
        await run.wait_all_delivered_committed()
        await drop_and_wait(run.fx)
        await run.fx.generate(20)  # delivered only if the new connection is already subscribed
        await run.wait_lifecycle("subscribed", 2)
        await run.fx.wait_connections(1)
        await run.fx.generate(50)
    assert run.lifecycle().count("subscribed") == 2


async def test_stall(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(50)
        await run.wait_all_delivered_committed()
        run.fx.stall()
        await run.wait_lifecycle("stalled")
        await run.wait_lifecycle("subscribed", 2)
        await run.fx.generate(50)
        run.fx.unstall()


async def test_duplicates_absorbed(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        run.fx.duplicate_next(30)
        await run.fx.generate(60)
        await run.wait_all_delivered_committed()
        await run.wait_committed(lambda: run.services.writer_stats.duplicates >= 30)


async def test_malformed_and_unknown_event(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(20)
        await run.fx.send_malformed()
        await run.fx.send_unknown_event()
        await run.fx.generate(20)
        await run.wait_committed(lambda: run.services.writer_stats.quarantined >= 1)
        await run.wait_committed(lambda: any(e.event == "order_frozen" for e in run.entries()))
        # the unknown event is a fact on a private channel: logged (it is not among the model's deliveries)
        run.delivered.extend(e.payload for e in run.entries() if e.event == "order_frozen")
    [row] = run.log.quarantined()
    assert row.reason.startswith("not JSON")


@pytest.mark.parametrize("fault", ["expired", "invalidated"])
async def test_token_faults(sqlite_url: str, fault: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(30)
        await run.wait_all_delivered_committed()  # an RST discards what the client has not read yet
        if fault == "expired":
            run.fx.set_token_ttl(0.0)  # tokens expire at once: the next subscribes get 4009 until the ttl is back
        else:
            run.fx.invalidate_tokens()
        await drop_and_wait(run.fx)
        if fault == "expired":
            await run.wait_lifecycle("subscribe_failed")
            run.fx.set_token_ttl(60.0)
        await run.wait_lifecycle("subscribed", 2)
        await run.fx.wait_connections(1)
        await run.fx.generate(30)
    if fault == "expired":
        failed = [json.loads(e.payload)["data"] for e in run.entries() if e.event == "subscribe_failed"]
        assert {f["code"] for f in failed} == {4009}


@pytest.mark.postgres
async def test_burst_on_postgresql(pg_url: str) -> None:
    async with tracker_running(pg_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(300)
        # (the fake's own close of the old connection drops what its queue still holds: 10 s, so the tracker's
        # make-before-break comes first on a loaded machine too)
        await run.fx.request_reconnect(close_after=10.0)
        await run.fx.generate(100)
        await run.wait_lifecycle("subscribed", 2)


async def test_stop_during_burst_loses_nothing(sqlite_url: str) -> None:
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        run.fx.set_rate(5000)
        await run.wait_committed(lambda: run.services.writer_stats.items > 500)
        run.stop.set()  # while the fake is still generating
        await run.fx.wait_connections(0)
        run.fx.set_rate(None)


async def test_a_failing_run_commits_what_it_received_first(sqlite_url: str, tmp_path: Path) -> None:
    """A run that fails (here an extra task raising a refused key, as a reconnect's token call would) ends as a stop
    does: the writer commits every frame it was handed before the error goes on; nothing is left for the side
    file. The writer is held (its database limiter taken) until the error has reached the service, so the frames
    are still waiting when it does."""
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    fail = trio.Event()

    async def failing(services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await fail.wait()
        raise AuthError("API key not found: check BITSTAMP_API_KEY", code="API0001", status=403)

    errors: list[BaseException] = []
    try:
        async with open_fake_exchange(seed=2, markets=MARKETS) as fx:
            delivered = record_deliveries(fx)
            log = EventLog(engine)

            async def run(task_status: trio.TaskStatus[Services]) -> None:
                try:
                    await run_tracker(
                        fx.settings(sqlite_url, markets=MARKETS, subaccounts=()),
                        log,
                        handle_signals=False,
                        ingest_options=FAST,
                        extra_tasks=[failing],
                        task_status=task_status,
                    )
                except Exception as error:
                    errors.append(error)

            async with trio.open_nursery() as nursery:
                services: Services = await nursery.start(run)
                await fx.wait_subscribed(fx.private_channels())
                held = object()
                await services.db_limiter.acquire_on_behalf_of(held)
                await fx.generate(20)
                while services.ingest_stats.data_frames < len(delivered):
                    await trio.testing.wait_all_tasks_blocked()
                committed = services.writer_stats.items
                fail.set()
                await trio.testing.wait_all_tasks_blocked()  # the error is in the service: the writer still waits
                services.db_limiter.release_on_behalf_of(held)
        [error] = errors
        assert isinstance(error, ExceptionGroup) and error.subgroup(AuthError) is not None, error
        assert services.writer_stats.items > committed
        payloads = [e.payload for page in log.iter_after(0) for e in page if e.source == "ws"]
        assert delivered and sorted(payloads) == sorted(delivered)
        assert not list(await trio.Path(tmp_path).glob("*.unsaved-*")), "frames spilled instead of committed"
    finally:
        engine.dispose()
