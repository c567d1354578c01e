"""The fake account's state and ground truth (pure). Written by :mod:`tracker.fake.model`, read by the REST routes.

Ground truth follows docs/semantics.md and is derived from this state, never from re-parsing frames.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from tracker.fake.markets import Market
from tracker.fake.wire import Num, day_utc, iso_utc, json_ready, plain

ZERO = Decimal(0)


@dataclass(slots=True)
class Order:
    id: int
    market: Market
    side: int  # 0 buy, 1 sell
    subtype: int
    price: Decimal  # real price (limit, or last execution price of a market order)
    amount: Decimal  # original quantity (truth: 0 while unknown)
    remaining: Decimal
    created_us: int
    source: str = "orderbook"
    client_order_id: str | None = None
    status: str = "open"  # open | filled | cancelled | replaced  (docs/semantics.md)
    self_offset: Decimal = ZERO
    filled: Decimal = ZERO
    price_seen: bool = True  # a non-placeholder price appeared on some event
    stop_price: Decimal | None = None
    is_liquidation: bool = False
    trade_ids: list[int] = field(default_factory=list)

    @property
    def rest_status(self) -> str:
        return {"open": "Open", "filled": "Finished"}.get(self.status, "Canceled")


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: int
    order_id: int
    market: Market
    side: str  # buy | sell
    amount: Decimal
    price: Decimal
    fee: Decimal
    us: int
    position_id: str | None = None
    is_liquidation: bool = False


@dataclass(slots=True)
class Position:
    id: str
    market: Market
    first_side: str
    net: Decimal = ZERO
    inc_amount: Decimal = ZERO
    inc_value: Decimal = ZERO
    fees: Decimal = ZERO
    realised: Decimal = ZERO
    phase: str = ""  # "" | liquidating | liquidated
    opened_us: int = 0

    @property
    def status(self) -> str:
        if self.phase:
            return self.phase
        return "open" if self.net != 0 else "closed"


class TradeHistoryEntry(NamedTuple):
    """A perp ``trade_history`` row with what its filters need (the row itself holds only text)."""

    trade_id: int
    symbol: str
    us: int  # execution time, µs
    row: dict[str, Any]


class LedgerRow(NamedTuple):
    """One ``user_transactions`` row of a trade account: its id, its market symbol (fills, settlements and premiums;
    None for the account movements, which ``user_transactions/<market>/`` does not list) and the row as sent."""

    id: int
    symbol: str | None
    row: dict[str, Any]


@dataclass(slots=True)
class WithdrawalRequest:
    """A ``withdrawal-requests/`` row as sent (``row``) and what the account's story still has to do with it."""

    id: int
    us: int  # when it was requested
    currency: str
    amount: Decimal
    fee: Decimal
    outcome: str  # finished | cancelled | failed | reversed: where it is headed
    row: dict[str, Any]
    due_step: int = 0  # the model step at which its status moves next
    crypto: bool = False


@dataclass(slots=True)
class TradeAccount:
    """One trade account: ``"0"`` the main account, others a sub-account (id > 0). Its balances are the sum of its
    ledger rows by construction (every row is written together with the balance change it books)."""

    id: str
    balances: dict[str, Decimal] = field(default_factory=dict)
    transactions: list[LedgerRow] = field(default_factory=list)  # ascending id
    withdrawal_requests: list[WithdrawalRequest] = field(default_factory=list)  # ascending id


class SettlementEntry(NamedTuple):
    """A ``position_settlement_transactions`` row with its time (the row's ``settlement_time`` is in seconds)."""

    us: int
    row: dict[str, Any]


@dataclass(slots=True)
class AccountState:
    """Everything REST serves and truth() reports."""

    markets: tuple[Market, ...]
    orders: dict[int, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    # (market symbol, order_source) -> [(event_id, record)]; records are dicts written with wire.dumps.
    order_events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    subaccounts: tuple[str, ...] = ()
    # trade account id ("0" main, "1001", ...) -> its balances, user_transactions rows and withdrawal requests
    accounts: dict[str, TradeAccount] = field(default_factory=dict)
    # crypto-transactions/ (main account only): {"deposits": [(us, row)], "withdrawals": [(us, row)]}
    crypto: dict[str, list[tuple[int, dict[str, Any]]]] = field(
        default_factory=lambda: {"deposits": [], "withdrawals": []}
    )
    tampered: list[dict[str, str]] = field(default_factory=list)  # tamper_ledger_row calls, for the truth
    trade_history: list[TradeHistoryEntry] = field(default_factory=list)  # perp, ascending trade id
    settlement_rows: list[SettlementEntry] = field(default_factory=list)  # position_settlement_transactions
    positions: dict[str, Position] = field(default_factory=dict)
    self_trades: list[dict[str, str]] = field(default_factory=list)
    settlements: list[dict[str, str | None]] = field(default_factory=list)
    liquidations: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for tai in ("0", *self.subaccounts):
            account = self.accounts.setdefault(tai, TradeAccount(tai))
            for c in self.currencies():
                account.balances.setdefault(c, ZERO)

    @property
    def main(self) -> TradeAccount:
        return self.accounts["0"]

    @property
    def balances(self) -> dict[str, Decimal]:
        """The main account's balances."""
        return self.main.balances

    @property
    def transactions(self) -> list[LedgerRow]:
        """The main account's ``user_transactions`` rows, ascending id."""
        return self.main.transactions

    def tamper_ledger_row(self, trade_account_id: str | int, row_id: int, currency: str, new_amount: Decimal) -> None:
        """For tests: change the ``currency`` amount of one served ``user_transactions`` row WITHOUT changing the
        balances, so the sum of the served ledger no longer equals ``account_balances/`` (recorded in the truth's
        ``tampered``). Raises ``KeyError`` for a trade account, row or currency the account does not have."""
        account = self.accounts[str(trade_account_id)]
        row = next((r.row for r in account.transactions if r.id == int(row_id)), None)
        if row is None:
            raise KeyError(f"trade account {account.id} has no ledger row {row_id}")
        c = currency.lower()
        if c not in row:
            raise KeyError(f"ledger row {row_id} has no currency {currency!r}")
        old = row[c]
        row[c] = f"{Decimal(new_amount):f}"
        self.tampered.append(
            {
                "trade_account_id": account.id,
                "row_id": str(row_id),
                "currency": c,
                "was": old.token if isinstance(old, Num) else str(old),
                "now": row[c],
            }
        )

    def currencies(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.markets:
            seen[m.base] = None
            seen[m.quote] = None
        return list(seen)

    def reserved(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for o in self.orders.values():
            if o.status != "open" or o.market.perp or o.source != "orderbook":
                continue
            if o.side == 0:
                out[o.market.quote] += o.remaining * o.price
            else:
                out[o.market.base] += o.remaining
        return out

    def truth(self) -> dict[str, Any]:
        """Ground truth as JSON-ready data (decimals as plain strings, ids as strings, times ISO UTC)."""
        orders = []
        for o in sorted(self.orders.values(), key=lambda o: o.id):
            orders.append(
                {
                    "order_id": str(o.id),
                    "market": o.market.symbol,
                    "side": "buy" if o.side == 0 else "sell",
                    "status": o.status,
                    "amount": plain(o.amount),
                    "amount_filled": plain(o.amount - o.remaining - o.self_offset),
                    "amount_remaining": plain(o.remaining),
                    "price": plain(o.price) if o.price_seen else None,
                    "client_order_id": o.client_order_id,
                    "created_at": iso_utc(o.created_us),
                }
            )
        fills = []
        daily: dict[tuple[str, str], list[Decimal]] = {}
        for f in sorted(self.fills, key=lambda f: f.trade_id):
            fills.append(
                {
                    "trade_id": str(f.trade_id),
                    "order_id": str(f.order_id),
                    "market": f.market.symbol,
                    "side": f.side,
                    "amount": plain(f.amount),
                    "price": plain(f.price),
                    "fee": plain(f.fee),
                    "executed_at": iso_utc(f.us),
                }
            )
            agg = daily.setdefault((day_utc(f.us), f.market.symbol), [ZERO, ZERO, ZERO, ZERO])
            agg[0] += 1
            agg[1] += f.amount * f.price
            agg[2] += f.fee
            agg[3] += f.amount
        fees_daily = [
            {
                "day": day,
                "market": market,
                "fills": int(v[0]),
                "volume": plain(v[1]),
                "fees": plain(v[2]),
                "base_volume": plain(v[3]),
            }
            for (day, market), v in sorted(daily.items())
        ]
        positions = []
        for p in sorted(self.positions.values(), key=lambda p: p.id):
            side = "long" if p.net > 0 else "short" if p.net < 0 else ("long" if p.first_side == "buy" else "short")
            positions.append(
                {
                    "position_id": p.id,
                    "market": p.market.symbol,
                    "side": side,
                    "size": plain(abs(p.net)),
                    "status": p.status,
                    "entry_price": plain(p.inc_value / p.inc_amount) if p.inc_amount else None,
                    "fees": plain(p.fees),
                    "realised_pnl": plain(p.realised),
                }
            )
        return {
            "orders": orders,
            "fills": fills,
            "fees_daily": fees_daily,
            "self_trades": list(self.self_trades),
            "settlements": list(self.settlements),
            "liquidations": list(self.liquidations),
            "positions": positions,
            **self.books_truth(),
        }

    def books_truth(self) -> dict[str, Any]:
        """The account's books: per trade account its balances (exact decimal text), its ``user_transactions`` rows
        and its withdrawal requests as served (numbers as their JSON token text), the main account's
        ``crypto-transactions/`` rows, and the rows changed by ``tamper_ledger_row`` (the balances never are)."""
        accounts = {
            tai: {
                "balances": {c: plain(v) for c, v in sorted(a.balances.items())},
                "ledger": [json_ready(r.row) for r in a.transactions],
                "withdrawal_requests": [json_ready(w.row) for w in a.withdrawal_requests],
            }
            for tai, a in self.accounts.items()
        }
        crypto = {name: [json_ready(row) for _, row in rows] for name, rows in self.crypto.items()}
        return {"accounts": accounts, "crypto_transactions": crypto, "tampered": list(self.tampered)}
