"""The fake's WebSocket modes (tracker/fake/modes.py) over real sockets: a ``pre_event_id`` chain that runs over other
users' unseen events, liquidation alerts without a time, and a channel whose subscribe is always refused.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation. Frames are read in
lockstep with generation (each step's frames for our channels are read before the next step)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from fake_helpers import ManualClock, recv, subscribe, token
from trio_websocket import WebSocketConnection, open_websocket_url

from tracker.fake.model import AccountModel
from tracker.fake.modes import Modes
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.fake.ws_server import HEARTBEAT_REPLY

T0 = 1_790_000_000_000_000


def err(message: str, code: int | None = None) -> dict[str, object]:
    return {"event": "bts:error", "channel": "", "data": {"code": code, "message": message}}


async def assert_quiet(ws: WebSocketConnection) -> None:
    """Nothing is pending before the reply to a heartbeat sent now."""
    await ws.send_message('{"event":"bts:heartbeat"}')
    assert await ws.get_message() == HEARTBEAT_REPLY


async def read_steps(fx: FakeExchange, ws: WebSocketConnection, channels: set[str], steps: int) -> list[dict[str, Any]]:
    """Generate ``steps`` model steps, reading each step's frames for ``channels`` before the next; checks that they
    arrive as emitted."""
    out = []
    for _ in range(steps):
        for e in await fx.generate(1):
            if e.channel in channels:
                text = await ws.get_message()
                assert text == e.text
                out.append(json.loads(text))
    return out


@pytest.fixture
async def chain_fx(clock: ManualClock) -> AsyncIterator[FakeExchange]:
    async with open_fake_exchange(seed=13, clock=clock, modes=["market-wide-chain"]) as fx:
        yield fx


async def test_market_wide_chain(chain_fx: FakeExchange, client: httpx.AsyncClient) -> None:
    """Each of our order events names, as its predecessor, an event we never received: one of another user, which
    sorts between our previous event of the market and this one. The connection stays up throughout."""
    fx = chain_fx
    with trio.fail_after(20):
        tok = await token(client, fx)
        channels = {fx.model.channel("my_orders", m) for m in fx.model.markets}
        async with open_websocket_url(fx.ws_url) as ws:
            for ch in sorted(channels):
                assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
            frames = await read_steps(fx, ws, channels, 300)
            assert len(frames) > 200 and fx.hub.connections_total == 1
        received = {f["event_id"] for f in frames}
        last: dict[str, str] = {}
        for f in frames:
            pre, eid = f["pre_event_id"], f["event_id"]
            assert pre not in received, f  # never an event we saw
            assert last.get(f["channel"], "") < pre < eid  # an event of the market between ours
            last[f["channel"]] = eid


def test_market_wide_chain_keeps_the_story() -> None:
    """Same seed with and without the mode: the same frames but for the event ids, and the same truth."""
    plain, wide = AccountModel(4), AccountModel(4, modes=Modes(market_wide_chain=True))
    for i in range(400):
        a, b = plain.step(T0 + i * 1000), wide.step(T0 + i * 1000)
        assert [e.channel for e in a] == [e.channel for e in b]
        for x, y in zip(a, b, strict=True):
            fx_, fy = json.loads(x.text), json.loads(y.text)
            for f in (fx_, fy):
                f.pop("event_id", None)
                f.pop("pre_event_id", None)
            assert fx_ == fy
    assert plain.truth() == wide.truth()


async def test_liquidations_untimed(clock: ManualClock, client: httpx.AsyncClient) -> None:
    with trio.fail_after(30):
        async with open_fake_exchange(seed=17, clock=clock, modes=["liquidations-untimed"]) as fx:
            tok = await token(client, fx)
            ch = fx.model.channel("my_liquidations")
            async with open_websocket_url(fx.ws_url) as ws:
                assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
                alerts: list[dict[str, Any]] = []
                while len(alerts) < 8:
                    alerts += await read_steps(fx, ws, {ch}, 50)
            events = {a["event"] for a in alerts}
            assert {"liquidation_start", "liquidation_concluded"} <= events
            for a in alerts:
                assert set(a["data"]) == {
                    "position_id",
                    "trade_account_id",
                    "alert_type",
                    "margin_mode",
                    "initial_margin_ratio",
                    "maintenance_margin_ratio",
                }  # no microtimestamp, and nothing else that tells the time
            assert len(fx.truth()["liquidations"]) == len(alerts)  # the truth keeps them (with their real time)


async def test_refuse_channel(clock: ManualClock, client: httpx.AsyncClient) -> None:
    modes = [
        "refuse-channel=my_trades_btcusd",
        "refuse-channel=live_trades_ethusd",
        "refuse-channel=my_token_settlements",
    ]
    with trio.fail_after(20):
        async with open_fake_exchange(seed=19, clock=clock, modes=modes) as fx:
            tok = await token(client, fx)
            uid = fx.user_id
            refused = err("Connection is unauthorized.", 4009)
            async with open_websocket_url(fx.ws_url) as ws:
                for _ in range(3):  # always, with a valid token
                    assert await subscribe(ws, f"private-my_trades_btcusd-{uid}", tok) == refused
                assert await subscribe(ws, f"private-my_token_settlements-{uid}", tok) == refused
                assert await subscribe(ws, "live_trades_ethusd") == err("Invalid channel provided.")
                others = [f"private-my_orders_btcusd-{uid}", f"private-my_trades_btcusd-perp-{uid}"]
                for ch in others:
                    assert await subscribe(ws, ch, tok) == {
                        "event": "bts:subscription_succeeded",
                        "channel": ch,
                        "data": {},
                    }
                assert (await subscribe(ws, "live_trades_btcusd"))["event"] == "bts:subscription_succeeded"
                assert fx.hub.subscribed() == {*others, "live_trades_btcusd"}
                got = await read_steps(fx, ws, set(others), 100)
                assert got and all(f["channel"] in others for f in got)
                await assert_quiet(ws)  # nothing of the refused channel came


async def test_unrefused_fake_acks_those_channels(clock: ManualClock, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_fake_exchange(seed=19, clock=clock) as fx:
            tok = await token(client, fx)
            async with open_websocket_url(fx.ws_url) as ws:
                ack = await subscribe(ws, f"private-my_token_settlements-{fx.user_id}", tok)
                assert ack["event"] == "bts:subscription_succeeded"
                await ws.send_message('{"event":"bts:heartbeat"}')
                assert (await recv(ws))["event"] == "bts:heartbeat"
