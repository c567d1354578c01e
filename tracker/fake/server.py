"""``open_fake_exchange``: the fake Bitstamp (HTTP on one port, WebSocket on another, both 127.0.0.1) plus the
controls tests and the demo use: on-demand or paced activity, ``wait_*`` helpers and wire faults."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from tracker.config import Settings

from tracker.fake.auth import Authenticator, QueryForm, TokenStore
from tracker.fake.http_server import HttpApp, serve_http
from tracker.fake.markets import DEFAULT_MARKETS
from tracker.fake.model import DEFAULT_SUBACCOUNTS, AccountModel, Emission
from tracker.fake.modes import Modes
from tracker.fake.rest import RestApi
from tracker.fake.wire import dumps
from tracker.fake.ws_server import WsHub, serve_ws

log = logging.getLogger("tracker.fake")

DEMO_API_KEY = "fakeKEYdemo0000000000000000000000"
DEMO_API_SECRET = "fakeSECRETdemo00000000000000000000"
DEMO_USER_ID = 314159
MALFORMED_FRAME = '{"event":"trade","channel":"private-my_trades_btcusd-0","data":{"id":1,"amount":'


@dataclass(eq=False)
class FakeExchange:
    """A running fake. Everything here is safe to call from the test's trio task."""

    api_url: str  # http://127.0.0.1:PORT/api/v2/
    ws_url: str  # ws://127.0.0.1:PORT
    api_key: str
    api_secret: str
    user_id: int
    markets: tuple[str, ...]
    model: AccountModel
    hub: WsHub
    http: HttpApp
    tokens: TokenStore
    clock: Callable[[], float]
    _nursery: trio.Nursery
    modes: Modes = field(default_factory=Modes)
    _gen_scope: trio.CancelScope | None = None
    _gen_lock: trio.Lock = field(default_factory=trio.Lock)

    # ------------------------------------------------------------------ pointing a tracker at it
    def tracker_variables(self, *, subaccount_keys: bool = False) -> dict[str, str]:
        """The environment variables that point a tracker at this fake: its URLs, its (fake) credentials, its
        markets and its sub-accounts (``TRACKER_SUBACCOUNTS``, the ledger contract's variable; empty: main only).
        With ``subaccount_keys``, also each sub-account's own key (``BITSTAMP_SUBACCOUNT_<N>_API_KEY`` and
        ``_API_SECRET``, issued by ``subaccount_credentials``)."""
        variables = {
            "BITSTAMP_API_URL": self.api_url,
            "BITSTAMP_WS_URL": self.ws_url,
            "BITSTAMP_API_KEY": self.api_key,
            "BITSTAMP_API_SECRET": self.api_secret,
            "TRACKER_MARKETS": ",".join(self.markets),
            "TRACKER_SUBACCOUNTS": ",".join(self.subaccounts),
        }
        if subaccount_keys:
            for ident in self.subaccounts:
                key, secret = self.subaccount_credentials(ident)
                variables[f"BITSTAMP_SUBACCOUNT_{ident}_API_KEY"] = key
                variables[f"BITSTAMP_SUBACCOUNT_{ident}_API_SECRET"] = secret
        return variables

    def subaccount_credentials(self, ident: str | int) -> tuple[str, str]:
        """Issue (or give again) sub-account ``ident``'s own API key and secret: a request signed with them acts for
        that sub-account whatever its ``X-Auth-Subaccount-Id`` header says. Deterministic per id."""
        tai = str(int(ident))
        if tai not in self.subaccounts:
            raise ValueError(f"the fake has no sub-account {ident} (it has {', '.join(self.subaccounts) or 'none'})")
        key, secret = f"fakeKEYsub{tai:0>23}", f"fakeSECRETsub{tai:0>21}"
        self.http.auth.subaccount_keys[key] = (secret, tai)
        return key, secret

    def settings(self, db_url: str, **overrides: Any) -> Settings:
        """A tracker's ``Settings`` pointed at this fake (its URLs, its fake credentials, its markets and
        sub-accounts), with ``overrides`` (``markets=...``, ``reconcile_interval_s=...``) on top."""
        from dataclasses import replace

        from tracker.config import Secret, Settings

        settings = Settings(
            db_url=db_url,
            api_key=Secret(self.api_key),
            api_secret=Secret(self.api_secret),
            api_url=self.api_url,
            ws_url=self.ws_url,
            markets=tuple(self.markets),
            subaccounts=tuple(self.subaccounts),
        )
        return replace(settings, **overrides)

    def tracker_env(self, base: Mapping[str, str], **extra: str) -> dict[str, str]:
        """A child tracker's environment: ``base`` (say ``os.environ``) without any ``BITSTAMP_*``/``TRACKER_*``
        variable (nothing of the caller's own configuration leaks in), then ``tracker_variables()``, then
        ``extra`` (``TRACKER_DB_URL=...`` and the like)."""
        env = {name: value for name, value in base.items() if not name.startswith(("BITSTAMP_", "TRACKER_"))}
        env.update(self.tracker_variables())
        env.update(extra)
        return env

    # ------------------------------------------------------------------ activity
    async def generate(self, n_steps: int = 1) -> list[Emission]:
        """Run ``n_steps`` model steps now and deliver their frames to subscribed connections; returns all frames
        (delivered or not) in wire order. Deterministic per seed when the clock is."""
        out: list[Emission] = []
        async with self._gen_lock:
            for _ in range(n_steps):
                emissions = self.model.step(int(self.clock() * 1_000_000))
                await self.hub.deliver(emissions)
                out.extend(emissions)
        return out

    async def generate_frames(self, n_frames: int) -> list[Emission]:
        """Step until at least ``n_frames`` frames were produced."""
        out: list[Emission] = []
        while len(out) < n_frames:
            out.extend(await self.generate(1))
        return out

    def set_rate(self, rate: float | None) -> None:
        """Start (or retune, or with None stop) the paced background generator at ``rate`` frames/s
        (``math.inf``: as fast as delivery allows)."""
        if self._gen_scope is not None:
            self._gen_scope.cancel()
            self._gen_scope = None
        if rate:
            scope = trio.CancelScope()
            self._gen_scope = scope
            self._nursery.start_soon(self._paced, rate, scope)

    async def _paced(self, rate: float, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                emissions = await self.generate(1)
                if math.isfinite(rate):
                    await trio.sleep(len(emissions) / rate)
                else:
                    await trio.lowlevel.checkpoint()

    def truth(self) -> dict[str, Any]:
        """Ground truth (docs/semantics.md); ``accounts`` holds each trade account's balances, ledger rows and
        withdrawal requests (docs/fake.md)."""
        return self.model.truth()

    @property
    def subaccounts(self) -> tuple[str, ...]:
        """The sub-account ids (``X-Auth-Subaccount-Id`` values), main account ``"0"`` not included."""
        return self.model.state.subaccounts

    def tamper_ledger_row(self, trade_account_id: str | int, row_id: int, currency: str, new_amount: Decimal) -> None:
        """Change one served ``user_transactions`` row of a trade account without changing its balances (a
        tracker's balance check must then show the difference); see :meth:`AccountState.tamper_ledger_row`."""
        self.model.state.tamper_ledger_row(trade_account_id, row_id, currency, new_amount)

    def private_channels(self) -> list[str]:
        """Every private channel a tracker subscribes here, suffixed with the user id: those the fake emits on, and
        ``live_order_trades`` and ``my_token_settlements`` (accepted, never sent on: their payloads are undocumented
        or for tokenized securities, docs/bitstamp.md §2.4, §2.7)."""
        out = []
        for m in self.model.markets:
            out += [self.model.channel(k, m) for k in ("my_orders", "my_trades", "live_trades", "live_order_trades")]
        if self.model.perps:
            out += [self.model.channel("my_settlements"), self.model.channel("my_liquidations")]
        return [*out, self.model.channel("my_token_settlements")]

    # ------------------------------------------------------------------ waiting
    async def wait_subscribed(self, channels: int | Iterable[str]) -> None:
        """Until at least N distinct channels (or all the given channels) have a live subscriber."""
        if isinstance(channels, int):
            n = channels
            await self.hub.wait_for(lambda: len(self.hub.subscribed()) >= n)
        else:
            wanted = set(channels)
            await self.hub.wait_for(lambda: wanted <= self.hub.subscribed())

    async def wait_connections(self, n: int) -> None:
        """Until exactly ``n`` WebSocket connections are open (0: all gone)."""
        await self.hub.wait_for(lambda: len(self.hub.conns) == n)

    async def wait_connections_total(self, n: int) -> None:
        """Until ``n`` connections were ever accepted (counts reconnects)."""
        await self.hub.wait_for(lambda: self.hub.connections_total >= n)

    # ------------------------------------------------------------------ faults
    async def request_reconnect(
        self, close_after: float = 3.0, *, invalidate_tokens: bool = True, data_null: bool = False
    ) -> None:
        """Send ``bts:request_reconnect`` to every connection, invalidate all tokens (a server-forced reconnect
        invalidates them, per JKorf), and close those connections ``close_after`` seconds later (trio time)."""
        if invalidate_tokens:
            self.tokens.invalidate_all()
        conns = list(self.hub.conns)
        frame = dumps({"event": "bts:request_reconnect", "channel": "", "data": None if data_null else ""})
        await self.hub.broadcast(frame)

        async def close_later() -> None:
            await trio.sleep(close_after)
            for conn in conns:
                await conn.aclose(1000, "reconnect")

        self._nursery.start_soon(close_later)

    async def drop_connections(self) -> None:
        """Abrupt TCP drop (RST, no close frame) of every connection."""
        for conn in list(self.hub.conns):
            await conn.stream.abort()
            conn.cancel.cancel()

    def stall(self) -> None:
        """Current connections go silent: nothing is sent (no frames, acks, heartbeat replies or pongs); the socket
        stays open. Frames meanwhile reach REST only. New connections are not affected."""
        for conn in self.hub.conns:
            conn.stream.stall()

    def unstall(self) -> None:
        for conn in self.hub.conns:
            conn.stream.unstall()

    def duplicate_next(self, n: int = 1) -> None:
        """Deliver each of the next ``n`` emitted frames twice."""
        self.hub.duplicate += n

    async def send_malformed(self) -> None:
        """One truncated (invalid JSON) frame to every connection."""
        await self.hub.broadcast(MALFORMED_FRAME)

    async def send_unknown_event(self) -> None:
        """A well-formed frame with an unknown event name, on one of each connection's subscribed channels."""
        for conn in list(self.hub.conns):
            channel = min(conn.subs) if conn.subs else ""
            text = dumps({"event": "order_frozen", "channel": channel, "data": {"note": "unknown event (fault)"}})
            await conn.send.send(text)

    def set_token_ttl(self, seconds: float) -> None:
        """``valid_sec`` of tokens issued from now on."""
        self.tokens.ttl = seconds

    def invalidate_tokens(self) -> None:
        self.tokens.invalidate_all()

    def pause_delivery(self) -> None:
        """Withhold frames from every socket (they stay visible over REST) until :meth:`resume_delivery`."""
        self.hub.paused = True

    def resume_delivery(self) -> None:
        self.hub.paused = False

    def revoke_key(self) -> None:
        """Delete the account's API key: every request signed with it is refused (API0001) until
        :meth:`restore_key`. Sockets already open stay open (their tokens were issued): drop them to make a tracker
        ask for a new token."""
        self.http.auth.revoked = True

    def restore_key(self) -> None:
        self.http.auth.revoked = False

    def add_key(self, api_key: str, api_secret: str) -> None:
        """Create another API key of the main account (a key rotation's new one): it acts as the first does, and
        stays valid when :meth:`revoke_key` deletes the first."""
        self.http.auth.more_keys[api_key] = api_secret

    def reject_next_requests(self, n: int = 1) -> None:
        """Answer the next ``n`` HTTP requests with HTTP 429 ``400.002`` (rate limit exceeded)."""
        self.http.faults.reject_next += n


@asynccontextmanager
async def open_fake_exchange(
    *,
    seed: int = 0,
    markets: tuple[str, ...] | list[str] = DEFAULT_MARKETS,
    rate: float | None = None,
    user_id: int = DEMO_USER_ID,
    api_key: str = DEMO_API_KEY,
    api_secret: str = DEMO_API_SECRET,
    clock: Callable[[], float] = time.time,
    token_ttl: float = 60.0,
    http_port: int = 0,
    ws_port: int = 0,
    host: str = "127.0.0.1",
    modes: Modes | Iterable[str] = (),
    subaccounts: tuple[int, ...] | list[int] = DEFAULT_SUBACCOUNTS,
) -> AsyncIterator[FakeExchange]:
    """Start the fake's HTTP and WebSocket servers (port 0 = any free port) and yield the running exchange.

    ``clock`` is wall-clock unix seconds (auth window, token expiry, open_orders cache, frame timestamps); pass
    ``lambda: T0 + trio.current_time()`` to run on trio's (autojump) clock. ``rate`` frames/s starts the paced
    generator (``None``: activity only via :meth:`FakeExchange.generate`). ``modes``: a :class:`Modes` or mode
    names (``["unsigned", "refuse-channel=my_token_settlements"]``, see :mod:`tracker.fake.modes`); none by default.
    ``subaccounts``: the sub-account ids beside the main account (``()``: main account only).
    """
    modes = modes if isinstance(modes, Modes) else Modes.parse(modes)
    model = AccountModel(
        seed, tuple(markets), user_id, int(clock() * 1_000_000), modes=modes, subaccounts=tuple(subaccounts)
    )
    tokens = TokenStore(clock, token_ttl)
    api = RestApi(model.state, tokens, user_id, clock, modes=modes)
    query_form: QueryForm = "query" if modes.get_query_bare else "?query"
    http = HttpApp(api, Authenticator(api_key, api_secret, clock, query_form=query_form), modes=modes)
    hub = WsHub(tokens, user_id, modes=modes)
    async with trio.open_nursery() as nursery:
        hp = await nursery.start(
            lambda task_status: serve_http(http, host=host, port=http_port, task_status=task_status)
        )
        wp = await nursery.start(lambda task_status: serve_ws(hub, host=host, port=ws_port, task_status=task_status))
        fx = FakeExchange(
            api_url=f"http://{host}:{hp}/api/v2/",
            ws_url=f"ws://{host}:{wp}",
            api_key=api_key,
            api_secret=api_secret,
            user_id=user_id,
            markets=tuple(markets),
            model=model,
            hub=hub,
            http=http,
            tokens=tokens,
            clock=clock,
            _nursery=nursery,
            modes=modes,
        )
        fx.set_rate(rate)
        try:
            yield fx
        finally:
            nursery.cancel_scope.cancel()
