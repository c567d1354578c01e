"""The polite REST API: every call of backfill and reconciliation goes through one rate budget and one retry policy.

Politeness (docs/bitstamp.md §5.8): a sliding window of ≤ 400 requests/s and a budget of ≤ 10,000 per 10 minutes
(both configurable; the limits hold for *every* window, not on average), and capped jittered back-off on
400.002/400.067/400.068/429 (``RateLimited``, honouring ``Retry-After``), 5xx (``ServerError``) and transport errors.
A response whose signature does not match is retried the same way (a proxy or a torn read is the likely cause), then
raised. Anything else (an API error code, bad credentials) is the caller's to judge: it is raised at once.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from tracker.exchange.errors import ExchangeUnreachable, RateLimited, ResponseSignatureError, ServerError
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backoff import Backoff

log = logging.getLogger("tracker.backfill")
T = TypeVar("T")


class RateLimiter:
    """≤ ``per_second`` requests in any 1 s and ≤ ``per_window`` in any ``window_s`` (sliding windows over the
    times of the last requests, so the limits hold for *every* window, not on average). Times come from ``clock``
    (trio's, so ``autojump_clock`` tests it instantly)."""

    def __init__(
        self,
        per_second: int = 400,
        per_window: int = 10_000,
        window_s: float = 600.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if per_second < 1 or per_window < 1 or window_s <= 0:
            raise ValueError("rate limits must be positive")
        self.limits = ((int(per_second), 1.0), (int(per_window), float(window_s)))
        self.clock = clock
        self._recent: deque[float] = deque(maxlen=max(n for n, _ in self.limits))
        self.waited_s = 0.0

    def _ready_at(self) -> float:
        ready = -math.inf
        for count, span in self.limits:
            if len(self._recent) >= count:
                ready = max(ready, self._recent[-count] + span)
        return ready

    async def acquire(self) -> None:
        # Re-checked after each wait: another task may have taken the slot meanwhile (no await between the last
        # check and the append, so two tasks never take the same slot).
        while (ready := self._ready_at()) > (now := self.clock()):
            self.waited_s += ready - now
            await trio.sleep_until(ready)
        self._recent.append(now)


@dataclass
class RequestStats:
    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class PoliteApi:
    """Every REST call of backfill and reconciliation goes through ``call``: the rate limiter first, then the call,
    with back-off and retry on rate limits, 5xx and transport errors (at most ``max_attempts`` tries)."""

    def __init__(
        self,
        client: BitstampClient,
        limiter: RateLimiter | None = None,
        *,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.limiter = limiter or RateLimiter()
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.stats = RequestStats()

    async def call(self, endpoint: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        backoff = Backoff(base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            self.stats.requests[endpoint] += 1
            try:
                return await fn(*args, **kwargs)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                failure: Exception = exc
            except (ServerError, ExchangeUnreachable, ResponseSignatureError) as exc:
                delay = backoff.next_delay()
                failure = exc
            if attempt >= self.max_attempts:
                raise failure
            self.stats.retries += 1
            log.info("%s: %s; retrying in %.1f s", endpoint, failure, delay)
            await trio.sleep(delay)


START_ATTEMPTS = 8  # bounded: an exchange that keeps refusing still ends the start with its error


async def call_at_start(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = START_ATTEMPTS,
    backoff: Backoff | None = None,
) -> T:
    """One call the run cannot start without (the markets check, the account's token, market discovery), retried
    with back-off on a rate limit (``Retry-After`` honoured) and on a 5xx: both say "later", not "wrong". Raised
    before this, a rate limit at start-up ended ``tracker run`` (exit 2) with "rate limited ...: backing off", which
    it did not do: a restart inside a busy 10 minutes (a supervisor's restart after a crash) could not start at all
    (found by ``bench/soak.py --kill-every``). An unreachable exchange or refused credentials are raised at once, as
    before: a wrong ``api_url`` or key is one error line, not minutes of retries."""
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except RateLimited as exc:
            delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
            failure: Exception = exc
        except ServerError as exc:
            delay = backoff.next_delay()
            failure = exc
        if attempt >= attempts:
            raise failure
        log.info("%s at start: %s; retrying in %.1f s", what, failure, delay)
        await trio.sleep(delay)
