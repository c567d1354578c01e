"""The fake's WebSocket API v2 over real sockets: control frames, token rules, limits and every wire fault.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation. Negative assertions
("nothing arrived") use the ordering of one connection: a heartbeat sent afterwards must be answered first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from fake_helpers import ManualClock, call, recv, subscribe, token
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Event, Ping, Pong, Request, TextMessage

from tracker.fake.server import MALFORMED_FRAME, FakeExchange, open_fake_exchange
from tracker.fake.ws_server import HEARTBEAT_REPLY


@pytest.fixture
async def fx(clock: ManualClock) -> AsyncIterator[FakeExchange]:
    async with open_fake_exchange(seed=11, clock=clock) as fx:
        yield fx


def err(message: str, code: int | None = None) -> dict[str, object]:
    return {"event": "bts:error", "channel": "", "data": {"code": code, "message": message}}


async def assert_quiet(ws: WebSocketConnection) -> None:
    """Nothing is pending before the reply to a heartbeat sent now."""
    await ws.send_message('{"event":"bts:heartbeat"}')
    assert await ws.get_message() == HEARTBEAT_REPLY


async def test_control_frames(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            await ws.send_message('{"event":"bts:heartbeat"}')
            assert await recv(ws) == {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}
            await ws.send_message("{not json")
            assert await recv(ws) == err("Incorrect JSON format.")
            await ws.send_message('{"event":"bts:ping"}')
            assert await recv(ws) == err("Bad subscription string.")
            await ws.send_message('{"event":"bts:subscribe","data":{}}')
            assert await recv(ws) == err("Bad subscription string.")
            for bad in ("order_book_BTCUSD-PERP", "order_book_BTC/USD-PERP", "nonsense"):
                assert await subscribe(ws, bad) == err("Invalid channel provided.")
            ack = await subscribe(ws, "live_trades_btcusd")
            assert ack == {"event": "bts:subscription_succeeded", "channel": "live_trades_btcusd", "data": {}}
            assert await subscribe(ws, "live_trades_btcusd") == ack  # duplicate subscribe: acked again
            await ws.send_message('{"event":"bts:unsubscribe","data":{"channel":"live_trades_btcusd"}}')
            assert await recv(ws) == {
                "event": "bts:unsubscription_succeeded",
                "channel": "live_trades_btcusd",
                "data": {},
            }


async def test_unknown_market_is_acked_then_silent(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        tok = await token(client, fx)
        async with open_websocket_url(fx.ws_url) as ws:
            assert (await subscribe(ws, "order_book_fooxyz-perp"))["event"] == "bts:subscription_succeeded"
            ch = f"private-my_orders_fooxyz-{fx.user_id}"
            assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
            await fx.generate(50)
            await assert_quiet(ws)


async def test_private_subscribe_token_rules(fx: FakeExchange, client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        ch = f"private-my_trades_btcusd-{fx.user_id}"
        unauthorized = err("Connection is unauthorized.", 4009)
        async with open_websocket_url(fx.ws_url) as ws:
            assert await subscribe(ws, ch) == unauthorized  # no token
            assert await subscribe(ws, ch, "x" * 32) == unauthorized  # unknown token
            tok = await token(client, fx)
            assert await subscribe(ws, f"private-my_trades_btcusd-{fx.user_id + 1}", tok) == unauthorized  # wrong uid
            assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
            other = f"private-my_orders_btcusd-{fx.user_id}"
            assert (await subscribe(ws, other, tok))["event"] == "bts:subscription_succeeded"  # reusable
            clock.now += 61  # expired: new subscribes fail, the live ones keep streaming
            assert await subscribe(ws, f"private-my_orders_ethusd-{fx.user_id}", tok) == unauthorized
            emitted = [e for e in await fx.generate(60) if e.channel in (ch, other)]
            assert emitted
            for e in emitted:
                assert await ws.get_message() == e.text
            fx.set_token_ttl(5)
            short = await token(client, fx)
            fresh = (await call(client, fx, "POST", "websockets_token/")).json()
            assert fresh["valid_sec"] == 5
            clock.now += 6
            assert await subscribe(ws, f"private-my_orders_ethusd-{fx.user_id}", short) == unauthorized
            tok2 = await token(client, fx)
            fx.invalidate_tokens()
            assert await subscribe(ws, f"private-my_orders_ethusd-{fx.user_id}", tok2) == unauthorized


async def test_frame_of_512_bytes_closes_with_1009(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            frame = '{"event":"bts:heartbeat","pad":"' + "x" * 200 + '"}'
            await ws.send_message(frame)
            assert await ws.get_message() == HEARTBEAT_REPLY
            base = '{"event":"bts:heartbeat","pad":""}'
            await ws.send_message('{"event":"bts:heartbeat","pad":"' + "x" * (511 - len(base)) + '"}')  # 511 bytes
            assert await ws.get_message() == HEARTBEAT_REPLY
            await ws.send_message('{"event":"bts:heartbeat","pad":"' + "x" * (512 - len(base)) + '"}')  # 512 bytes
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert (info.value.reason.code, info.value.reason.reason) == (1009, "read limited at 513 bytes")


async def test_subscription_1025_closes_connection(fx: FakeExchange) -> None:
    with trio.fail_after(30):
        async with open_websocket_url(fx.ws_url) as ws:
            for i in range(1024):
                await ws.send_message(json.dumps({"event": "bts:subscribe", "data": {"channel": f"live_trades_m{i}"}}))
            for _ in range(1024):
                assert (await recv(ws))["event"] == "bts:subscription_succeeded"
            await ws.send_message(json.dumps({"event": "bts:subscribe", "data": {"channel": "live_trades_m0"}}))
            assert (await recv(ws))["event"] == "bts:subscription_succeeded"  # re-subscribe does not count
            await ws.send_message(json.dumps({"event": "bts:subscribe", "data": {"channel": "live_trades_last"}}))
            with pytest.raises(ConnectionClosed):
                await ws.get_message()


async def private_ws(fx: FakeExchange, client: httpx.AsyncClient, ws: WebSocketConnection) -> list[str]:
    tok = await token(client, fx)
    channels = fx.private_channels()
    for ch in channels:
        assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
    return channels


async def test_fault_request_reconnect(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            await private_ws(fx, client, ws)
            old = await token(client, fx)
            await fx.request_reconnect(close_after=0.2)
            assert await recv(ws) == {"event": "bts:request_reconnect", "channel": "", "data": ""}
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
        async with open_websocket_url(fx.ws_url) as ws:  # old tokens were invalidated by the forced reconnect
            ch = fx.private_channels()[0]
            assert await subscribe(ws, ch, old) == err("Connection is unauthorized.", 4009)
            assert (await subscribe(ws, ch, await token(client, fx)))["event"] == "bts:subscription_succeeded"


async def test_fault_drop(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            await private_ws(fx, client, ws)
            await fx.drop_connections()
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            assert info.value.reason.code == 1006  # no close frame: abnormal closure
        await fx.wait_connections(0)


async def test_fault_stall(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            channels = await private_ws(fx, client, ws)
            fx.stall()
            during = await fx.generate(30)
            await ws.send_message('{"event":"bts:heartbeat"}')
            with trio.move_on_after(0.3) as scope:  # a negative check needs a bound; not synchronisation
                await ws.ping()
            assert scope.cancelled_caught  # pings unanswered
            fx.unstall()
            assert await ws.get_message() == HEARTBEAT_REPLY  # frames made during the stall never come
            assert any(e.channel in channels for e in during)
            after = [e for e in await fx.generate(10) if e.channel in channels]
            for e in after:
                assert await ws.get_message() == e.text


async def test_fault_duplicate_malformed_unknown(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            channels = await private_ws(fx, client, ws)
            fx.duplicate_next(1000)
            mine = [e for e in await fx.generate(5) if e.channel in channels]
            fx.hub.duplicate = 0
            for e in mine:
                assert await ws.get_message() == e.text
                assert await ws.get_message() == e.text
            await fx.send_malformed()
            assert await ws.get_message() == MALFORMED_FRAME
            with pytest.raises(ValueError):
                json.loads(MALFORMED_FRAME)
            await fx.send_unknown_event()
            frame = await recv(ws)
            assert frame["event"] == "order_frozen" and frame["channel"] in channels


async def test_pause_withholds_frames_but_rest_shows_them(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            await private_ws(fx, client, ws)
            fx.pause_delivery()
            withheld = await fx.generate(30)
            await assert_quiet(ws)
            fx.resume_delivery()
            eids = {json.loads(e.text)["event_id"] for e in withheld if "my_orders" in e.channel}
            r = await call(client, fx, "POST", "account_order_data/", body="order_source=orderbook")
            assert eids - {e["event_id"] for e in r.json()} <= {
                json.loads(e.text)["event_id"] for e in withheld if '"order_source":"stop_order"' in e.text
            }
            trades = {str(json.loads(e.text)["data"]["id"]) for e in withheld if "my_trades" in e.channel}
            r = await call(client, fx, "POST", "user_transactions/", body="limit=1000")
            assert trades <= {str(row["id"]) for row in r.json()}


async def test_frames_for_unsubscribed_channels_are_not_sent(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(fx.ws_url) as ws:
            ch = f"private-my_orders_btcusd-{fx.user_id}"
            assert (await subscribe(ws, ch, await token(client, fx)))["event"] == "bts:subscription_succeeded"
            await fx.wait_subscribed([ch])
            emitted = await fx.generate(40)
            for e in [e for e in emitted if e.channel == ch]:
                assert await ws.get_message() == e.text
            await assert_quiet(ws)


# ---------------------------------------------------------------------- the protocol itself (a raw wsproto client)
class RawClient:
    """A bare wsproto client on a TCP stream: sends what trio-websocket's public API cannot (fragments, binary
    heartbeats, pings with a payload) and sees every event the server sends, close frames included."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, fx: FakeExchange) -> RawClient:
        port = int(fx.ws_url.rsplit(":", 1)[1])
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(Request(host=f"127.0.0.1:{port}", target="/"))
        assert isinstance(await client.next_event(), AcceptConnection)
        return client

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(self.ws.send(e) for e in events))

    async def next_event(self) -> Event | None:
        """The server's next event; None at the end of the TCP stream."""
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)


async def test_fragments_binary_and_pings(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        client = await RawClient.open(fx)
        half = len('{"event":"bts:heart')
        beat = '{"event":"bts:heartbeat"}'
        await client.send(
            TextMessage(data=beat[:half], message_finished=False), TextMessage(data=beat[half:], message_finished=True)
        )
        assert await client.next_event() == TextMessage(data=HEARTBEAT_REPLY)
        await client.send(BytesMessage(data=beat.encode()))  # a binary frame is read as UTF-8 text
        assert await client.next_event() == TextMessage(data=HEARTBEAT_REPLY)
        await client.send(Ping(payload=b"are you there"))
        assert await client.next_event() == Pong(payload=b"are you there")
        assert fx.hub.client_frames == [beat, beat]
        await client.stream.aclose()


async def test_client_close_is_answered_and_the_socket_closed(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        client = await RawClient.open(fx)
        await fx.wait_connections(1)
        await client.send(CloseConnection(code=1000, reason="bye"))
        assert await client.next_event() == CloseConnection(code=1000, reason="bye")
        assert await client.next_event() is None  # the server closed TCP: no more bytes
        await fx.wait_connections(0)
        await client.stream.aclose()


async def test_server_close_waits_for_the_answer_and_drops_late_data(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        client = await RawClient.open(fx)
        await fx.wait_connections(1)
        [conn] = fx.hub.conns
        in_flight = client.ws.send(TextMessage(data='{"event":"bts:heartbeat"}'))  # written before the close came
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.aclose, 4000, "going away")
            assert await client.next_event() == CloseConnection(code=4000, reason="going away")
            assert len(fx.hub.conns) == 1  # still waiting for our answer
            await client.stream.send_all(in_flight)  # arrives after the server's close frame: dropped
            await client.send(CloseConnection(code=4000))
        assert conn.finished.is_set() and fx.hub.client_frames == []
        assert await client.next_event() is None
        await client.stream.aclose()


async def test_a_plain_http_request_is_refused(fx: FakeExchange) -> None:
    with trio.fail_after(10):
        port = int(fx.ws_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        await stream.aclose()
        assert fx.hub.connections_total == 0
