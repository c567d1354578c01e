"""Websocket tokens: minted single-flight, shared by a subscribe batch, never reused across a reconnect.

Tokens are numbered as they are minted. ``get(newer_than=n)`` returns the cached token only if its number is above
``n`` and it is still comfortably inside ``valid_sec``: a connection passes ``tokens.generation`` read when it
connected, so every new connection gets a token minted after it connected (numbers, not times: two events at the
same clock reading are still ordered). Concurrent callers wait on one lock, so a burst of subscribes mints once
(ccxt #29393).
``invalidate`` drops a token the server refused (4009). Tokens live only in memory and are registered for log
redaction by the client the moment they arrive.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from tracker.exchange.rest import WsToken


class TokenSource:
    def __init__(self, fetch: Callable[[], Awaitable[WsToken]], *, margin: float = 10.0) -> None:
        self._fetch = fetch
        self._margin = margin
        self._lock = trio.Lock()
        self._token: WsToken | None = None
        self._minted_at = -math.inf
        self.generation = 0  # number of the newest token minted

    def __repr__(self) -> str:
        return f"TokenSource(generation={self.generation})"

    def _usable(self, newer_than: int, now: float) -> bool:
        if self._token is None or self.generation <= newer_than:
            return False
        lifetime = self._token.valid_sec
        return now < self._minted_at + lifetime - min(self._margin, lifetime / 2)

    async def get(self, *, newer_than: int = -1) -> tuple[WsToken, int]:
        """A usable token numbered above ``newer_than``, and its number."""
        async with self._lock:
            cached = self._token
            if cached is not None and self._usable(newer_than, trio.current_time()):
                return cached, self.generation
            started = trio.current_time()
            token = await self._fetch()
            self._token, self._minted_at = token, started
            self.generation += 1
            return token, self.generation

    def invalidate(self, token: WsToken) -> None:
        if self._token is token:
            self._token = None
