"""One Bitstamp WebSocket connection over trio-websocket: open, send text, receive text, close. No retry policy.

Client frames are checked against the server's limit before sending (docs/bitstamp.md §1.2: a frame of 512 bytes or more
gets the socket closed with 1009), so an oversized frame is a local ``FrameTooLarge`` and never reaches the wire.
Connection failures leave as ``WsUnreachable`` (handshake, DNS, refused, timeout) or ``trio_websocket.ConnectionClosed``
(an established connection went away); the runtime's reconnect loop catches exactly these.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from tracker.errors import ExchangeError
from tracker.logs import hide_password

MAX_CLIENT_FRAME_BYTES = 511  # strictly under 512
# What one socket read may take (trio-websocket's default is 4 KiB, about 7 of our frames). When frames arrive faster
# than they are handled, each read, its trio checkpoint and wsproto's pass over the buffer were paid every 7 frames;
# with 64 KiB (trio's own default read) about every 100: unpaced ingest, CPU per frame 69-70 -> 56-64 us on
# PostgreSQL, 85-96 -> 74-82 on SQLite (bench/ingest.py, two runs each, a loaded machine). One frame at a time costs
# the same (docs/storage.md, "Unpaced ingest").
RECEIVE_BUFFER = 64 * 1024

__all__ = ["MAX_CLIENT_FRAME_BYTES", "ConnectionClosed", "FrameTooLarge", "WsConnection", "WsUnreachable", "open_ws"]


class WsUnreachable(ExchangeError):
    pass


class FrameTooLarge(ValueError):
    pass


class WsConnection:
    """A thin wrapper: text in, text out, and the 512-byte client frame rule."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    @property
    def closed(self) -> bool:
        return self._ws.closed is not None

    @property
    def close_reason(self) -> str:
        reason = self._ws.closed
        if reason is None:
            return ""
        return f"{reason.code} {reason.name}{': ' + reason.reason if reason.reason else ''}"

    async def send(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > MAX_CLIENT_FRAME_BYTES:
            raise FrameTooLarge(f"client frame of {size} bytes: Bitstamp closes the socket at 512 or more")
        await self._ws.send_message(text)

    async def receive(self) -> str:
        message = await self._ws.get_message()
        if isinstance(message, bytes):
            return message.decode("utf-8", errors="replace")
        return message

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await self._ws.aclose(code, reason)


@asynccontextmanager
async def open_ws(
    url: str,
    *,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 1.0,
    message_queue_size: int = 256,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WsConnection]:
    """Open one connection; failures to connect become ``WsUnreachable`` with the URL and the reason."""
    try:
        cm = open_websocket_url(
            url,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
            message_queue_size=message_queue_size,
            max_message_size=4 * 1024 * 1024,
            receive_buffer_size=RECEIVE_BUFFER,
        )
        ws = await cm.__aenter__()
    except (HandshakeError, ConnectionRejected, ConnectionTimeout, OSError, trio.BrokenResourceError) as exc:
        raise WsUnreachable(
            f"cannot open the websocket at {hide_password(url)}: {type(exc).__name__}"
            f"{': ' + str(exc) if str(exc) else ''}; check BITSTAMP_WS_URL and your network"
        ) from exc
    try:
        yield WsConnection(ws)
    except BaseException as exc:
        if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await cm.__aexit__(None, None, None)
