"""The fake's `/api/v2/` routes over the account state (pure: requests in, status + JSON text out).

Pagination follows docs/bitstamp.md §5: ``user_transactions`` ``since_id`` is inclusive and forces ``limit`` 1000;
``account_order_data`` needs ``order_source``, ``since_id`` is inclusive, ``until_id`` exclusive, at most 1000 events,
oldest first, 404.008 when none; ``open_orders`` is cached for 10 s per URL; ``position_settlement_transactions`` is
paged like ``user_transactions`` (``sort`` default desc, ``limit`` default 100 up to 1000, ``offset`` up to 200000,
``since_timestamp``/``until_timestamp`` in unix seconds, a ``since_timestamp`` more than 30 days old refused).

Trade accounts: a request signed with a sub-account's own key (``FakeExchange.subaccount_credentials``) acts for that
sub-account whatever the header says; one signed with the main key acts for the sub-account its
``X-Auth-Subaccount-Id`` header names (unknown: 404.004);
``user_transactions/``, ``account_balances/`` and ``withdrawal-requests/`` answer for that trade account,
``crypto-transactions/`` always for the main account (:mod:`tracker.fake.rest_ledger` has those two routes).

The modes of :mod:`tracker.fake.modes` that concern REST answers are applied here: the derivatives refusals, the
order errors with HTTP 200 (``error-200``), ``settlement_time`` in milliseconds (``settlement-ms``) and the header
ignored (``subaccount-header-ignored``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tracker.fake import rest_ledger
from tracker.fake.auth import TokenStore
from tracker.fake.markets import Market
from tracker.fake.modes import DERIVATIVES_ENDPOINTS, Modes
from tracker.fake.state import AccountState, TradeAccount
from tracker.fake.wire import dumps, fixed, plain, rest_datetime

OPEN_ORDERS_CACHE_S = 10.0
EVENT_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PUBLIC_GET = {"markets/"}
SUBACCOUNT_HEADER = "x-auth-subaccount-id"
HYPHENATED = {"withdrawal-requests": "withdrawal_requests", "crypto-transactions": "crypto_transactions"}
SETTLEMENT_REACH_S = 30 * 86_400  # since_timestamp may reach this far back (docs/bitstamp.md §5.1, §5.7)
ERROR_200_ENDPOINTS = frozenset({"order_status", "open_orders"})  # "order endpoints" of docs/bitstamp.md §5.4
# The three envelopes the fake writes (docs/bitstamp.md §3.4): "response_code" (the usual ``NNN.MMM`` one),
# "message" (``{"code","message"}``, the derivatives endpoints) and "all" (``reason`` as ``{"__all__": [...]}``,
# the order endpoints' errors that come with HTTP 200).
Envelope = Literal["response_code", "message", "all"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, reason: str, envelope: Envelope = "response_code") -> None:
        super().__init__(f"{code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason
        self.envelope: Envelope = envelope

    def body(self) -> str:
        if self.envelope == "message":
            return dumps({"code": self.code, "message": self.reason})
        if self.envelope == "all":
            return dumps({"status": "error", "reason": {"__all__": [self.reason.rstrip(".")]}, "code": self.code})
        return dumps({"status": "error", "reason": self.reason, "response_code": self.code, "code": self.code})


@dataclass(slots=True)
class RestApi:
    state: AccountState
    tokens: TokenStore
    user_id: int
    clock: Callable[[], float]
    open_orders_cache: dict[str, tuple[float, str]] = field(default_factory=dict)
    modes: Modes = field(default_factory=Modes)
    derivatives_calls: int = 0  # answered or refused, for derivatives-flaky
    account: TradeAccount = field(init=False)  # the trade account of the request being answered (handle sets it)

    def __post_init__(self) -> None:
        self.account = self.state.main

    def handle(
        self,
        method: str,
        route: str,
        params: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        *,
        bound_to: str | None = None,
    ) -> str:
        """``route`` is the path below ``/api/v2/`` (``user_transactions/btcusd/``); ``headers`` (lowercase names)
        may hold ``x-auth-subaccount-id``; ``bound_to``: the sub-account whose own key signed the request (the header
        is then not looked at). Returns the JSON text."""
        parts = [p for p in route.split("/") if p]
        if not parts:
            raise ApiError(404, "404.001", "Not found.")
        head, rest = parts[0], parts[1:]
        if "_" in head and head.replace("_", "-") in HYPHENATED:
            raise ApiError(404, "404.001", "Not found.")  # only the spec's spelling, with hyphens
        head = HYPHENATED.get(head, head)
        self.account = self.state.accounts[bound_to] if bound_to else self._trade_account(headers or {})
        arg = rest[0] if rest else None
        if head == "fees" and rest[:1] == ["trading"]:
            head, rest = "fees_trading", rest[1:]
            arg = rest[0] if rest else None
        get_only = {"markets", "trade_history", "position_settlement_transactions", "open_positions"}
        get_only |= {"position_history", "position_status"}
        either = {"my_markets"}  # docs/bitstamp.md §5.6: the doc says GET, a client says POST
        if head not in either and (head in get_only) != (method == "GET"):
            raise ApiError(405, "405.001", "Method not allowed.")
        if self.modes.derivatives_refused or self.modes.derivatives_flaky:
            self._derivatives_mode(head)
        handler = getattr(self, f"r_{head}", None)
        if handler is None or len(rest) > 1:
            raise ApiError(404, "404.001", "Not found.")
        try:
            if self.account.id != "0":
                self._subaccount_refusal(head)
            return str(handler(arg, params))
        except ApiError as exc:
            if self.modes.error_200 and head in ERROR_200_ENDPOINTS:
                raise ApiError(200, exc.code, exc.reason, "all") from None
            raise

    def _trade_account(self, headers: Mapping[str, str]) -> TradeAccount:
        """The trade account a request acts for: ``X-Auth-Subaccount-Id`` names a sub-account (not part of the signed
        string [G]); absent, empty or ``0``: the main account [G]. An id the account does not have is HTTP 404
        ``404.004`` "Trade account not found for provided API key." [D: the spec's code list; G that this header
        gives it]. In the ``subaccount-header-ignored`` mode the header is ignored (formance's observation)."""
        raw = headers.get(SUBACCOUNT_HEADER, "").strip()
        if not raw or raw == "0" or self.modes.subaccount_header_ignored:
            return self.state.main
        account = self.state.accounts.get(raw)
        if account is None:
            raise ApiError(404, "404.004", "Trade account not found for provided API key.")
        return account

    def _subaccount_refusal(self, head: str) -> None:
        """A sub-account has no orders and no derivatives in the fake: its order endpoints find nothing and its
        derivatives endpoints answer like a spot-only account [G]."""
        if head in DERIVATIVES_ENDPOINTS:
            raise ApiError(400, "API5506", "Trade account does not support derivatives.", envelope="message")
        if head == "order_status":
            raise ApiError(404, "404.002", "Order not found.")
        if head == "account_order_data":
            raise ApiError(404, "404.008", "No events found.")

    def _derivatives_mode(self, head: str) -> None:
        """derivatives-refused / derivatives-flaky: the answer of a derivatives endpoint, before it looks at
        anything (a spot-only account is refused whatever the parameters). HTTP 400 for both: the code, not the
        status, says what to do (API5502 is transient, API5506 is not)."""
        if head not in DERIVATIVES_ENDPOINTS:
            return
        self.derivatives_calls += 1
        refusal = self.modes.derivatives_refusal(head, self.derivatives_calls)
        if refusal is not None:
            raise ApiError(400, *refusal, envelope="message")

    # ------------------------------------------------------------------ helpers
    def _market(self, symbol: str | None) -> Market | None:
        if symbol is None:
            return None
        for m in self.state.markets:
            if m.symbol == symbol or m.name == symbol:
                return m
        raise ApiError(404, "404.003", "Market not found.")

    @staticmethod
    def _int(params: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "400.001", f"Invalid {name} parameter.") from None
        if not lo <= value <= hi:
            raise ApiError(400, "400.001", f"{name} must be between {lo} and {hi}.")
        return value

    # ------------------------------------------------------------------ routes
    def r_markets(self, arg: str | None, params: Mapping[str, str]) -> str:
        return dumps([m.markets_row() for m in self.state.markets])

    def r_my_markets(self, arg: str | None, params: Mapping[str, str]) -> str:
        return dumps([{"name": m.name, "market_symbol": m.symbol} for m in self.state.markets])

    def r_fees_trading(self, arg: str | None, params: Mapping[str, str]) -> str:
        m = self._market(arg)
        rows = [
            {"currency_pair": x.name, "market": x.name, "fees": {"maker": "0.15", "taker": "0.3"}}
            for x in self.state.markets
            if m is None or x == m
        ]
        return dumps(rows[0] if m is not None else rows)

    def r_websockets_token(self, arg: str | None, params: Mapping[str, str]) -> str:
        token = self.tokens.issue()
        return dumps({"token": token.value, "valid_sec": int(token.ttl), "user_id": self.user_id})

    def r_user_transactions(self, arg: str | None, params: Mapping[str, str]) -> str:
        m = self._market(arg)
        offset = self._int(params, "offset", 0, 0, 200_000) or 0
        limit = self._int(params, "limit", 100, 1, 1000) or 100
        sort = params.get("sort", "desc")
        if sort not in ("asc", "desc"):
            raise ApiError(400, "400.001", "Invalid sort parameter.")
        since_id = self._int(params, "since_id", None, 0, 2**64)
        since_ts = self._int(params, "since_timestamp", None, 0, 2**40)
        until_ts = self._int(params, "until_timestamp", None, 0, 2**40)
        if since_id is not None:
            limit = 1000
        rows = [
            (tid, row)
            for tid, sym, row in self.account.transactions
            if (m is None or sym == m.symbol) and (since_id is None or tid >= since_id)
        ]
        if since_ts is not None or until_ts is not None:
            rows = [(tid, row) for tid, row in rows if _row_ts_ok(row, since_ts, until_ts)]
        if sort == "desc":
            rows.reverse()
        return dumps([row for _, row in rows[offset : offset + limit]])

    def r_open_orders(self, arg: str | None, params: Mapping[str, str]) -> str:
        if self.account.id != "0":
            return "[]"  # a sub-account has no orders in the fake
        key = arg or "all"
        now = self.clock()
        cached = self.open_orders_cache.get(key)
        if cached is not None and now - cached[0] < OPEN_ORDERS_CACHE_S:
            return cached[1]
        m = None if key == "all" else self._market(key)
        rows = []
        for o in sorted(self.state.orders.values(), key=lambda o: o.id):
            if o.status != "open" or (m is not None and o.market != m):
                continue
            row: dict[str, Any] = {
                "id": str(o.id),
                "datetime": rest_datetime(o.created_us, micro=False),
                "type": str(o.side),
                "subtype": o.subtype,
                "price": fixed(o.price, o.market.price_places),
                "amount": fixed(o.remaining, o.market.amount_places),
                "amount_at_create": fixed(o.amount, o.market.amount_places),
                "currency_pair": o.market.name,
                "market": o.market.name,
            }
            if o.client_order_id is not None:
                row["client_order_id"] = o.client_order_id
            if o.stop_price is not None:
                row["stop_price"] = fixed(o.stop_price, o.market.price_places)
            rows.append(row)
        text = dumps(rows)
        self.open_orders_cache[key] = (now, text)
        return text

    def r_order_status(self, arg: str | None, params: Mapping[str, str]) -> str:
        order = None
        if params.get("id"):
            try:
                order = self.state.orders.get(int(params["id"]))
            except ValueError:
                raise ApiError(400, "400.001", "Invalid id parameter.") from None
        elif params.get("client_order_id"):
            matches = [o for o in self.state.orders.values() if o.client_order_id == params["client_order_id"]]
            order = max(matches, key=lambda o: o.created_us) if matches else None
        else:
            raise ApiError(400, "400.001", "Missing id or client_order_id.")
        if order is None:
            raise ApiError(404, "404.002", "Order not found.")
        m = order.market
        fills = {f.trade_id: f for f in self.state.fills if f.order_id == order.id}
        body: dict[str, Any] = {
            "id": str(order.id),
            "datetime": rest_datetime(order.created_us, micro=False),
            "type": str(order.side),
            "subtype": order.subtype,
            "status": order.rest_status,
            "market": m.name,
            "amount_remaining": fixed(order.remaining, m.amount_places),
        }
        if order.client_order_id is not None:
            body["client_order_id"] = order.client_order_id
        if params.get("omit_transactions") != "true":
            body["transactions"] = [
                {
                    "tid": f.trade_id,
                    "price": fixed(f.price, m.price_places),
                    m.base: fixed(f.amount, m.amount_places),
                    m.quote: plain(f.amount * f.price),
                    "fee": fixed(f.fee, m.quote_places),
                    "datetime": rest_datetime(f.us),
                    "type": 2,
                }
                for tid, f in sorted(fills.items())
            ]
        return dumps(body)

    def r_account_order_data(self, arg: str | None, params: Mapping[str, str]) -> str:
        source = params.get("order_source")
        if source not in ("orderbook", "stop_order"):
            raise ApiError(400, "400.078", "order_source is required: orderbook or stop_order.")
        m = self._market(params.get("market"))
        since_id, until_id = params.get("since_id"), params.get("until_id")
        for name, value in (("since_id", since_id), ("until_id", until_id)):
            if value is not None and not EVENT_ID_RE.match(value):
                raise ApiError(400, "400.079", f"Invalid {name} format.")
        events: list[tuple[str, dict[str, Any]]] = []
        for (sym, src), items in self.state.order_events.items():
            if src == source and (m is None or sym == m.symbol):
                events.extend(items)
        events.sort(key=lambda e: e[0])
        picked = [
            rec for eid, rec in events if (since_id is None or eid >= since_id) and (until_id is None or eid < until_id)
        ][:1000]
        if not picked:
            raise ApiError(404, "404.008", "No events found.")
        return dumps(picked)

    def r_account_balances(self, arg: str | None, params: Mapping[str, str]) -> str:
        """The trade account's balances: ``total`` is the sum of its ledger, ``reserved`` what its open orders hold
        (main account only: the sub-accounts have no orders), ``available`` the difference."""
        reserved = self.state.reserved() if self.account.id == "0" else {}
        rows = []
        for c, total in self.account.balances.items():
            if arg is not None and c != arg.lower():
                continue
            res = reserved.get(c, total * 0)
            rows.append(
                {"currency": c.upper(), "total": plain(total), "available": plain(total - res), "reserved": plain(res)}
            )
        if arg is not None and not rows:
            raise ApiError(404, "404.004", "Currency not found.")
        return dumps(rows[0] if arg is not None else rows)

    def r_withdrawal_requests(self, arg: str | None, params: Mapping[str, str]) -> str:
        if arg is not None:
            raise ApiError(404, "404.001", "Not found.")
        try:
            return rest_ledger.withdrawal_requests(self.account, params, self.clock())
        except rest_ledger.ParamError as exc:
            raise ApiError(400, "400.001", exc.reason) from None

    def r_crypto_transactions(self, arg: str | None, params: Mapping[str, str]) -> str:
        """Main account only (spec: "This call is for your main account only."): the header is not looked at [G]."""
        if arg is not None:
            raise ApiError(404, "404.001", "Not found.")
        try:
            return rest_ledger.crypto_transactions(self.state, params, self.clock())
        except rest_ledger.ParamError as exc:
            raise ApiError(400, "400.001", exc.reason) from None

    def r_trade_history(self, arg: str | None, params: Mapping[str, str]) -> str:
        m = self._market(arg)
        limit = self._int(params, "limit", 100, 1, 1000) or 100
        sort = params.get("sort", "desc")
        order_id = params.get("order_id")
        since_ts = self._int(params, "since_timestamp", None, 0, 2**40)
        until_ts = self._int(params, "until_timestamp", None, 0, 2**40)
        after_id = self._int(params, "after_id", None, 0, 2**64)
        rows = [
            row
            for tid, sym, us, row in self.state.trade_history
            if (m is None or sym == m.symbol)
            and (order_id is None or row["order_id"] == order_id)
            and (after_id is None or tid > after_id)
            and (since_ts is None or us >= since_ts * 1_000_000)
            and (until_ts is None or us < until_ts * 1_000_000)
        ]
        if sort == "desc":
            rows.reverse()
        return dumps(rows[:limit])

    def r_position_settlement_transactions(self, arg: str | None, params: Mapping[str, str]) -> str:
        """Paged like ``user_transactions`` (module docstring); one row by transaction id with ``<id>/``."""
        if arg is not None:
            found = [row for _, row in self.state.settlement_rows if row["transaction_id"] == arg]
            if not found:
                raise ApiError(404, "404.001", "Transaction not found.")
            return dumps(self._settlement_row(found[0]))
        offset = self._int(params, "offset", 0, 0, 200_000) or 0
        limit = self._int(params, "limit", 100, 1, 1000) or 100
        sort = params.get("sort", "desc")
        if sort not in ("asc", "desc"):
            raise ApiError(400, "400.001", "Invalid sort parameter.")
        since_ts = self._int(params, "since_timestamp", None, 0, 2**40)
        until_ts = self._int(params, "until_timestamp", None, 0, 2**40)
        if since_ts is not None and since_ts < self.clock() - SETTLEMENT_REACH_S:
            raise ApiError(400, "400.001", "since_timestamp can be at most 30 days in the past.")
        rows = [
            row
            for us, row in self.state.settlement_rows
            if (since_ts is None or us >= since_ts * 1_000_000) and (until_ts is None or us < until_ts * 1_000_000)
        ]
        if sort == "desc":
            rows.reverse()
        return dumps([self._settlement_row(row) for row in rows[offset : offset + limit]])

    def _settlement_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as sent: ``settlement_time`` in seconds as stored, or in milliseconds (``settlement-ms``)."""
        if not self.modes.settlement_ms:
            return row
        return {**row, "settlement_time": int(row["settlement_time"]) * 1000}

    def r_open_positions(self, arg: str | None, params: Mapping[str, str]) -> str:
        m = self._market(arg)
        rows = []
        for p in sorted(self.state.positions.values(), key=lambda p: p.id):
            if p.net == 0 or (m is not None and p.market != m):
                continue
            rows.append(
                {
                    "id": p.id,
                    "market": p.market.name,
                    "market_type": "PERPETUAL",
                    "margin_mode": "CROSS",
                    "side": "LONG" if p.net > 0 else "SHORT",
                    "size": plain(abs(p.net)),
                    "entry_price": plain(p.inc_value / p.inc_amount) if p.inc_amount else "0",
                    "leverage": "5",
                }
            )
        return dumps(rows)


def _row_ts_ok(row: dict[str, Any], since_ts: int | None, until_ts: int | None) -> bool:
    from datetime import UTC, datetime

    dt = datetime.strptime(str(row["datetime"])[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    ts = int(dt.timestamp())
    return (since_ts is None or ts >= since_ts) and (until_ts is None or ts < until_ts)
