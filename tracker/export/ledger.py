"""The ledger as exports see it: ``v_ledger`` legs grouped into entries, each with a neutral category.

A leg is one row of ``v_ledger`` (docs/sql.md, the ledger contract): one currency movement of one ledger entry. An
entry is every leg of one ``(account, trade_account_id, entry_id)``: a deposit has one amount leg, a trade two (the
base and the quote) plus its fee leg, an instant buy (type 36) two assets. Exports write one row per entry.

Categories are what the accounting tools distinguish; every ledger type maps to exactly one, and ``unknown`` (a type
code tracker does not know) maps to each format's most neutral category (docs/export.md, "Categories").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

Category = Literal["deposit", "withdrawal", "trade", "staking", "reward", "transfer", "fee", "pnl", "unknown"]

MAIN_ACCOUNT: Final = "0"

# Ledger type name (the contract's names) -> category.
CATEGORIES: Final[dict[str, Category]] = {
    "deposit": "deposit",
    "withdrawal": "withdrawal",
    "trade": "trade",
    "instant_trade": "trade",
    "small_balance_conversion": "trade",
    "subaccount_transfer": "transfer",
    "inter_account_transfer": "transfer",
    "staking_credit": "staking",
    "staking_sent": "staking",
    "staking_reward": "reward",
    "referral_reward": "reward",
    "settlement_transfer": "pnl",
    "derivatives_settlement": "pnl",
    "insurance_fund_claim": "pnl",
    "insurance_fund_premium": "pnl",
    "collateral_liquidation": "pnl",
}


@dataclass(frozen=True, slots=True)
class LedgerLeg:
    """One ``v_ledger`` row (the contract's columns, in order)."""

    account: str
    trade_account_id: str
    entry_id: str
    leg: str  # 'amount' | 'fee'
    occurred_at: datetime
    type: str
    type_code: int | None
    subtype: str | None
    currency: str | None
    amount: Decimal
    fee: Decimal | None
    market: str | None
    rate: Decimal | None
    order_id: str | None
    trade_id: str | None
    txid: str | None
    source: str
    seq: int
    balance_after: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    currency: str
    amount: Decimal  # signed


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """Every leg of one ledger entry, as one thing."""

    account: str
    trade_account_id: str
    entry_id: str
    occurred_at: datetime
    type: str
    type_code: int | None
    subtype: str | None
    market: str | None
    rate: Decimal | None
    order_id: str | None
    trade_id: str | None
    txid: str | None
    source: str
    seq: int
    movements: tuple[Movement, ...]  # the amount legs, in leg order
    fee: Decimal | None  # the fee leg's fee (positive), None without one
    fee_currency: str | None

    @property
    def sent(self) -> tuple[Movement, ...]:
        return tuple(m for m in self.movements if m.amount < 0)

    @property
    def received(self) -> tuple[Movement, ...]:
        return tuple(m for m in self.movements if m.amount > 0)

    @property
    def category(self) -> Category:
        known = CATEGORIES.get(self.type)
        if known is not None:
            return known
        if not self.movements and self.fee is not None:
            return "fee"  # an entry that only costs a fee
        return "unknown"

    def base_quote(self) -> tuple[Movement | None, Movement | None]:
        """The base and quote movements of a trade with a market (``btcusd``: BTC then USD); else the received and
        the sent movement (an instant trade without a pair, or anything with two assets)."""
        if self.market is not None:
            market = self.market.lower()
            base = next((m for m in self.movements if market.startswith(m.currency.lower())), None)
            quote = next((m for m in self.movements if m is not base and market.endswith(m.currency.lower())), None)
            if base is not None and quote is not None:
                return base, quote
        received, sent = self.received, self.sent
        return (received[0] if received else None), (sent[0] if sent else None)


def trade_account_name(trade_account_id: str) -> str:
    """How Bitstamp's statement names a trade account [G: "Main Account" is Bitstamp's web label for the main
    account; "Sub Account <id>" is a guess for sub-accounts, whose statement label is the name the user gave them]."""
    return "Main Account" if trade_account_id == MAIN_ACCOUNT else f"Sub Account {trade_account_id}"


def group_entries(legs: Iterable[LedgerLeg]) -> list[LedgerEntry]:
    """The entries of ``legs`` (any order), in log order (their seq, then trade account and id)."""
    grouped: dict[tuple[str, str, str], list[LedgerLeg]] = {}
    for leg in legs:
        grouped.setdefault((leg.account, leg.trade_account_id, leg.entry_id), []).append(leg)
    entries = [_entry(parts) for parts in grouped.values()]
    entries.sort(key=lambda e: (e.seq, e.account, e.trade_account_id, e.entry_id))
    return entries


def _entry(legs: Sequence[LedgerLeg]) -> LedgerEntry:
    first = legs[0]
    movements = tuple(Movement(leg.currency or "", leg.amount) for leg in legs if leg.leg != "fee")
    fees = [leg for leg in legs if leg.leg == "fee"]
    fee = None
    fee_currency = None
    if fees:
        fee = sum((leg.fee if leg.fee is not None else -leg.amount for leg in fees), Decimal(0))
        fee_currency = fees[0].currency
    return LedgerEntry(
        account=first.account,
        trade_account_id=first.trade_account_id,
        entry_id=first.entry_id,
        occurred_at=first.occurred_at,
        type=first.type,
        type_code=first.type_code,
        subtype=first.subtype,
        market=first.market,
        rate=first.rate,
        order_id=first.order_id,
        trade_id=first.trade_id,
        txid=next((leg.txid for leg in legs if leg.txid), None),
        source=first.source,
        seq=min(leg.seq for leg in legs),
        movements=movements,
        fee=fee,
        fee_currency=fee_currency,
    )
