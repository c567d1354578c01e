"""The account ledger's vocabulary (pure): type names, subtypes, withdrawal-request statuses, and the exact amount
key that ``v_transfers`` compares amounts by (docs/semantics.md, "The ledger"; docs/sql.md, "Ledger and balances").

Type codes of ``user_transactions/`` rows (docs/bitstamp.md §5.1): [D] the spec's list; 36 [S: seen in production,
undocumented by the older docs, "simple buy" in the newer spec]; 53-61 [D: the newer spec]. Any other code is
``unknown``: its row is kept with the generic legs and counted (``ledger_type_unknown:<code>``), never dropped.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal

from tracker.domain.money import EXACT, format_decimal

LegKind = Literal["amount", "fee"]

TYPE_NAMES: Final[dict[str, str]] = {
    "0": "deposit",
    "1": "withdrawal",
    "2": "trade",
    "14": "subaccount_transfer",
    "25": "staking_credit",
    "26": "staking_sent",
    "27": "staking_reward",
    "32": "referral_reward",
    "33": "settlement_transfer",
    "35": "inter_account_transfer",
    "36": "instant_trade",
    "53": "small_balance_conversion",
    "55": "small_balance_conversion",
    "58": "derivatives_settlement",
    "59": "insurance_fund_claim",
    "60": "insurance_fund_premium",
    "61": "collateral_liquidation",
}
UNKNOWN_TYPE: Final = "unknown"
TRADE_CODES: Final = frozenset({"2", "36"})  # subtype buy/sell by the sign of the base amount
TRANSFER_CODES: Final = frozenset({"14", "35"})  # subtype in/out by the sign of the amount
DEPOSIT: Final = "0"
WITHDRAWAL: Final = "1"

# withdrawal-requests/ ``status`` [D: spec "0 (open), 1 (in process), 2 (finished), 3 (canceled), 4 (failed) or 11
# (reversed)"]; anything else is 'unknown' (the code itself stays in ``request_status``).
REQUEST_STATUS_NAMES: Final[dict[int, str]] = {
    0: "open",
    1: "in_process",
    2: "finished",
    3: "cancelled",
    4: "failed",
    11: "reversed",
}

# crypto-transactions/ lists [D: spec CryptoTransactionsResponse]; the list is the last part of the entry's channel.
CRYPTO_LISTS: Final = frozenset({"deposits", "withdrawals", "ripple_iou_transactions"})


def type_name(code: str) -> str:
    """``"2"`` → ``"trade"``; an unknown code → ``"unknown"``."""
    return TYPE_NAMES.get(code, UNKNOWN_TYPE)


def subtype_of(code: str, signed: Decimal | None) -> str | None:
    """``buy``/``sell`` for a trade (2, 36) by the sign of its base amount (``None``: no pair, so no base);
    ``in``/``out`` for a transfer (14, 35) by the sign of its amount; else ``None``."""
    if signed is None or signed == 0:
        return None
    if code in TRADE_CODES:
        return "buy" if signed > 0 else "sell"
    if code in TRANSFER_CODES:
        return "in" if signed > 0 else "out"
    return None


def request_status_name(status: int | None) -> str:
    return "unknown" if status is None else REQUEST_STATUS_NAMES.get(status, "unknown")


def amount_key(amount: Decimal) -> Decimal:
    """The absolute amount in its canonical spelling (``-0.50000000`` → ``0.5``): what ``v_transfers`` compares.

    Stored as ``Money`` it is the canonical decimal text on SQLite (so ``=`` on text is ``=`` on the number) and
    ``NUMERIC`` on PostgreSQL (where ``=`` compares numbers anyway): one comparison, exact on both backends."""
    return Decimal(format_decimal(abs(amount)))


def add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` never rounded (the default context keeps 28 digits; a balance may need more)."""
    return EXACT.add(a, b)
