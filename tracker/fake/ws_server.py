"""The fake's WebSocket API v2 (docs/bitstamp.md §1): subscribe/unsubscribe with acks, token checks, heartbeats, limits,
delivery of the model's frames to subscribed connections, and wire faults.

Frames for a channel nobody is subscribed to (or sent while delivery is paused, or to a stalled connection) are
not queued for later: they exist only in the REST state, which is the gap a tracker must backfill.

In the ``refuse-channel=NAME`` mode (:mod:`tracker.fake.modes`) a subscribe to NAME is always answered with a
channel-less ``bts:error`` (docs/bitstamp.md §1.3): 4009 "Connection is unauthorized." for a private channel (the one
documented refusal of a well-formed private subscribe), "Invalid channel provided." for a public one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from tracker.fake.auth import TokenStore
from tracker.fake.model import Emission
from tracker.fake.modes import Modes
from tracker.fake.wire import dumps
from tracker.fake.ws_socket import FaultStream, WsClosed, WsSocket

log = logging.getLogger("tracker.fake.ws")

MAX_CLIENT_FRAME = 511  # a client frame of 512 bytes or more is closed with 1009
MAX_SUBSCRIPTIONS = 1024
SEND_QUEUE = 4096
WRITE_BATCH = 256  # frames coalesced into one TCP write when the queue has them
CONNECT_TIMEOUT = 60.0  # for the opening handshake (trio-websocket's server default, which the fake used before)
DISCONNECT_TIMEOUT = 60.0  # for the peer's answer to our close frame (the same)

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


@dataclass(eq=False)
class WsConn:
    """One accepted connection: its protocol side, its outgoing queue (frames, acks and replies, in order) and the
    channels it subscribed."""

    ws: WsSocket
    send: trio.MemorySendChannel[str]
    subs: set[str] = field(default_factory=set)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)  # set once the stream is closed

    @property
    def stream(self) -> FaultStream:
        return self.ws.stream

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame and wait until the connection is gone (the peer answered, or left). A peer that does
        not answer within ``DISCONNECT_TIMEOUT`` is cut off."""
        with contextlib.suppress(WsClosed):
            await self.ws.send_close(code, reason)
        with trio.move_on_after(DISCONNECT_TIMEOUT) as waited:
            await self.finished.wait()
        if waited.cancelled_caught:
            self.cancel.cancel()
            await self.finished.wait()


@dataclass(eq=False)
class WsHub:
    tokens: TokenStore
    user_id: int
    conns: set[WsConn] = field(default_factory=set)
    paused: bool = False
    duplicate: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    connections_total: int = 0
    client_frames: list[str] = field(default_factory=list)  # every frame received, for tests
    on_client_frame: list[Callable[[str], None]] = field(default_factory=list)
    modes: Modes = field(default_factory=Modes)

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
    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection on ``stream`` (a TCP stream from :func:`serve_ws`, or one end of a memory stream
        pair in tests) until either side closes it; the stream is closed on return."""
        ws = WsSocket(FaultStream(stream), max_message_bytes=MAX_CLIENT_FRAME)
        accepted = False
        try:
            with trio.move_on_after(CONNECT_TIMEOUT), contextlib.suppress(WsClosed):
                accepted = await ws.accept()
        finally:
            if not accepted:
                await ws.stream.aclose()
        if not accepted:
            return
        send, recv = trio.open_memory_channel[str](SEND_QUEUE)
        conn = WsConn(ws, send)
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
            try:
                with trio.move_on_after(DISCONNECT_TIMEOUT):
                    await ws.aclose()
            finally:
                conn.finished.set()

    @staticmethod
    async def _writer(ws: WsSocket, recv: trio.MemoryReceiveChannel[str], connection_scope: trio.CancelScope) -> None:
        """Send queued frames, coalescing what is already queued (up to ``WRITE_BATCH``) into one TCP write. When
        nothing more can be sent, the queue is closed (so ``deliver`` never blocks on a dead connection) and the
        connection's reader is cancelled."""
        try:
            async for text in recv:
                batch = [text]
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await ws.send_texts(batch)
        except WsClosed:
            pass
        finally:
            recv.close()
            connection_scope.cancel()

    async def _reader(self, conn: WsConn) -> None:
        while (text := await conn.ws.receive_message()) is not None:
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
        if self.modes.refuses(channel):
            refusal: tuple[str, int | None] = (
                ("Connection is unauthorized.", 4009) if private else ("Invalid channel provided.", None)
            )
            await conn.send.send(error_frame(*refusal))
            return True
        if private and (private.group(1) != str(self.user_id) or not self.tokens.valid(data.get("auth"))):
            await conn.send.send(error_frame("Connection is unauthorized.", 4009))
            return True
        if channel not in conn.subs and len(conn.subs) >= MAX_SUBSCRIPTIONS:
            # The 1,025th subscription closes the connection without a word (no bts:error).
            with contextlib.suppress(WsClosed):
                await conn.ws.send_close()
            return False
        conn.subs.add(channel)
        self._notify()
        await conn.send.send(ack_frame("bts:subscription_succeeded", channel))
        return True


async def serve_ws(
    hub: WsHub, *, host: str = "127.0.0.1", port: int = 0, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Serve until cancelled; ``task_status.started(port)`` once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, hub.handle, listeners)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")
