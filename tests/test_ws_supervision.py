"""Ingest supervision under ``autojump_clock``: subscribe/ack, heartbeat and stall, 4009 and token refresh,
make-before-break, backoff, lossless stop.

Rules: no network at all (the fake's ``WsHub`` is served over ``trio.testing`` memory streams and the token endpoint
over ``httpx.MockTransport``), ``autojump_clock`` for everything timed, an absolute timeout on every test, no sleep
used as synchronisation (waits are on the hub's ``changed`` event or on the collected items).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import wrap_client_stream

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.exchange.rest import BitstampClient
from tracker.exchange.ws import WsConnection, WsUnreachable
from tracker.fake.auth import TokenStore
from tracker.fake.model import Emission
from tracker.fake.ws_server import WsConn, WsHub
from tracker.runtime.ingest import IngestOptions, IngestStats, run_ingest
from tracker.runtime.writer import Item

pytestmark = pytest.mark.timeout(20)

UID = 314159
MARKETS = ("btcusd", "btcusd-perp")


@dataclass
class Harness:
    hub: WsHub
    client: BitstampClient
    items: list[Item] = field(default_factory=list)
    connect_times: list[float] = field(default_factory=list)
    fail_connects: int = 0
    tokens_issued: int = 0
    expire_tokens: int = 0  # this many next tokens are issued already expired
    changed: trio.Event = field(default_factory=trio.Event)

    def entries(self, source: str | None = None) -> list[NewEntry]:
        return [i for i, _ in self.items if isinstance(i, NewEntry) and (source is None or i.source == source)]

    def lifecycle(self) -> list[tuple[str, str | None]]:
        return [(e.event, e.connection_id) for e in self.entries("tracker")]

    async def wait_for(self, predicate) -> None:  # type: ignore[no-untyped-def]
        while not predicate():
            await self.changed.wait()


def make_harness(nursery: trio.Nursery) -> Harness:
    hub = WsHub(tokens=TokenStore(clock=trio.current_time, ttl=60.0), user_id=UID)
    harness: Harness

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("websockets_token/")
        token = hub.tokens.issue()
        harness.tokens_issued += 1
        if harness.expire_tokens > 0:
            harness.expire_tokens -= 1
            token.ttl = -1.0
        return httpx.Response(200, json={"token": token.value, "user_id": UID, "valid_sec": 60})

    client = BitstampClient(
        "http://127.0.0.1:1/api/v2/",
        "test-key-not-a-word",
        "test-secret-not-a-word",
        transport=httpx.MockTransport(handler),
        verify_response=False,
    )
    harness = Harness(hub, client)
    return harness


def connector(harness: Harness, nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[WsConnection]:
        harness.connect_times.append(trio.current_time())
        if harness.fail_connects > 0:
            harness.fail_connects -= 1
            raise WsUnreachable("refused (test)")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(harness.hub.handle, server_stream)
        ws = await wrap_client_stream(nursery, client_stream, "fake", "/")
        try:
            yield WsConnection(ws)
        finally:
            with trio.move_on_after(5):  # like open_websocket's disconnect_timeout
                await ws.aclose()

    return connect


async def collect(harness: Harness, receive: trio.MemoryReceiveChannel[Item]) -> None:
    async for item in receive:
        harness.items.append(item)
        harness.changed.set()
        harness.changed = trio.Event()


@asynccontextmanager
async def running(
    options: IngestOptions | None = None, *, fail_connects: int = 0
) -> AsyncIterator[tuple[Harness, trio.Event]]:
    async with trio.open_nursery() as nursery:
        harness = make_harness(nursery)
        harness.fail_connects = fail_connects
        send, receive = trio.open_memory_channel[Item](1000)
        nursery.start_soon(collect, harness, receive)
        stop = trio.Event()
        ids = iter(range(1_000_000))
        await nursery.start(
            lambda task_status: run_ingest(
                harness.client,
                "ws://fake/",
                send,
                markets=MARKETS,
                stop=stop,
                options=options or IngestOptions(),
                stats=IngestStats(),
                wall=lambda: datetime(2026, 1, 1, tzinfo=UTC),
                uid=lambda: f"{next(ids):032x}",
                rng=random.Random(7),
                connect=connector(harness, nursery),
                task_status=task_status,
            )
        )
        yield harness, stop
        stop.set()
        await harness.wait_for(lambda: not harness.hub.conns)
        nursery.cancel_scope.cancel()


def emission(n: int, channel: str = f"private-my_trades_btcusd-{UID}") -> Emission:
    text = json.dumps(
        {
            "data": {
                "id": n,
                "amount": "1",
                "price": "2",
                "microtimestamp": "1",
                "fee": "0",
                "order_id": "5",
                "side": "buy",
                "trade_account_id": 0,
            },
            "channel": channel,
            "event": "trade",
        }
    )
    return Emission(channel, text, "trade")


async def drop(conn: WsConn) -> None:
    """The server side goes away without a close frame."""
    conn.cancel.cancel()
    await conn.stream.aclose()


def subscribes(hub: WsHub) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(f) for f in hub.client_frames if '"bts:subscribe"' in f]


async def test_subscribes_every_channel_one_per_frame(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        names = ("my_orders", "my_trades", "live_trades", "live_order_trades")  # every private channel by default
        expected = {f"private-{name}_{m}-{UID}" for m in MARKETS for name in names} | {
            f"private-my_settlements-{UID}",
            f"private-my_liquidations-{UID}",
            f"private-my_token_settlements-{UID}",
        }
        assert harness.hub.subscribed() == expected
        frames = subscribes(harness.hub)
        assert len(frames) == len(expected)
        assert all(len(json.dumps(f)) < 512 and isinstance(f["data"]["channel"], str) for f in frames)
        events = [e for e, _ in harness.lifecycle()]
        assert events == ["connected", "subscribed"]
        subscribed = json.loads(harness.entries("tracker")[1].payload)["data"]
        assert subscribed["count"] == len(expected)


async def test_heartbeat_every_interval_and_stall_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    options = IngestOptions(heartbeat_interval=15.0, heartbeat_timeout=10.0)
    async with running(options) as (harness, _stop):
        start = trio.current_time()
        await trio.sleep(46)  # lets three heartbeat periods pass (the clock jumps)
        beats = [f for f in harness.hub.client_frames if f == '{"event":"bts:heartbeat"}']
        assert len(beats) == 3
        assert harness.lifecycle()[-1][0] == "subscribed"
        [conn] = harness.hub.conns
        conn.stream.stall()
        await harness.wait_for(lambda: any(e == "stalled" for e, _ in harness.lifecycle()))
        stalled_at = trio.current_time() - start
        assert 60 <= stalled_at <= 61 + 10  # next heartbeat at 60 s, then 10 s without a frame
        await harness.wait_for(lambda: [e for e, _ in harness.lifecycle()].count("subscribed") == 2)
        assert harness.tokens_issued == 2  # a fresh token for the new connection
        conn.stream.unstall()  # let the fake finish the old connection


async def test_4009_gets_a_new_token_and_retries(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        harness.hub.tokens.invalidate_all()
        harness.hub.tokens.ttl = 60
        await harness.hub.broadcast('{"event":"bts:request_reconnect","channel":"","data":null}')
        await harness.wait_for(lambda: [e for e, _ in harness.lifecycle()].count("subscribed") == 2)
    # the replacement got a fresh token (minted after it connected): no 4009 at all
    assert "subscribe_failed" not in [e for e, _ in harness.lifecycle()]


async def test_expired_token_4009_is_tied_to_the_subscribe_and_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        harness = make_harness(nursery)
        harness.expire_tokens = 1
        send, receive = trio.open_memory_channel[Item](1000)
        nursery.start_soon(collect, harness, receive)
        stop = trio.Event()
        await nursery.start(
            lambda task_status: run_ingest(
                harness.client,
                "ws://fake/",
                send,
                markets=("btcusd",),
                stop=stop,
                options=IngestOptions(max_in_flight=1),
                rng=random.Random(1),
                connect=connector(harness, nursery),
                task_status=task_status,
            )
        )
        failed = [json.loads(e.payload)["data"] for e in harness.entries("tracker") if e.event == "subscribe_failed"]
        assert [(f["channel"], f["code"]) for f in failed] == [(f"private-my_orders_btcusd-{UID}", 4009)]
        assert harness.tokens_issued == 2
        assert len(harness.hub.subscribed()) == 7  # one market: four channels, and three account-wide
        tokens = [json.loads(f)["data"].get("auth") for f in harness.hub.client_frames if "bts:subscribe" in f]
        assert tokens[0] != tokens[1] and len(set(tokens[1:])) == 1  # one new token shared by the rest of the batch
        stop.set()
        await harness.wait_for(lambda: not harness.hub.conns)
        nursery.cancel_scope.cancel()


async def test_request_reconnect_is_make_before_break(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        [old] = harness.hub.conns
        await harness.hub.deliver([emission(1)])
        await harness.hub.broadcast('{"event":"bts:request_reconnect","channel":"","data":""}')
        await harness.wait_for(lambda: any(e == "closed" for e, _ in harness.lifecycle()))
        events = harness.lifecycle()
        names = [e for e, _ in events]
        assert names[:5] == ["connected", "subscribed", "reconnect_requested", "connected", "subscribed"]
        old_id = events[0][1]
        assert events[names.index("closed")][1] == old_id
        assert names.index("closed") > 4  # closed only after the new one was fully subscribed
        await harness.wait_for(lambda: old not in harness.hub.conns)
        await harness.hub.deliver([emission(2)])
        await harness.wait_for(lambda: len(harness.entries("ws")) == 2)
    assert [e.trade_id for e in harness.entries("ws")] == ["1", "2"]
    assert harness.tokens_issued == 2


async def test_abrupt_drop_backs_off_and_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        [conn] = harness.hub.conns
        harness.fail_connects = 3
        await drop(conn)
        await harness.wait_for(lambda: [e for e, _ in harness.lifecycle()].count("subscribed") == 2)
        gaps = [b - a for a, b in zip(harness.connect_times[1:], harness.connect_times[2:], strict=False)]
        # attempts 2..5: delays drawn from [d/2, d] for d = 0.5, 1, 2, 4 (after the first delayed retry)
        assert len(harness.connect_times) == 5
        for gap, ceiling in zip(gaps, (1.0, 2.0, 4.0), strict=True):
            assert ceiling / 2 <= gap <= ceiling
        closed = [json.loads(e.payload)["data"] for e in harness.entries("tracker") if e.event == "closed"]
        assert closed and "Dropped" in closed[0]["reason"]


async def test_backoff_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    options = IngestOptions(backoff_base=0.5, backoff_cap=4.0)
    async with running(options, fail_connects=0) as (harness, _stop):
        [conn] = harness.hub.conns
        harness.fail_connects = 10
        await drop(conn)
        await harness.wait_for(lambda: [e for e, _ in harness.lifecycle()].count("subscribed") == 2)
        gaps = [b - a for a, b in zip(harness.connect_times[1:], harness.connect_times[2:], strict=False)]
        assert max(gaps) <= 4.0 and min(gaps[-4:]) >= 2.0


async def test_stop_drains_everything_delivered(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, stop):
        delivered = await harness.hub.deliver([emission(n) for n in range(500)])
        assert delivered == 500
        stop.set()
        await harness.wait_for(lambda: not harness.hub.conns)
    assert sorted(int(e.trade_id or 0) for e in harness.entries("ws")) == list(range(500))
    unsubscribed = [f for f in harness.hub.client_frames if "bts:unsubscribe" in f]
    assert len(unsubscribed) == 11  # two markets: 2 x 4 channels, and three account-wide


async def test_malformed_and_unknown_frames_are_kept(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        channel = f"private-my_orders_btcusd-{UID}"
        [conn] = harness.hub.conns
        await conn.send.send("{not json")
        await conn.send.send(json.dumps({"event": "order_teleported", "channel": channel, "data": {"id": 1}}))
        await conn.send.send(json.dumps({"event": "trade", "channel": "live_trades_btcusd", "data": {}}))
        await harness.wait_for(lambda: len(harness.items) >= 4)
        quarantined = [i for i, _ in harness.items if isinstance(i, QuarantineItem)]
        assert [q.raw for q in quarantined] == ["{not json"]
        assert [e.event for e in harness.entries("ws")] == ["order_teleported"]


async def test_other_controls_error_without_subscribe_and_unknown_bts(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (harness, _stop):
        [conn] = harness.hub.conns
        await conn.send.send(
            '{"event":"bts:error","channel":"","data":{"code":null,"message":"Bad subscription string."}}'
        )
        await conn.send.send('{"event":"bts:subscription_failed","channel":"x","data":{}}')  # undocumented: ignored
        await conn.send.send('{"event":"bts:unsubscription_succeeded","channel":"x","data":{}}')  # stray ack
        await harness.wait_for(lambda: "ws_error" in [e for e, _ in harness.lifecycle()])
        error = next(e for e in harness.entries("tracker") if e.event == "ws_error")
        assert json.loads(error.payload)["data"] == {"code": None, "message": "Bad subscription string."}
        assert harness.entries("ws") == []  # control frames are not data


async def test_token_single_flight_reuse_and_expiry(autojump_clock: trio.testing.MockClock) -> None:
    from tracker.exchange.rest import WsToken
    from tracker.runtime.tokens import TokenSource

    minted: list[float] = []

    async def fetch() -> WsToken:
        minted.append(trio.current_time())
        await trio.sleep(0.2)  # the HTTP round trip
        return WsToken(f"token{len(minted)}", "1", 60)

    tokens = TokenSource(fetch, margin=10.0)
    got: list[str] = []

    async def get() -> None:
        token, _ = await tokens.get()
        got.append(token.token)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert got == ["token1"] * 5 and len(minted) == 1  # a burst of subscribes mints once
    await trio.sleep(49.0)
    assert (await tokens.get())[0].token == "token1"  # still inside valid_sec - margin
    await trio.sleep(1.0)
    assert (await tokens.get())[0].token == "token2"  # 50 s after minting: a new one
    token, number = await tokens.get()
    assert (await tokens.get(newer_than=number))[0].token == "token3"  # a reconnect never reuses
    tokens.invalidate(token)
    assert (await tokens.get())[0].token == "token3"  # invalidating an older token changes nothing


def test_backoff_equal_jitter_capped_and_reset() -> None:
    from tracker.runtime.backoff import Backoff

    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0)


async def test_channels_are_sharded_across_connections(autojump_clock: trio.testing.MockClock) -> None:
    async with running(IngestOptions(max_channels_per_connection=3)) as (harness, _stop):
        assert len(harness.hub.conns) == 4  # 11 channels, at most 3 per connection
        assert sorted(len(c.subs) for c in harness.hub.conns) == [2, 3, 3, 3]
        assert len(harness.hub.subscribed()) == 11


def test_shard_channels_keeps_under_the_server_cap() -> None:
    from tracker.runtime.ingest import MAX_CHANNELS_PER_CONNECTION, shard_channels

    channels = [f"c{i}" for i in range(2500)]
    shards = shard_channels(channels, MAX_CHANNELS_PER_CONNECTION)
    assert [len(s) for s in shards] == [1000, 1000, 500]
    assert [c for s in shards for c in s] == channels
    assert MAX_CHANNELS_PER_CONNECTION < 1024


async def test_client_frames_of_512_bytes_or_more_never_leave() -> None:
    from tracker.exchange.ws import FrameTooLarge

    sent: list[str] = []

    class Recorder:
        async def send_message(self, text: str) -> None:
            sent.append(text)

    ws = WsConnection(Recorder())  # type: ignore[arg-type]
    await ws.send("x" * 511)
    with pytest.raises(FrameTooLarge, match="512"):
        await ws.send("x" * 512)
    with pytest.raises(FrameTooLarge):
        await ws.send("é" * 256)  # 512 bytes in UTF-8
    assert len(sent) == 1
