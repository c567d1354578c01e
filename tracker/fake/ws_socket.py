"""One server-side WebSocket connection of the fake, spoken with wsproto directly over a trio stream.

The fake used to run trio-websocket's server, but it needs two things that library keeps private: the stream under
a connection (to stall it or reset it, :class:`FaultStream`) and a way to write many queued frames in one TCP
write (:meth:`WsSocket.send_texts`, the fake's throughput). wsproto is the state machine trio-websocket itself
drives, so the bytes on the wire are the same; this module is the small part of a server the fake needs (compare
:mod:`tracker.fake.http_server`, which does the same for HTTP with h11):

- the opening handshake: any path is accepted, no subprotocol, no extension (no compression, like the real server);
- text messages out, several per ``send_all``; client messages in, reassembled from fragments, and a client message
  of ``max_message_bytes`` + 1 or more closes the connection with 1009 (docs/bitstamp.md §1.2);
- pings answered with pongs (through the same stream, so a stalled stream answers none);
- the close handshake either way: a peer's close frame is echoed and ends the connection; after our own close frame
  the peer's data is dropped until its close frame (or its end) arrives.

Sending is serialised by one lock held across wsproto's ``send`` and the stream's ``send_all``, so the order of the
bytes on the wire is the order of wsproto's state changes (a data frame can never follow our close frame).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

RECEIVE_BYTES = 65536
MESSAGE_TOO_BIG = 1009


class WsClosed(Exception):
    """Nothing more can be sent: the connection is closing or closed, or its stream is gone."""


class FaultStream(trio.abc.Stream):
    """Wraps a connection's stream so the fake can stall it (sends block, so no frame, reply or pong leaves while
    the socket stays open) or drop it abruptly (a TCP reset, no close frame)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
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
        """Close with SO_LINGER 0: the peer sees a TCP reset, no close frame. (A stream that is not a socket, as in
        the tests' memory streams, is just closed.)"""
        if isinstance(self.inner, trio.SocketStream):
            with contextlib.suppress(OSError):
                self.inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.inner.aclose()


class WsSocket:
    """The protocol side of one connection. One task receives (:meth:`accept`, then :meth:`receive_message` until
    it returns None); any task may send. :meth:`aclose` ends it from the receiving task."""

    def __init__(self, stream: FaultStream, *, max_message_bytes: int) -> None:
        self.stream = stream
        self.max_message_bytes = max_message_bytes
        self._ws = WSConnection(ConnectionType.SERVER)
        self._send_lock = trio.Lock()
        self._parts: list[str] = []
        self._size = 0
        self._over = False  # the peer's side is finished: closed, ended, broken or unintelligible

    @property
    def is_open(self) -> bool:
        return self._ws.state is ConnectionState.OPEN

    async def accept(self) -> bool:
        """Read the opening handshake and accept it. False if the peer left first or sent something else than a
        WebSocket upgrade (then it got the handshake's rejection, as trio-websocket's server answers)."""
        while True:
            for event in self._ws.events():
                if isinstance(event, Request):
                    await self._send_events([AcceptConnection()])
                    return True
            data = await self._receive_bytes()
            if not data:
                return False
            try:
                self._ws.receive_data(data)
            except RemoteProtocolError as exc:
                if exc.event_hint is not None:
                    with contextlib.suppress(WsClosed, LocalProtocolError):
                        await self._send_events([exc.event_hint])
                return False

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Text messages, in order, in one ``send_all``: the same bytes as one write per message, one syscall.
        Raises :class:`WsClosed` once a close frame went either way or the stream is gone."""
        async with self._send_lock:
            if self._ws.state is not ConnectionState.OPEN:
                raise WsClosed
            send = self._ws.send
            await self._send_all(b"".join([send(TextMessage(data=text)) for text in texts]))

    async def send_close(self, code: int = 1000, reason: str | None = None) -> None:
        """Start the close handshake (nothing if it has started already). Raises :class:`WsClosed` if the stream
        is gone."""
        async with self._send_lock:
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._send_all(self._ws.send(CloseConnection(code=code, reason=reason)))

    async def receive_message(self) -> str | None:
        """The peer's next complete message (a binary one decoded as UTF-8) while the connection is open; None when
        it is over: closed by either side's close frame (the peer's is echoed here), ended, broken or refused for
        its size. Pings are answered on the way; messages after our own close frame are dropped."""
        while not self._over:
            for event in self._ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    text = await self._on_data(event)
                    if text is not None:
                        return text
                elif isinstance(event, Ping) and self._ws.state is ConnectionState.OPEN:
                    with contextlib.suppress(WsClosed):
                        await self._send_events([event.response()])
                elif isinstance(event, CloseConnection):
                    await self._on_close(event)
                    return None
            data = await self._receive_bytes()
            if not data:
                self._over = True
                break
            try:
                self._ws.receive_data(data)
            except RemoteProtocolError:  # pragma: no cover - wsproto reports bad frames as CloseConnection events
                self._over = True
        return None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close as trio-websocket's server does after its handler: a close frame if none went yet, then wait for
        the peer's (its data dropped) or its end, then close the stream. Call from the receiving task; the caller
        bounds the wait (a cancelled wait still closes the stream)."""
        try:
            with contextlib.suppress(WsClosed):
                await self.send_close(code, reason)
            while await self.receive_message() is not None:
                pass
        finally:
            await self.stream.aclose()

    async def _on_data(self, event: TextMessage | BytesMessage) -> str | None:
        if self._ws.state is not ConnectionState.OPEN:
            return None  # after our close frame: dropped
        part = event.data if isinstance(event, TextMessage) else bytes(event.data).decode("utf-8", "replace")
        self._size += len(part.encode("utf-8"))
        self._parts.append(part)
        if self._size > self.max_message_bytes:
            self._parts, self._size = [], 0
            limit = self.max_message_bytes + 2  # the real server's wording: "read limited at 513 bytes"
            with contextlib.suppress(WsClosed):
                await self.send_close(MESSAGE_TOO_BIG, f"read limited at {limit} bytes")
            return None
        if not event.message_finished:
            return None
        text = "".join(self._parts)
        self._parts, self._size = [], 0
        return text

    async def _on_close(self, event: CloseConnection) -> None:
        """The peer's close frame (its reply to ours, or its own) or a frame wsproto could not parse (reported as a
        close event while the state is still open: answered with a close frame carrying wsproto's code)."""
        self._over = True
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            with contextlib.suppress(WsClosed):
                await self._send_events([event.response()])
        elif self._ws.state is ConnectionState.OPEN:
            with contextlib.suppress(WsClosed):
                await self.send_close(event.code, event.reason)

    async def _send_events(self, events: Sequence[Event]) -> None:
        async with self._send_lock:
            await self._send_all(b"".join([self._ws.send(event) for event in events]))

    async def _send_all(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WsClosed from exc

    async def _receive_bytes(self) -> bytes:
        """The next bytes from the peer; empty at its end or when the stream broke or was closed under us."""
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
        return data if isinstance(data, bytes) else bytes(data)  # memory streams give bytearrays
