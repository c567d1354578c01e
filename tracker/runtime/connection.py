"""One websocket connection and everything that runs on it: the receive loop (raw first), subscribing (acks,
timeouts, 4009 → a new token, refused channels set aside and retried alone), the heartbeat, server controls, and the
lossless close. The supervision around it (shards, make-before-break, back-off) is ``ingest.py``'s, which also
states the rules both keep.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import ssl
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from tracker.bitstamp.frames import Control, Data, Ignored, Malformed, classify, entry_from_data
from tracker.bitstamp.subscriptions import (
    HEARTBEAT_FRAME,
    SubscribeFailure,
    SubscriptionBook,
    subscribe_frame,
    unsubscribe_frame,
)
from tracker.domain import tracker_events as te
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.domain.tracker_events import tracker_entry
from tracker.errors import TrackerError, leaves
from tracker.exchange.errors import ExchangeUnreachable, RateLimited, ServerError
from tracker.exchange.ws import ConnectionClosed, WsConnection, WsUnreachable, open_ws
from tracker.runtime.backoff import Backoff
from tracker.runtime.refused_channels import REFUSALS_BEFORE_SET_ASIDE, RefusedChannels
from tracker.runtime.tokens import TokenSource
from tracker.runtime.writer import Item

log = logging.getLogger("tracker.ingest")

MAX_CHANNELS_PER_CONNECTION = 1000  # the server's cap is 1,024; keep a margin


def uuid4_hex() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class IngestOptions:
    heartbeat_interval: float = 15.0
    heartbeat_timeout: float = 10.0
    ack_timeout: float = 5.0
    max_in_flight: int = 4
    # per connection attempt while no channel is subscribed yet, then the connection is given up and replaced; once
    # one channel is, a channel refused REFUSALS_BEFORE_SET_ASIDE times is set aside and retried alone instead
    max_subscribe_failures: int = 8
    refused_retry_base: float = 5.0  # a set-aside channel's first retry after this long, then growing
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    healthy_after: float = 60.0  # a connection that lived this long resets the backoff
    close_timeout: float = 5.0  # bound on the lossless close (unsubscribe + barrier)
    max_channels_per_connection: int = MAX_CHANNELS_PER_CONNECTION
    extra_channels: bool = True  # also live_order_trades and my_token_settlements (captured by default)
    message_queue_size: int = 256


@dataclass
class IngestStats:
    frames: int = 0
    data_frames: int = 0
    control_frames: int = 0
    malformed: int = 0
    ignored: int = 0
    connections: int = 0
    reconnects: int = 0
    stalls: int = 0
    subscribe_failures: int = 0
    channels_refused: int = 0
    ws_errors: int = 0
    connected_now: int = 0
    subscribed_channels: int = 0
    last_reasons: list[str] = field(default_factory=list)


Connector = Callable[[str], AbstractAsyncContextManager[WsConnection]]


def default_connector(ssl_context: ssl.SSLContext | None = None, message_queue_size: int = 256) -> Connector:
    return functools.partial(open_ws, ssl_context=ssl_context, message_queue_size=message_queue_size)


class ConnectionFailed(Exception):
    """A connection attempt or a live connection ended abnormally; ``str`` is the reason (no secrets)."""


class _Dropped(Exception):
    pass


class _Stalled(Exception):
    pass


class _SubscribeGaveUp(Exception):
    pass


# Failures the reconnect loop handles. Anything else is a bug or a fatal refusal (bad key): it crashes loudly.
RECOVERABLE: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    _Dropped,
    _Stalled,
    _SubscribeGaveUp,
    WsUnreachable,
    ExchangeUnreachable,
    RateLimited,
    ServerError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


@dataclass
class IngestContext:
    """What every connection shares: the account, the token source, the writer, the clocks and ids."""

    account: str
    ws_url: str
    tokens: TokenSource
    writer: trio.MemorySendChannel[Item]
    options: IngestOptions
    stats: IngestStats
    stop: trio.Event
    wall: Callable[[], datetime]
    uid: Callable[[], str]
    rng: random.Random
    connect: Connector

    def lifecycle(self, event: str, data: dict[str, Any], connection_id: str | None) -> NewEntry:
        return tracker_entry(
            account=self.account,
            event=event,
            data=data,
            received_at=self.wall(),
            uid=self.uid(),
            connection_id=connection_id,
        )


def _describe_fatal(group: BaseExceptionGroup[Exception]) -> str:
    """The ``closed`` reason of a connection ended by an error the run ends on: a tracker error's own message (it says
    what to do and holds no secret), else only the exception's type (a bug's text may hold anything)."""
    first = leaves(group)[0]
    return f"{type(first).__name__}: {first}" if isinstance(first, TrackerError) else type(first).__name__


def _describe(group: BaseException) -> str:
    parts = []
    for exc in leaves(group):
        text = str(exc)
        parts.append(f"{type(exc).__name__.lstrip('_')}{': ' + text if text else ''}")
    return "; ".join(parts) or type(group).__name__


class Connection:
    """One websocket connection and everything that runs on it."""

    def __init__(
        self,
        ctx: IngestContext,
        channels: Sequence[str],
        events: trio.MemorySendChannel[Any],
        *,
        fresh_token: bool = True,
    ) -> None:
        self.ctx = ctx
        self.fresh_token = fresh_token
        self.channels = tuple(channels)
        self.events = events
        self.id = f"ws-{ctx.uid()}"
        self.started = False
        self.started_at = math.inf
        self.finished = trio.Event()
        self._ws: WsConnection | None = None
        self._writer = ctx.writer.clone()
        self._heard = trio.Event()  # any frame since the last heartbeat
        self._heartbeat_reply = trio.Event()
        self._close_requested = trio.Event()
        self._closing = False
        self._heartbeat_scope = trio.CancelScope()
        self.refused = RefusedChannels(
            ack_timeout=ctx.options.ack_timeout, base_s=ctx.options.refused_retry_base, rng=ctx.rng
        )

    def __repr__(self) -> str:
        return f"Connection({self.id}, {len(self.channels)} channels)"

    async def _to_writer(self, item: NewEntry | QuarantineItem, received: float) -> None:
        # The common case costs no checkpoint (the socket read already had one). When the buffer is full we wait
        # (back-pressure), shielded: a frame read off the socket reaches the writer even when we are being
        # cancelled. The writer is never cancelled before its producers are gone, so this cannot hang.
        try:
            self._writer.send_nowait((item, received))
        except trio.WouldBlock:
            with trio.CancelScope(shield=True):
                await self._writer.send((item, received))

    async def record(self, event: str, data: dict[str, Any]) -> None:
        await self._to_writer(self.ctx.lifecycle(event, data, self.id), trio.current_time())

    def request_close(self) -> None:
        self._close_requested.set()

    async def close_and_wait(self) -> None:
        self.request_close()
        await self.finished.wait()

    # -- the task ------------------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe, report started, then run until closed. Raises ``ConnectionFailed`` on failure."""
        failure: str | None = None
        fatal: BaseExceptionGroup[Exception] | None = None
        try:
            async with self._writer:
                try:
                    await self._run(task_status)
                except* RECOVERABLE as group:
                    failure = _describe(group)
                except* Exception as group:  # a refusal the run ends on (a deleted key) or a bug: logged, then raised
                    fatal = group
                with trio.CancelScope(shield=True):
                    reason = failure or ("stopped" if self.ctx.stop.is_set() else "replaced")
                    if fatal is not None:
                        reason = _describe_fatal(fatal)
                    await self.record(te.CLOSED, {"reason": reason, "channels": len(self.channels)})
            if fatal is not None:  # as it came (``except*`` wrapped a lone exception in a group)
                raise fatal.exceptions[0] if len(fatal.exceptions) == 1 else fatal
        finally:
            if self.started:
                self.ctx.stats.connected_now -= 1
            self.finished.set()
        if failure is not None:
            self.ctx.stats.last_reasons = [*self.ctx.stats.last_reasons[-9:], failure]
            if not self.started:
                raise ConnectionFailed(failure)
            log.warning("connection %s closed: %s", self.id, failure)
            await self.events.send(("dead", self, failure))

    async def _run(self, task_status: trio.TaskStatus[Connection]) -> None:
        ctx = self.ctx
        # A reconnect never uses a token minted before it connected (the first connection may use the start-up one).
        generation = ctx.tokens.generation if self.fresh_token else 0
        async with ctx.connect(ctx.ws_url) as ws:
            self._ws = ws
            ctx.stats.connections += 1
            await self.record(te.CONNECTED, {"url": ctx.ws_url, "channels": len(self.channels)})
            log.info("connected %s to %s", self.id, ctx.ws_url)
            async with trio.open_nursery() as nursery:
                control_send, control_recv = trio.open_memory_channel[Control](256)
                nursery.start_soon(self._receive_loop, ws, control_send)
                acked = await self._subscribe(ws, control_recv, generation)
                refused = sorted(self.refused.due)
                await self.record(te.SUBSCRIBED, {"channels": acked, "count": len(acked), "refused": refused})
                log.info(
                    "subscribed %d channels on %s%s",
                    len(acked),
                    self.id,
                    f" ({len(refused)} refused, retried alone)" if refused else "",
                )
                self.started = True
                self.started_at = trio.current_time()
                ctx.stats.connected_now += 1
                task_status.started(self)
                nursery.start_soon(self._heartbeat, ws)
                nursery.start_soon(self._close_when_requested, ws)
                nursery.start_soon(self._retry_refused, ws)
                await self._control_loop(control_recv)
                nursery.cancel_scope.cancel()

    async def _receive_loop(self, ws: WsConnection, controls: trio.MemorySendChannel[Control]) -> None:
        ctx = self.ctx
        stats = ctx.stats
        debug = log.isEnabledFor(logging.DEBUG)
        # Closed synchronously on the way out (``with``, not ``async with``): a checkpoint there would let the
        # control loop's cancel replace the exception that says why this connection ended.
        with controls:
            while True:
                try:
                    text = await ws.receive()
                except ConnectionClosed:
                    if self._closing:
                        return
                    raise _Dropped(ws.close_reason or "connection closed by the peer") from None
                received = trio.current_time()
                stats.frames += 1
                self._heard.set()
                frame = classify(text)
                if isinstance(frame, Data):
                    item = entry_from_data(frame, account=ctx.account, received_at=ctx.wall(), connection_id=self.id)
                    if isinstance(item, Ignored):
                        stats.ignored += 1
                        if debug:
                            log.debug("ignored on %s: %s", self.id, item.reason)
                        continue
                    if isinstance(item, QuarantineItem):
                        stats.malformed += 1
                    else:
                        stats.data_frames += 1
                    if debug:
                        log.debug("frame on %s: %s %s", self.id, frame.channel, frame.event)
                    await self._to_writer(item, received)
                elif isinstance(frame, Malformed):
                    stats.malformed += 1
                    log.warning("malformed frame on %s quarantined: %s", self.id, frame.reason)
                    await self._to_writer(
                        QuarantineItem(
                            kind="malformed",
                            reason=frame.reason,
                            raw=text,
                            received_at=ctx.wall(),
                            account=ctx.account,
                            source="ws",
                            connection_id=self.id,
                        ),
                        received,
                    )
                else:
                    stats.control_frames += 1
                    if debug:
                        log.debug("control on %s: %s %s", self.id, frame.event, frame.channel)
                    if frame.kind == "heartbeat":
                        self._heartbeat_reply.set()
                    else:
                        await controls.send(frame)

    async def _subscribe(
        self, ws: WsConnection, controls: trio.MemoryReceiveChannel[Control], generation: int
    ) -> list[str]:
        """Subscribe every channel; returns those acknowledged. A channel refused ``REFUSALS_BEFORE_SET_ASIDE`` times
        is set aside (``self.refused``, retried alone later) once another channel is subscribed; while none is, the
        connection itself is suspect and ``max_subscribe_failures`` gives it up."""
        ctx = self.ctx
        opts = ctx.options
        book = SubscriptionBook(self.channels, max_in_flight=opts.max_in_flight, ack_timeout=opts.ack_timeout)
        backoff = Backoff(base=opts.backoff_base, cap=opts.backoff_cap, rng=ctx.rng)
        token, number = await ctx.tokens.get(newer_than=generation)
        failures_total = 0
        while not book.done:
            now = trio.current_time()
            while (channel := book.next_to_send(now)) is not None:
                await ws.send(subscribe_frame(channel, token.token))
            failures = []
            deadline = book.next_deadline()
            control: Control | None = None
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                try:
                    control = await controls.receive()
                except trio.EndOfChannel:
                    raise _Dropped(ws.close_reason or "closed while subscribing") from None
            if control is None:
                failures = book.expire(trio.current_time())
            elif control.kind == "subscription_succeeded":
                book.on_ack(control.channel)
            elif control.kind == "error":
                failure = book.on_error(control.code, control.message)
                if failure is None:
                    await self._ws_error(control)
                else:
                    failures.append(failure)
            elif control.kind == "request_reconnect":
                await self.record(te.RECONNECT_REQUESTED, {"while": "subscribing"})
                raise _Dropped("the server requested a reconnect while we were subscribing")
            if not failures:
                continue
            refresh = False
            for failure in failures:
                failures_total += 1
                ctx.stats.subscribe_failures += 1
                await self.record(
                    te.SUBSCRIBE_FAILED,
                    {"channel": failure.channel, "code": failure.code, "reason": failure.reason},
                )
                log.warning(
                    "subscribe to %s failed on %s: %s%s",
                    failure.channel,
                    self.id,
                    failure.reason,
                    f" (code {failure.code})" if failure.code is not None else "",
                )
                refresh = refresh or failure.unauthorized
                self.refused.failures[failure.channel] += 1
                if book.acked and self.refused.failures[failure.channel] >= REFUSALS_BEFORE_SET_ASIDE:
                    await self._set_aside(failure)
                else:
                    book.retry(failure.channel)
            if failures_total >= opts.max_subscribe_failures and not book.acked:
                raise _SubscribeGaveUp(f"{failures_total} failed subscribes on {self.id}")
            await trio.sleep(backoff.next_delay())
            if refresh:
                ctx.tokens.invalidate(token)
                token, number = await ctx.tokens.get(newer_than=number)
        if not book.acked:
            raise _SubscribeGaveUp(f"no channel could be subscribed on {self.id}")
        return list(book.acked)

    async def _set_aside(self, failure: SubscribeFailure) -> None:
        delay = self.refused.refuse(failure.channel, trio.current_time())
        self.ctx.stats.channels_refused += 1
        await self.record(
            te.CHANNEL_REFUSED,
            {
                "channel": failure.channel,
                "code": failure.code,
                "reason": failure.reason,
                "refusals": self.refused.failures[failure.channel],
                "retry_in_s": round(delay, 3),
            },
        )
        log.warning(
            "channel %s refused %d times on %s (%s): the others stay subscribed; retrying it alone in %.0f s",
            failure.channel,
            self.refused.failures[failure.channel],
            self.id,
            failure.reason,
            delay,
        )

    async def _retry_refused(self, ws: WsConnection) -> None:
        """Subscribe each set-aside channel again when its back-off is over (one at a time, with a current token);
        the control loop sees the answer (``RefusedChannels``)."""
        while True:
            changed = self.refused.changed
            with trio.move_on_at(self.refused.next_wake()):
                await changed.wait()
            now = trio.current_time()
            for failure in self.refused.expire(now):
                await self._set_aside(failure)
            if (channel := self.refused.take_due(now)) is not None:
                token, _ = await self.ctx.tokens.get()
                await ws.send(subscribe_frame(channel, token.token))

    async def _ws_error(self, control: Control) -> None:
        self.ctx.stats.ws_errors += 1
        await self.record(te.WS_ERROR, {"code": control.code, "message": control.message})
        log.warning("bts:error on %s: %s (code %s)", self.id, control.message, control.code)

    async def _control_loop(self, controls: trio.MemoryReceiveChannel[Control]) -> None:
        async for control in controls:
            if control.kind == "request_reconnect":
                self.ctx.stats.reconnects += 1
                await self.record(te.RECONNECT_REQUESTED, {})
                log.info("the server requested a reconnect on %s: replacing it (make-before-break)", self.id)
                await self.events.send(("reconnect", self, "requested by the server"))
            elif control.kind == "subscription_succeeded" and self.refused.on_ack(control.channel):
                await self.record(te.SUBSCRIBED, {"channels": [control.channel], "count": 1, "late": True})
                log.info("channel %s subscribed on %s after being refused", control.channel, self.id)
            elif control.kind == "error" and self.refused.waiting():
                failure = self.refused.on_error(control.code, control.message)
                if failure is not None:
                    self.refused.failures[failure.channel] += 1
                    if failure.unauthorized:
                        self.ctx.tokens.invalidate((await self.ctx.tokens.get())[0])
                    await self._set_aside(failure)
            elif control.kind == "error":
                await self._ws_error(control)
            # late subscription/unsubscription acks need nothing

    async def _heartbeat(self, ws: WsConnection) -> None:
        opts = self.ctx.options
        with self._heartbeat_scope:
            while True:
                await trio.sleep(opts.heartbeat_interval)
                self._heard = trio.Event()
                # The send is inside the timeout too: a send that blocks (peer not reading) is a stall as well.
                with trio.move_on_after(opts.heartbeat_timeout):
                    await ws.send(HEARTBEAT_FRAME)
                    await self._heard.wait()
                    continue
                self.ctx.stats.stalls += 1
                await self.record(te.STALLED, {"silent_for_s": opts.heartbeat_timeout})
                log.warning(
                    "connection %s stalled: no frame within %g s of a heartbeat", self.id, opts.heartbeat_timeout
                )
                raise _Stalled(f"no frame within {opts.heartbeat_timeout:g} s of a heartbeat")

    async def _close_when_requested(self, ws: WsConnection) -> None:
        """The lossless close: unsubscribe all, heartbeat barrier, then close."""
        await self._close_requested.wait()
        self._heartbeat_scope.cancel()
        with trio.move_on_after(self.ctx.options.close_timeout):
            for channel in self.channels:
                await ws.send(unsubscribe_frame(channel))
            self._heartbeat_reply = trio.Event()
            await ws.send(HEARTBEAT_FRAME)
            await self._heartbeat_reply.wait()
        self._closing = True
        await ws.aclose()
