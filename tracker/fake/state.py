"""The fake account's state and ground truth (pure). Written by :mod:`tracker.fake.model`, read by the REST routes.

Ground truth follows docs/semantics.md and is derived from this state, never from re-parsing frames.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from tracker.fake.markets import Market
from tracker.fake.wire import day_utc, iso_utc, plain

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
    # user_transactions rows, ascending id: (id, market symbol or None, row)
    transactions: list[tuple[int, str | None, dict[str, Any]]] = field(default_factory=list)
    trade_history: list[TradeHistoryEntry] = field(default_factory=list)  # perp, ascending trade id
    settlement_rows: list[SettlementEntry] = field(default_factory=list)  # position_settlement_transactions
    balances: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    self_trades: list[dict[str, str]] = field(default_factory=list)
    settlements: list[dict[str, str | None]] = field(default_factory=list)
    liquidations: list[dict[str, str]] = field(default_factory=list)

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
        }
