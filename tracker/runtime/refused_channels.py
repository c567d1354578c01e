"""Channels degrade alone: a channel the server keeps refusing is set aside and retried by itself with back-off,
while every other channel of the connection stays subscribed.

Bitstamp answers a refused ``bts:subscribe`` with a ``bts:error`` that names no channel (docs/bitstamp.md §1.3), so a
subscribe book is needed here too (one retry in flight at a time: an error then belongs to it without doubt). The
connection's control loop feeds acks and errors in; ``Connection._retry_refused`` sends the retries when they are due.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

import trio

from tracker.bitstamp.subscriptions import SubscribeFailure, SubscriptionBook
from tracker.runtime.backoff import Backoff

REFUSALS_BEFORE_SET_ASIDE = 3  # failed subscribes of one channel on one connection before it is retried alone
RETRY_BASE_S = 5.0
RETRY_CAP_S = 300.0


@dataclass
class RefusedChannels:
    ack_timeout: float = 5.0
    base_s: float = RETRY_BASE_S
    cap_s: float = RETRY_CAP_S
    rng: random.Random | None = None
    due: dict[str, float] = field(default_factory=dict)  # refused channel -> trio time of its next subscribe
    failures: Counter[str] = field(default_factory=Counter)
    changed: trio.Event = field(default_factory=trio.Event)  # set when ``due`` or the book changed
    _backoffs: dict[str, Backoff] = field(default_factory=dict)
    _book: SubscriptionBook = field(init=False)

    def __post_init__(self) -> None:
        self._book = SubscriptionBook([], max_in_flight=1, ack_timeout=self.ack_timeout)

    def __bool__(self) -> bool:
        return bool(self.due) or self._book.in_flight > 0

    def refuse(self, channel: str, now: float) -> float:
        """Set ``channel`` aside; returns the delay before it is subscribed again (growing, capped, jittered)."""
        backoff = self._backoffs.setdefault(channel, Backoff(base=self.base_s, cap=self.cap_s, rng=self.rng))
        delay = backoff.next_delay()
        self.due[channel] = now + delay
        self._changed()
        return delay

    def take_due(self, now: float) -> str | None:
        """The next refused channel to subscribe now, marked outstanding (None: nothing due, or one in flight)."""
        if self._book.in_flight:
            return None
        ready = sorted((at, ch) for ch, at in self.due.items() if at <= now)
        if not ready:
            return None
        channel = ready[0][1]
        del self.due[channel]
        self._book.retry(channel)
        return self._book.next_to_send(now)

    def next_wake(self) -> float:
        deadline = self._book.next_deadline()
        return min([*self.due.values(), deadline if deadline is not None else math.inf])

    def on_ack(self, channel: str) -> bool:
        """True when this ack is for a retried channel (now subscribed: no longer refused)."""
        if not self._book.on_ack(channel):
            return False
        self._backoffs.pop(channel, None)
        self._changed()
        return True

    def waiting(self) -> bool:
        """A retry is outstanding (a channel-less ``bts:error`` now is its answer)."""
        return self._book.in_flight > 0

    def on_error(self, code: int | None, message: str | None) -> SubscribeFailure | None:
        return self._book.on_error(code, message)

    def expire(self, now: float) -> list[SubscribeFailure]:
        return self._book.expire(now)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
