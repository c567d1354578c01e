"""Bitstamp's own CSV statement, written from the ledger: the new format and the legacy one.

New (Bitstamp's web export since December 2023; the header is issue 15's, BittyTax and rotki read the same [S]):
``ID,Account,Type,Subtype,Datetime,Amount,Amount currency,Value,Value currency,Rate,Rate currency,Fee,Fee currency,
Order ID``, times in ISO 8601 UTC. Legacy: ``Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type``, amounts with a
currency suffix (``1.5 BTC``) and minute precision (``Jan. 05, 2024, 03:04 PM``: rotki's Bitstamp importer reads it
with ``%b. %d, %Y, %I:%M %p`` [S]).

tracker adds its own columns at the end (``Log seq``; the legacy format also ``ID``), since every exported row
carries the exchange's id and the log seq; ``plain=True`` leaves them out for tools that want the exact header.

Amounts are exact (``format_decimal``: no exponent, no float) and unsigned where the type says the direction
(deposit, withdrawal, trade, staking, transfer with subtype), signed otherwise (settlements, unknown types).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from tracker.domain.money import format_decimal
from tracker.export.ledger import LedgerEntry, Movement, trade_account_name

HEADER: Final = (
    "ID", "Account", "Type", "Subtype", "Datetime", "Amount", "Amount currency", "Value", "Value currency", "Rate",
    "Rate currency", "Fee", "Fee currency", "Order ID",
)  # fmt: skip
LEGACY_HEADER: Final = ("Type", "Datetime", "Account", "Amount", "Value", "Rate", "Fee", "Sub Type")
TRACKER_COLUMNS: Final = ("Log seq",)
LEGACY_TRACKER_COLUMNS: Final = ("ID", "Log seq")

# Ledger type -> the statement's Type. [S: BittyTax's and rotki's Bitstamp parsers] for Deposit, Withdrawal, Market,
# Staking reward; every other name is a guess from the API's description of the type code [G].
TYPE_NAMES: Final[dict[str, str]] = {
    "deposit": "Deposit",
    "withdrawal": "Withdrawal",
    "trade": "Market",
    "staking_reward": "Staking reward",
    "subaccount_transfer": "Sub account transfer",
    "staking_credit": "Credited with staked assets",
    "staking_sent": "Sent assets to staking",
    "referral_reward": "Referral reward",
    "settlement_transfer": "Settlement transfer",
    "inter_account_transfer": "Inter account transfer",
    "instant_trade": "Instant order",
    "small_balance_conversion": "Small balance conversion",
    "derivatives_settlement": "Derivatives settlement",
    "insurance_fund_claim": "Insurance fund claim",
    "insurance_fund_premium": "Insurance fund premium",
    "collateral_liquidation": "Collateral liquidation",
}
# Older statements' spellings of the same types [S: BittyTax's Bitstamp parser].
TYPE_ALIASES: Final[dict[str, str]] = {"ripple deposit": "deposit", "ripple payment": "withdrawal"}
SUBTYPES: Final[dict[str, str]] = {"buy": "Buy", "sell": "Sell", "in": "In", "out": "Out"}  # In/Out: [G]
# Categories whose type (with its subtype) says the direction: amounts are written unsigned.
UNSIGNED: Final = frozenset({"deposit", "withdrawal", "trade", "reward", "staking", "transfer"})
MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def type_name(entry: LedgerEntry) -> str:
    """The statement's Type of ``entry``; an unknown type is ``Unknown type <code>`` (tracker's own spelling)."""
    known = TYPE_NAMES.get(entry.type)
    if known is not None:
        return known
    return f"Unknown type {entry.type_code if entry.type_code is not None else entry.type}"


def iso_second(moment: datetime) -> str:
    """``2024-01-05T15:04:05Z``: UTC, to the second (the fraction is dropped, never rounded up)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def legacy_datetime(moment: datetime) -> str:
    """``Jan. 05, 2024, 03:04 PM`` (UTC, to the minute) [S: rotki's ``%b. %d, %Y, %I:%M %p``]; English month names
    whatever the locale."""
    utc = moment.astimezone(UTC)
    return f"{MONTHS[utc.month - 1]}. {utc.strftime('%d, %Y, %I:%M %p')}"


def upper(currency: str | None) -> str:
    return (currency or "").upper()


def _number(value: Decimal | None, *, unsigned: bool) -> str:
    if value is None:
        return ""
    return format_decimal(abs(value) if unsigned else value)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One statement row, format-neutral: what both the new and the legacy format say about it (text cells)."""

    id: str
    account: str
    type: str
    subtype: str
    occurred_at: datetime
    amount: str
    amount_currency: str
    value: str
    value_currency: str
    rate: str
    rate_currency: str
    fee: str
    fee_currency: str
    order_id: str
    seq: int


def statement_lines(entry: LedgerEntry) -> list[StatementLine]:
    """The statement rows of one ledger entry: one, plus one per movement a single row cannot hold (a third asset)."""
    unsigned = entry.category in UNSIGNED
    base: Movement | None
    quote: Movement | None
    if entry.category == "trade":
        base, quote = entry.base_quote()
    else:
        base, quote = (entry.movements[0] if entry.movements else None), None
    rest = [m for m in entry.movements if m is not base and m is not quote]
    first = StatementLine(
        id=entry.entry_id,
        account=trade_account_name(entry.trade_account_id),
        type=type_name(entry),
        subtype=SUBTYPES.get(entry.subtype or "", entry.subtype or ""),
        occurred_at=entry.occurred_at,
        amount=_number(base.amount if base else None, unsigned=unsigned),
        amount_currency=upper(base.currency) if base else "",
        value=_number(quote.amount if quote else None, unsigned=unsigned),
        value_currency=upper(quote.currency) if quote else "",
        rate=_number(entry.rate, unsigned=True) if quote is not None else "",
        rate_currency=upper(quote.currency) if quote is not None and entry.rate is not None else "",
        fee=_number(entry.fee, unsigned=True),
        fee_currency=upper(entry.fee_currency) if entry.fee is not None else "",
        order_id=entry.order_id or "",
        seq=entry.seq,
    )
    extra = [
        StatementLine(
            id=entry.entry_id, account=first.account, type=first.type, subtype=first.subtype,
            occurred_at=entry.occurred_at, amount=_number(m.amount, unsigned=unsigned),
            amount_currency=upper(m.currency), value="", value_currency="", rate="", rate_currency="", fee="",
            fee_currency="", order_id=first.order_id, seq=entry.seq,
        )
        for m in rest
    ]  # fmt: skip
    return [first, *extra]


def new_cells(line: StatementLine, *, plain: bool = False) -> list[str]:
    cells = [
        line.id, line.account, line.type, line.subtype, iso_second(line.occurred_at), line.amount,
        line.amount_currency, line.value, line.value_currency, line.rate, line.rate_currency, line.fee,
        line.fee_currency, line.order_id,
    ]  # fmt: skip
    return cells if plain else [*cells, str(line.seq)]


def _with_currency(amount: str, currency: str) -> str:
    return f"{amount} {currency}".strip() if amount else ""


def legacy_cells(line: StatementLine, *, plain: bool = False) -> list[str]:
    cells = [
        line.type,
        legacy_datetime(line.occurred_at),
        line.account,
        _with_currency(line.amount, line.amount_currency),
        _with_currency(line.value, line.value_currency),
        _with_currency(line.rate, line.rate_currency),
        _with_currency(line.fee, line.fee_currency),
        line.subtype,
    ]
    return cells if plain else [*cells, line.id, str(line.seq)]


def header(*, legacy: bool, plain: bool) -> tuple[str, ...]:
    if legacy:
        return LEGACY_HEADER if plain else (*LEGACY_HEADER, *LEGACY_TRACKER_COLUMNS)
    return HEADER if plain else (*HEADER, *TRACKER_COLUMNS)


def rows(entries: Sequence[LedgerEntry], *, legacy: bool, plain: bool = False) -> list[list[str]]:
    """The data rows (without the header) of ``entries`` in the new or the legacy format."""
    out: list[list[str]] = []
    for entry in entries:
        for line in statement_lines(entry):
            out.append(legacy_cells(line, plain=plain) if legacy else new_cells(line, plain=plain))
    return out
