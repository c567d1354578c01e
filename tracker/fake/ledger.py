"""The fake account's books (pure): balances, the REST rows and the ground-truth records each model action leaves.

:mod:`tracker.fake.model` decides what happens and writes the websocket frames; this module writes what the REST
routes (:mod:`tracker.fake.rest`) and ``truth()`` later read, in the shapes docs/bitstamp.md §5 gives them:
``user_transactions`` rows (keys shuffled after the first three, currencies the row does not touch as ``0.0``),
perp ``trade_history`` rows, ``position_settlement_transactions`` rows, and the settlement, premium and liquidation
records of the ground truth. The spelling choices drawn from ``rng`` are drawn in a fixed order (same seed, same
bytes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tracker.fake.markets import Market
from tracker.fake.state import AccountState, Fill, LedgerRow, Position, SettlementEntry, TradeAccount, TradeHistoryEntry
from tracker.fake.wire import Num, fixed, iso_utc, num, rest_datetime

FIAT = frozenset({"usd", "eur", "gbp"})
TYPE_TRADE = "2"
TYPE_SETTLEMENT = "58"
TYPE_INSURANCE_PREMIUM = "60"


def book_fill(state: AccountState, f: Fill, rng: random.Random) -> None:
    """Move the balances for a spot fill and write its ``user_transactions`` row (and for perp its ``trade_history``
    row). A perpetual fill moves no spot balance: no delivery, and its fee reaches the balance through the settlement
    rows (the settlement's trading-fee component) [G, medium: issue 15 "Facts"; the balance check confirms or
    refutes it against the real exchange]."""
    m = f.market
    value = f.amount * f.price
    sign = 1 if f.side == "buy" else -1
    qv = (value * sign * -1).quantize(Decimal(1).scaleb(-m.quote_places), ROUND_HALF_UP)
    if not m.perp:  # the row's own amounts: the balance is the sum of the ledger
        state.balances[m.base] += f.amount * sign
        state.balances[m.quote] += qv - f.fee
    pairs: list[tuple[str, Any]] = [
        ("id", f.trade_id),
        ("datetime", rest_datetime(f.us, micro=rng.random() < 0.5)),
        ("type", TYPE_TRADE),
        ("fee", fixed(f.fee, m.quote_places)),
        ("order_id", f.order_id),
        (m.base, fixed(f.amount * sign, m.amount_places)),
        (m.quote, f"{qv:f}"),
        (f"{m.base}_{m.quote}", num(f.price) if rng.random() < 0.5 else fixed(f.price, m.price_places)),
    ]
    for c in state.currencies():
        if c not in (m.base, m.quote):
            pairs.append((c, Num("0.0")))
    if m.perp:
        pairs += [("margin_mode", "CROSS"), ("leverage_rate", "5")]
    head, tail = pairs[:3], pairs[3:]
    rng.shuffle(tail)
    state.transactions.append(LedgerRow(f.trade_id, m.symbol, dict(head + tail)))
    if m.perp:
        state.trade_history.append(TradeHistoryEntry(f.trade_id, m.symbol, f.us, _trade_history_row(f)))


def _trade_history_row(f: Fill) -> dict[str, Any]:
    m = f.market
    return {
        "trade_id": str(f.trade_id),
        "order_id": str(f.order_id),
        "self_trade_order_id": None,
        "position_id": f.position_id,
        "datetime": rest_datetime(f.us),
        "fee": fixed(f.fee, m.quote_places),
        "liquidation_fee": "0",
        "fee_currency": m.quote.upper(),
        "market": m.name,
        "margin_mode": "CROSS",
        "leverage": "5",
        "side": f.side.upper(),
        "type": "LIQUIDATION" if f.is_liquidation else "TRADE",
        "self_trade_type": None,
        "price": fixed(f.price, m.price_places),
        "amount": fixed(f.amount, m.amount_places),
        "trade_uti": f"FAKEUTI{f.trade_id}",
    }


def book_transaction(state: AccountState, tnx: int, us: int, typ: str, m: Market, amount: Decimal) -> None:
    """A ``user_transactions`` row that moves only the market's quote currency (settlement, premium), and the main
    account's balance with it."""
    row: dict[str, Any] = {"id": tnx, "datetime": rest_datetime(us), "type": typ, "fee": "0.00"}
    for c in state.currencies():
        row[c] = f"{amount:f}" if c == m.quote else Num("0.0")
    row["margin_mode"] = "CROSS"
    state.balances[m.quote] += amount
    state.transactions.append(LedgerRow(tnx, m.symbol, row))


@dataclass(frozen=True, slots=True)
class Settlement:
    """One position settlement: its components (``ap`` price, ``atf`` trading fee, ``alf`` liquidation fee, ``afu``
    funding, ``asl`` socialized loss) sum to ``amount``."""

    position: Position
    tnx: int
    us: int
    price: Decimal
    closing: bool
    ap: Decimal
    atf: Decimal
    alf: Decimal
    afu: Decimal
    asl: Decimal

    @property
    def amount(self) -> Decimal:
        return self.ap + self.atf + self.alf + self.afu + self.asl

    @property
    def seconds(self) -> int:
        return self.us // 1_000_000

    @property
    def typ(self) -> str:
        return "C" if self.closing else "P"


def book_settlement(state: AccountState, s: Settlement) -> None:
    """Realise a settlement: the position's PnL and the balance, the ground-truth record, the ``user_transactions``
    row and the ``position_settlement_transactions`` row."""
    p, m = s.position, s.position.market
    amount = s.amount
    p.realised += amount
    state.settlements.append(
        {
            "position_id": p.id, "transaction_id": str(s.tnx), "kind": "settlement", "ccy": m.quote.upper(),
            "amount": f"{amount:f}", "occurred_at": iso_utc(s.seconds * 1_000_000), "price_component": f"{s.ap:f}",
            "trading_fee_component": f"{s.atf:f}", "liquidation_fee_component": f"{s.alf:f}",
            "funding_component": f"{s.afu:f}", "socialized_loss_component": f"{s.asl:f}",
            "settlement_price": fixed(s.price, m.price_places), "strike_price": fixed(m.mid, m.price_places),
            "settlement_type": s.typ,
        }
    )  # fmt: skip
    book_transaction(state, s.tnx, s.us, TYPE_SETTLEMENT, m, amount)
    row = {
        "transaction_id": str(s.tnx), "position_id": p.id, "settlement_time": s.seconds,
        "settlement_type": "CLOSED" if s.closing else "PERIODIC",
        "settlement_price": fixed(s.price, m.price_places), "market": m.name, "market_type": "PERPETUAL",
        "pnl_currency": m.quote.upper(), "pnl_settled": f"{amount:f}", "pnl_component_price": f"{s.ap:f}",
        "pnl_component_fees": f"{s.atf + s.alf:f}", "pnl_component_funding": f"{s.afu:f}",
        "pnl_component_socialized_loss": f"{s.asl:f}", "margin_mode": "CROSS",
        "size": fixed(abs(p.net), m.amount_places), "strike_price": fixed(m.mid, m.price_places),
        "fees_component_trading": f"{s.atf:f}", "fees_component_liquidation": f"{s.alf:f}",
    }  # fmt: skip
    state.settlement_rows.append(SettlementEntry(s.us, row))


def book_premium(state: AccountState, m: Market, position_id: str | None, tnx: int, us: int, amount: Decimal) -> None:
    """An insurance fund premium: the balance, the ground-truth record and the ``user_transactions`` row."""
    state.settlements.append(
        {
            "position_id": position_id, "transaction_id": str(tnx), "kind": "insurance_fund_premium",
            "ccy": m.quote.upper(), "amount": f"{amount:f}", "occurred_at": iso_utc((us // 1_000_000) * 1_000_000),
        }
    )  # fmt: skip
    book_transaction(state, tnx, us, TYPE_INSURANCE_PREMIUM, m, amount)


def places(currency: str) -> int:
    """Decimals the fake writes a movement of ``currency`` with: 2 for fiat, 8 for crypto."""
    return 2 if currency in FIAT else 8


def book_row(
    state: AccountState,
    account: TradeAccount,
    row_id: int,
    us: int,
    type_value: str | int,
    moves: dict[str, Decimal],
    rng: random.Random,
    *,
    fee: Decimal = Decimal(0),
    rate: tuple[Market, Decimal] | None = None,
) -> dict[str, Any]:
    """An account movement's ``user_transactions`` row (no market: ``user_transactions/<market>/`` never lists it)
    and its balance change, in one place so the balances are the sum of the ledger by construction: every currency
    of ``moves`` moves by its signed amount, and ``fee`` is taken from the pair's quote currency when the row has a
    pair-rate key (``rate``), else from the one currency it moves (the reading of docs/bitstamp.md §5.1 the ledger
    contract takes [G]). Untouched currencies appear as the number ``0.0`` like in the other rows."""
    fee_ccy = rate[0].quote if rate is not None else next(iter(moves))
    pairs: list[tuple[str, Any]] = [
        ("id", row_id),
        ("datetime", rest_datetime(us, micro=rng.random() < 0.5)),
        ("type", type_value),
        ("fee", fixed(fee, places(fee_ccy))),
    ]
    for c in state.currencies():
        pairs.append((c, fixed(moves[c], places(c)) if moves.get(c) else Num("0.0")))
    if rate is not None:
        m, price = rate
        pairs.append((f"{m.base}_{m.quote}", fixed(price, m.price_places)))
    head, tail = pairs[:3], pairs[3:]
    rng.shuffle(tail)
    row = dict(head + tail)
    account.transactions.append(LedgerRow(row_id, None, row))
    for c, amount in moves.items():
        account.balances[c] += amount
    account.balances[fee_ccy] -= fee
    return row


def record_alert(state: AccountState, p: Position, event: str, us: int) -> None:
    """A margin alert or liquidation phase, for the ground truth."""
    state.liquidations.append(
        {
            "position_id": p.id, "event": event, "margin_mode": "CROSS", "occurred_at": iso_utc(us),
            "initial_margin_ratio": "1.2", "maintenance_margin_ratio": "0.9",
        }
    )  # fmt: skip
