"""Live ingest: private Bitstamp channels → the writer, with subscribe tracking, liveness and lossless reconnects.

Shape (one nursery per level, all under the service's nursery)::

    run_ingest                 token + account, channel list, one shard per ≤ 1,000 channels
    └── shard supervisor       keeps one healthy connection; make-before-break; capped jittered backoff
        └── connection         receive loop, subscribe (acks, timeouts, 4009 → new token), heartbeat, controls

Rules this module keeps:

- **Raw first.** Every text frame is classified once; a data frame on a private channel becomes a ``NewEntry`` whose
  payload is the exact text, malformed frames become ``QuarantineItem``; both go to the writer with the monotonic
  receive time. Nothing is interpreted before it is in the log. Frames on public channels are counted and dropped.
  Private frames on a channel we no longer subscribe (gotcha 23) are still logged: they are facts about the account,
  and the log's dedup key absorbs any double.
- **Make-before-break** on ``bts:request_reconnect``: the supervisor opens a second connection with a fresh token and
  waits until it is fully subscribed; only then is the old one drained and closed. Both feed the writer meanwhile.
- **Lossless close** (replacement and shutdown): unsubscribe every channel, send a heartbeat as a barrier, read until
  its reply (the server answers in order, so every frame it sent before is read), then close. trio-websocket's
  ``aclose`` discards unread messages, so closing without this barrier would lose frames in flight.
- **Liveness**: a heartbeat every ``heartbeat_interval``; if no frame at all (reply or data) arrives within
  ``heartbeat_timeout`` the connection is stalled: recorded, closed, replaced.
- **Lifecycle** events (connected, subscribed, subscribe_failed, ws_error, reconnect_requested, stalled, closed) are
  appended as ``source='tracker'`` entries through the same writer, so the log shows which windows were covered.
- Tokens and the API secret never reach a log line, an exception message or the database.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import trio

from tracker.bitstamp.channels import channels_for
from tracker.domain.timeutil import utc_now
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backoff import Backoff
from tracker.runtime.connection import (
    MAX_CHANNELS_PER_CONNECTION,
    Connection,
    ConnectionFailed,
    Connector,
    IngestContext,
    IngestOptions,
    IngestStats,
    default_connector,
    uuid4_hex,
)
from tracker.runtime.polite_api import call_at_start
from tracker.runtime.tokens import TokenSource
from tracker.runtime.writer import Item

__all__ = [
    "MAX_CHANNELS_PER_CONNECTION",
    "Connection",
    "ConnectionFailed",
    "IngestContext",
    "IngestOptions",
    "IngestStats",
    "Shard",
    "default_connector",
    "discover_markets",
    "run_ingest",
    "shard_channels",
]

log = logging.getLogger("tracker.ingest")


class Shard:
    """Keeps one connection alive for a fixed set of channels."""

    def __init__(self, ctx: IngestContext, index: int, channels: Sequence[str]) -> None:
        self.ctx = ctx
        self.index = index
        self.channels = tuple(channels)
        self.current: Connection | None = None
        self._connections: list[Connection] = []  # started ones, for the final close
        self._backoff = Backoff(base=ctx.options.backoff_base, cap=ctx.options.backoff_cap, rng=ctx.rng)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        events_send, events_recv = trio.open_memory_channel[Any](16)
        async with trio.open_nursery() as nursery, events_recv:
            nursery.start_soon(self._forward_stop, events_send.clone())
            async with events_send:
                current = await self._connect(nursery, events_send, "start")
                task_status.started()
                if current is None:
                    return
                async for event in events_recv:
                    kind: Literal["stop", "reconnect", "dead"] = event[0]
                    if kind == "stop":
                        # Every connection still open (a replaced one may be mid-way through its own close) is
                        # closed losslessly before the shard ends; nothing here is cancelled.
                        for connection in self._connections:
                            connection.request_close()
                        for connection in self._connections:
                            await connection.finished.wait()
                        nursery.cancel_scope.cancel()
                        return
                    if event[1] is not current:
                        continue  # an old connection's news after it was replaced
                    if kind == "reconnect":
                        new = await self._connect(nursery, events_send, "reconnect requested")
                        if new is None:  # stopped while connecting: the "stop" event closes everything
                            continue
                        nursery.start_soon(current.close_and_wait)
                        current = new
                    elif kind == "dead":
                        if trio.current_time() - current.started_at >= self.ctx.options.healthy_after:
                            self._backoff.reset()
                        new = await self._connect(nursery, events_send, event[2], delay_first=True)
                        if new is None:
                            return
                        current = new
                    self.current = current

    async def _forward_stop(self, events: trio.MemorySendChannel[Any]) -> None:
        async with events:
            await self.ctx.stop.wait()
            await events.send(("stop",))

    async def _connect(
        self, nursery: trio.Nursery, events: trio.MemorySendChannel[Any], why: str, *, delay_first: bool = False
    ) -> Connection | None:
        """Start a connection and wait until it is fully subscribed, retrying with backoff; None if stopped."""
        delay = self._backoff.next_delay() if delay_first else 0.0
        while True:
            if delay:
                log.info("shard %d: reconnecting in %.1f s (%s)", self.index, delay, why)
                with trio.move_on_after(delay):
                    await self.ctx.stop.wait()
            if self.ctx.stop.is_set():
                return None
            connection = Connection(self.ctx, self.channels, events, fresh_token=why != "start")
            try:
                started: Connection = await nursery.start(connection.run)
            except ConnectionFailed as exc:
                why = str(exc)
                log.warning("shard %d: connection attempt failed: %s", self.index, why)
                delay = self._backoff.next_delay()
                continue
            self.current = started
            self._connections = [c for c in self._connections if not c.finished.is_set()] + [started]
            return started


def shard_channels(channels: Sequence[str], size: int) -> list[list[str]]:
    if size < 1:
        raise ValueError("shard size must be at least 1")
    return [list(channels[i : i + size]) for i in range(0, len(channels), size)] or [[]]


async def discover_markets(client: BitstampClient) -> tuple[str, ...]:
    """The account's markets: ``my_markets/`` where the exchange has it, else every market of ``markets/``."""
    from tracker.exchange.errors import ApiError

    try:
        rows = await call_at_start("my_markets/", client.my_markets)
    except ApiError:
        rows = await call_at_start("markets/", client.markets)
    symbols = [str(row.get("market_symbol") or row.get("url_symbol") or "") for row in rows if isinstance(row, dict)]
    return tuple(s.lower() for s in symbols if s)


async def run_ingest(
    client: BitstampClient,
    ws_url: str,
    writer: trio.MemorySendChannel[Item],
    *,
    markets: Sequence[str] | None,
    stop: trio.Event,
    options: IngestOptions | None = None,
    stats: IngestStats | None = None,
    wall: Callable[[], datetime] = utc_now,
    uid: Callable[[], str] = uuid4_hex,
    rng: random.Random | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect: Connector | None = None,
    task_status: trio.TaskStatus[IngestContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Subscribe every private channel of the account and feed the writer until ``stop`` is set (then drain)."""
    options = options or IngestOptions()
    async with writer:
        tokens = TokenSource(client.websockets_token)
        first, _ = await call_at_start("websockets_token/", tokens.get)
        account = first.user_id
        symbols = tuple(markets) if markets else await discover_markets(client)
        channels = channels_for(symbols, account, extras=options.extra_channels)
        ctx = IngestContext(
            account=account,
            ws_url=ws_url,
            tokens=tokens,
            writer=writer,
            options=options,
            stats=stats or IngestStats(),
            stop=stop,
            wall=wall,
            uid=uid,
            rng=rng or random.Random(),
            connect=connect or default_connector(ssl_context, options.message_queue_size),
        )
        shards = [
            Shard(ctx, i, part) for i, part in enumerate(shard_channels(channels, options.max_channels_per_connection))
        ]
        log.info(
            "account %s: %d markets, %d channels on %d connection(s)", account, len(symbols), len(channels), len(shards)
        )
        ctx.stats.subscribed_channels = len(channels)
        async with trio.open_nursery() as nursery:
            for shard in shards:
                await nursery.start(shard.run)
            task_status.started(ctx)
