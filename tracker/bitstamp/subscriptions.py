"""The subscribe state machine of one connection, pure (times are passed in).

Bitstamp answers each ``bts:subscribe`` with ``bts:subscription_succeeded`` naming the channel, or with a ``bts:error``
that names **no** channel (docs/bitstamp.md §1.3). So:

- a few subscribes at most are in flight (``max_in_flight``), one channel per frame;
- the server answers in order, so a ``bts:error`` belongs to the **oldest** outstanding subscribe (with one in flight
  this is the sheet's "most recent outstanding" rule; with several it is the only order-consistent reading);
- a subscribe unanswered after ``ack_timeout`` has failed (an error may have been lost, or the socket is dead);
- failed channels are handed back to the caller, which decides the retry policy (new token on 4009, backoff) and
  calls ``retry``.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

UNAUTHORIZED = 4009


@dataclass(frozen=True, slots=True)
class SubscribeFailure:
    channel: str
    code: int | None
    reason: str

    @property
    def unauthorized(self) -> bool:
        return self.code == UNAUTHORIZED


def subscribe_frame(channel: str, token: str | None) -> str:
    data: dict[str, str] = {"channel": channel}
    if token is not None:
        data["auth"] = token
    return json.dumps({"event": "bts:subscribe", "data": data}, separators=(",", ":"))


def unsubscribe_frame(channel: str) -> str:
    """The ``bts:unsubscribe`` frame of one channel. No ``auth`` even for a private channel: whether the server wants
    one is undocumented and both forms are reported to work (docs/bitstamp.md §1.2); the token may have expired."""
    return json.dumps({"event": "bts:unsubscribe", "data": {"channel": channel}}, separators=(",", ":"))


HEARTBEAT_FRAME = '{"event":"bts:heartbeat"}'


class SubscriptionBook:
    def __init__(self, channels: Iterable[str], *, max_in_flight: int = 4, ack_timeout: float = 5.0) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._queue: deque[str] = deque(dict.fromkeys(channels))
        self._pending: OrderedDict[str, float] = OrderedDict()  # channel -> sent at, oldest first
        self.acked: list[str] = []
        self._acked_set: set[str] = set()
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout

    @property
    def done(self) -> bool:
        return not self._queue and not self._pending

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def next_to_send(self, now: float) -> str | None:
        """The next channel to subscribe (now marked outstanding), or None when none may be sent."""
        if not self._queue or len(self._pending) >= self.max_in_flight:
            return None
        channel = self._queue.popleft()
        self._pending[channel] = now
        return channel

    def on_ack(self, channel: str) -> bool:
        """A ``bts:subscription_succeeded``; False if we were not waiting for it (a duplicate or stray ack)."""
        if self._pending.pop(channel, None) is None:
            return False
        if channel not in self._acked_set:
            self._acked_set.add(channel)
            self.acked.append(channel)
        return True

    def on_error(self, code: int | None, message: str | None) -> SubscribeFailure | None:
        """A channel-less ``bts:error``: the oldest outstanding subscribe failed (None if nothing was outstanding)."""
        if not self._pending:
            return None
        channel, _ = self._pending.popitem(last=False)
        return SubscribeFailure(channel, code, message or "")

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return next(iter(self._pending.values())) + self.ack_timeout

    def expire(self, now: float) -> list[SubscribeFailure]:
        failures: list[SubscribeFailure] = []
        while self._pending:
            channel, sent = next(iter(self._pending.items()))
            if sent + self.ack_timeout > now:
                break
            del self._pending[channel]
            failures.append(SubscribeFailure(channel, None, f"no acknowledgement within {self.ack_timeout:g} s"))
        return failures

    def retry(self, channel: str) -> None:
        """Queue a failed channel again (at the front: it was next in line)."""
        if channel not in self._pending and channel not in self._acked_set:
            self._queue.appendleft(channel)
