"""The fake's WebSocket API v2 (PROTOCOL.md §1): subscribe/unsubscribe with acks, token checks, heartbeats, limits,
delivery of the model's frames to subscribed connections, and wire faults.

Frames for a channel nobody is subscribed to (or sent while delivery is paused, or to a stalled connection) are
not queued for later: they exist only in the REST state, which is the gap a tracker must backfill.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer
from wsproto.events import TextMessage

from tracker.fake.auth import TokenStore
from tracker.fake.model import Emission
from tracker.fake.wire import dumps

log = logging.getLogger("tracker.fake.ws")

MAX_CLIENT_FRAME = 511  # a client frame of 512 bytes or more is closed with 1009
MAX_SUBSCRIPTIONS = 1024
SEND_QUEUE = 4096
WRITE_BATCH = 256  # frames coalesced into one TCP write when the queue has them

_MARKET = r"[a-z0-9]+(?:-perp)?"
PUBLIC_RE = re.compile(
    rf"^(?:(?:live_trades|live_orders|order_book|detail_order_book|diff_order_book|funding_rate)_{_MARKET}|announcements)$"
)
PRIVATE_RE = re.compile(
    rf"^private-(?:(?:my_orders|my_trades|live_trades|live_order_trades)_{_MARKET}"
    r"|my_settlements|my_liquidations|my_token_settlements)-([A-Za-z0-9]+)$"
)


def error_frame(message: str, code: int | None = None) -> str:
    return dumps({"event": "bts:error", "channel": "", "data": {"code": code, "message": message}})


def ack_frame(event: str, channel: str) -> str:
    return dumps({"event": event, "channel": channel, "data": {}})


HEARTBEAT_REPLY = dumps({"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}})


class _FaultStream(trio.abc.Stream):
    """Wraps the TCP stream so the fake can stall a connection (sends block, so pongs and replies never leave)
    or drop it abruptly (RST)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.stalled = False
        self._resume = trio.Event()

    def stall(self) -> None:
        self.stalled = True
        self._resume = trio.Event()

    def unstall(self) -> None:
        self.stalled = False
        self._resume.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        while self.stalled:
            await self._resume.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def abort(self) -> None:
        """Close with SO_LINGER 0: the peer sees a TCP reset, no close frame."""
        with contextlib.suppress(OSError):
            self.inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.inner.aclose()


class _FaultListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, inner: trio.SocketListener, hub: WsHub) -> None:
        self.inner = inner
        self.hub = hub

    async def accept(self) -> trio.abc.Stream:
        stream = _FaultStream(await self.inner.accept())
        self.hub.pending_streams.append(stream)
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(eq=False)
class WsConn:
    ws: WebSocketConnection
    stream: _FaultStream
    send: trio.MemorySendChannel[str]
    subs: set[str] = field(default_factory=set)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(eq=False)
class WsHub:
    tokens: TokenStore
    user_id: int
    conns: set[WsConn] = field(default_factory=set)
    pending_streams: list[_FaultStream] = field(default_factory=list)
    paused: bool = False
    duplicate: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    connections_total: int = 0
    client_frames: list[str] = field(default_factory=list)  # every frame received, for tests
    on_client_frame: list[Callable[[str], None]] = field(default_factory=list)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()

    def subscribed(self) -> set[str]:
        return {c for conn in self.conns for c in conn.subs}

    async def deliver(self, emissions: Iterable[Emission]) -> int:
        """Queue frames for connections subscribed right now; returns how many were queued."""
        if self.paused:
            return 0
        sent = 0
        conns = list(self.conns)
        for e in emissions:
            copies = 1
            if self.duplicate > 0:
                self.duplicate -= 1
                copies = 2
            for conn in conns:
                if e.channel in conn.subs and not conn.stream.stalled:
                    for _ in range(copies):
                        try:
                            try:
                                conn.send.send_nowait(e.text)
                            except trio.WouldBlock:
                                await conn.send.send(e.text)  # back-pressure from a slow reader
                            sent += 1
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            break
        return sent

    async def broadcast(self, text: str) -> None:
        for conn in list(self.conns):
            if not conn.stream.stalled:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await conn.send.send(text)

    # ------------------------------------------------------------------ connection handling
    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        stream = self._claim_stream(ws)
        send, recv = trio.open_memory_channel[str](SEND_QUEUE)
        conn = WsConn(ws, stream, send)
        self.conns.add(conn)
        self.connections_total += 1
        self._notify()
        try:
            with conn.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, ws, recv, nursery.cancel_scope)
                    try:
                        await self._reader(conn)
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            self.conns.discard(conn)
            send.close()
            self._notify()

    def _claim_stream(self, ws: WebSocketConnection) -> _FaultStream:
        # trio-websocket does not expose the stream it was built on; find ours by identity.
        inner = ws._stream
        for s in self.pending_streams:
            if s is inner:
                self.pending_streams.remove(s)
                return s
        raise RuntimeError("connection stream not found")

    @staticmethod
    async def _writer(
        ws: WebSocketConnection, recv: trio.MemoryReceiveChannel[str], connection_scope: trio.CancelScope
    ) -> None:
        """Send queued frames, coalescing what is already queued. When the socket is gone, the queue is closed (so
        ``deliver`` never blocks on a dead connection) and the connection's reader is cancelled."""
        try:
            async for text in recv:
                batch = [text]
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                if len(batch) == 1:
                    await ws.send_message(text)
                else:
                    await _send_batch(ws, batch)
        except ConnectionClosed:
            pass
        finally:
            recv.close()
            connection_scope.cancel()

    async def _reader(self, conn: WsConn) -> None:
        while True:
            try:
                message = await conn.ws.get_message()
            except ConnectionClosed:
                return
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            self.client_frames.append(text)
            for hook in self.on_client_frame:
                hook(text)
            if not await self._on_message(conn, text):
                return

    async def _on_message(self, conn: WsConn, text: str) -> bool:
        """Handle one client frame; False when the connection was closed."""
        try:
            obj = json.loads(text)
        except ValueError:
            await conn.send.send(error_frame("Incorrect JSON format."))
            return True
        if not isinstance(obj, dict):
            await conn.send.send(error_frame("Incorrect JSON format."))
            return True
        event = obj.get("event")
        if event == "bts:heartbeat":
            await conn.send.send(HEARTBEAT_REPLY)
            return True
        data = obj.get("data")
        channel = data.get("channel") if isinstance(data, dict) else None
        if event not in ("bts:subscribe", "bts:unsubscribe") or not isinstance(channel, str) or not channel:
            await conn.send.send(error_frame("Bad subscription string."))
            return True
        assert isinstance(data, dict)
        private = PRIVATE_RE.match(channel)
        if not private and not PUBLIC_RE.match(channel):
            await conn.send.send(error_frame("Invalid channel provided."))
            return True
        if event == "bts:unsubscribe":
            conn.subs.discard(channel)
            self._notify()
            await conn.send.send(ack_frame("bts:unsubscription_succeeded", channel))
            return True
        if private and (private.group(1) != str(self.user_id) or not self.tokens.valid(data.get("auth"))):
            await conn.send.send(error_frame("Connection is unauthorized.", 4009))
            return True
        if channel not in conn.subs and len(conn.subs) >= MAX_SUBSCRIPTIONS:
            await conn.ws.aclose()  # the 1,025th subscription closes the connection without a word
            return False
        conn.subs.add(channel)
        self._notify()
        await conn.send.send(ack_frame("bts:subscription_succeeded", channel))
        return True


async def _send_batch(ws: WebSocketConnection, texts: list[str]) -> None:
    """Several text messages in one ``send_all``: the same bytes as one ``send_message`` each, but one syscall and
    one scheduling round. Mirrors ``WebSocketConnection._send`` (trio-websocket 0.12), which has no batch API."""
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    proto = ws._wsproto
    data = b"".join(proto.send(TextMessage(data=t)) for t in texts)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None


async def serve_ws(
    hub: WsHub, *, host: str = "127.0.0.1", port: int = 0, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Serve until cancelled; ``task_status.started(port)`` once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    wrapped = [_FaultListener(listener, hub) for listener in listeners]
    server = WebSocketServer(hub.handle, wrapped, max_message_size=MAX_CLIENT_FRAME)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")
