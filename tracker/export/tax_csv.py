"""Import formats of accounting and tax tools, written from the ledger: Koinly, CoinTracking, BittyTax, rotki.

One row per ledger entry: what was sent, what was received, the fee. A trade is one row (sent quote, received base,
or the other way round); an entry that moves a third asset gets one more row per extra asset, with the same id. Every
row names the exchange's id and the log seq in the format's free-text column (Koinly ``Description``, CoinTracking
``Comment``, BittyTax ``Note``, rotki ``Description``). Quantities are unsigned (the columns say the direction),
exact, never in exponent notation. docs/export.md names the source of every column and category, and says where a
source is unsure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Final

from tracker.domain.money import format_decimal
from tracker.export.bitstamp_csv import type_name, upper
from tracker.export.ledger import MAIN_ACCOUNT, LedgerEntry, Movement

KOINLY_HEADER: Final = (
    "Date", "Sent Amount", "Sent Currency", "Received Amount", "Received Currency", "Fee Amount", "Fee Currency",
    "Net Worth Amount", "Net Worth Currency", "Label", "Description", "TxHash",
)  # fmt: skip
COINTRACKING_HEADER: Final = (
    "Type", "Buy Amount", "Buy Currency", "Sell Amount", "Sell Currency", "Fee", "Fee Currency", "Exchange",
    "Trade-Group", "Comment", "Date", "Tx-ID",
)  # fmt: skip
BITTYTAX_HEADER: Final = (
    "Type", "Buy Quantity", "Buy Asset", "Buy Value in GBP", "Sell Quantity", "Sell Asset", "Sell Value in GBP",
    "Fee Quantity", "Fee Asset", "Fee Value in GBP", "Wallet", "Timestamp", "Note",
)  # fmt: skip
ROTKI_EVENTS_HEADER: Final = (
    "Type",
    "Location",
    "Currency",
    "Amount",
    "Fee",
    "Fee Currency",
    "Description",
    "Timestamp",
)
ROTKI_TRADES_HEADER: Final = (
    "Location", "Base Currency", "Quote Currency", "Type", "Buy Amount", "Sell Amount", "Fee", "Fee Currency",
    "Description", "Timestamp",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Part:
    """One exported row of an entry: at most one asset out, one in, and the fee (on the entry's first row only)."""

    entry: LedgerEntry
    sent: Movement | None
    received: Movement | None
    fee: Decimal | None
    fee_currency: str | None


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: list[list[str]]
    skipped: int = 0  # entries this format cannot hold (rotki's events file: trades, which rotki-trades holds)


def parts(entry: LedgerEntry) -> Iterator[Part]:
    sent, received = list(entry.sent), list(entry.received)
    first = Part(entry, sent.pop(0) if sent else None, received.pop(0) if received else None, entry.fee,
                 entry.fee_currency)  # fmt: skip
    yield first
    for extra in [*sent, *received]:
        yield Part(entry, extra if extra.amount < 0 else None, extra if extra.amount > 0 else None, None, None)


def note(entry: LedgerEntry) -> str:
    """``bitstamp id=123 seq=45 account=0 type=Market order=789 txid=...``: the exchange's id and the log seq."""
    text = f"bitstamp id={entry.entry_id} seq={entry.seq} account={entry.trade_account_id} type={type_name(entry)}"
    if entry.order_id:
        text += f" order={entry.order_id}"
    if entry.txid:
        text += f" txid={entry.txid}"
    return text


def _qty(movement: Movement | None) -> str:
    return format_decimal(abs(movement.amount)) if movement is not None else ""


def _ccy(movement: Movement | None) -> str:
    return upper(movement.currency) if movement is not None else ""


def _fee(part: Part) -> tuple[str, str]:
    if part.fee is None:
        return "", ""
    return format_decimal(part.fee), upper(part.fee_currency)


def _sign(part: Part) -> int:
    if part.received is not None and part.sent is None:
        return 1
    if part.sent is not None and part.received is None:
        return -1
    if part.sent is None and part.received is None:
        return -1 if part.fee is not None else 0
    return 0


def _by_sign(part: Part, incoming: str, outgoing: str, both: str) -> str:
    return {1: incoming, -1: outgoing}.get(_sign(part), both)


# --- Koinly universal template ------------------------------------------------------------------------------------


def koinly_label(part: Part) -> str:
    """Koinly's tag [S: Koinly help "What are tags"]: ``reward`` for staking and referral rewards, ``realized gain``
    for derivatives settlements [G: the CSV spelling of Koinly's "Realized P&L" tag], ``cost`` for a fee-only entry;
    no tag otherwise (a plain deposit, withdrawal or trade: Koinly's neutral reading)."""
    category = part.entry.category
    return {"reward": "reward", "pnl": "realized gain", "fee": "cost"}.get(category, "")


def koinly(entries: Sequence[LedgerEntry]) -> Table:
    rows = []
    for entry in entries:
        for part in parts(entry):
            fee, fee_ccy = _fee(part)
            sent = part.sent
            if sent is None and part.received is None and part.fee is not None:
                sent, fee, fee_ccy = Movement(part.fee_currency or "", -part.fee), "", ""  # the fee is what it sends
            rows.append([
                entry.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                _qty(sent), _ccy(sent), _qty(part.received), _ccy(part.received), fee, fee_ccy, "", "",
                koinly_label(part), note(entry), entry.txid or "",
            ])  # fmt: skip
    return Table(KOINLY_HEADER, rows)


# --- CoinTracking CSV import ---------------------------------------------------------------------------------------


def cointracking_type(part: Part) -> str:
    """CoinTracking's Type [S: the types BittyTax reads from CoinTracking: Trade, Deposit, Withdrawal, Staking,
    Reward/Bonus, Margin Profit, Margin Loss; G: Other Fee]."""
    entry = part.entry
    category = entry.category
    if category == "trade":
        return "Trade"
    if category in ("deposit", "withdrawal"):
        return "Deposit" if category == "deposit" else "Withdrawal"
    if category == "reward":
        return "Staking" if entry.type == "staking_reward" else "Reward/Bonus"
    if category == "pnl":
        return _by_sign(part, "Margin Profit", "Margin Loss", "Trade")
    if category == "fee":
        return "Other Fee"
    return _by_sign(part, "Deposit", "Withdrawal", "Trade")  # staking, transfers, unknown: neutral


def _group(entry: LedgerEntry) -> str:
    return "Main Account" if entry.trade_account_id == MAIN_ACCOUNT else f"Sub Account {entry.trade_account_id}"


def cointracking(entries: Sequence[LedgerEntry]) -> Table:
    rows = []
    for entry in entries:
        for part in parts(entry):
            fee, fee_ccy = _fee(part)
            sent = part.sent
            if sent is None and part.received is None and part.fee is not None:
                sent, fee, fee_ccy = Movement(part.fee_currency or "", -part.fee), "", ""  # the fee is what it sells
            rows.append([
                cointracking_type(part), _qty(part.received), _ccy(part.received), _qty(sent), _ccy(sent), fee,
                fee_ccy, "Bitstamp", _group(entry), note(entry),
                entry.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                f"bitstamp-{entry.trade_account_id}-{entry.entry_id}",
            ])  # fmt: skip
    return Table(COINTRACKING_HEADER, rows)


# --- BittyTax transaction records ----------------------------------------------------------------------------------


def bittytax_type(part: Part) -> str:
    """BittyTax's transaction type [S: BittyTax ``bt_types.TrType``]."""
    entry = part.entry
    category = entry.category
    if category == "trade":
        return "Trade"
    if category in ("deposit", "withdrawal"):
        return "Deposit" if category == "deposit" else "Withdrawal"
    if category == "reward":
        return "Staking-Reward" if entry.type == "staking_reward" else "Referral"
    if category == "staking":
        return _by_sign(part, "Unstake", "Stake", "Trade")
    if category == "pnl":
        return _by_sign(part, "Margin-Gain", "Margin-Loss", "Trade")
    if category == "fee":
        return "Spend"
    return _by_sign(part, "Deposit", "Withdrawal", "Trade")  # transfers, unknown: neutral


def bittytax(entries: Sequence[LedgerEntry]) -> Table:
    rows = []
    for entry in entries:
        wallet = (
            "Bitstamp" if entry.trade_account_id == MAIN_ACCOUNT else f"Bitstamp Sub Account {entry.trade_account_id}"
        )
        for part in parts(entry):
            fee, fee_ccy = _fee(part)
            sent = part.sent
            if sent is None and part.received is None and part.fee is not None:
                sent, fee, fee_ccy = Movement(part.fee_currency or "", -part.fee), "", ""
            rows.append([
                bittytax_type(part), _qty(part.received), _ccy(part.received), "", _qty(sent), _ccy(sent), "", fee,
                fee_ccy, "", wallet, entry.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000 UTC"),
                note(entry),
            ])  # fmt: skip
    return Table(BITTYTAX_HEADER, rows)


# --- rotki generic import ------------------------------------------------------------------------------------------


def _millis(entry: LedgerEntry) -> str:
    """Unix milliseconds of the whole second [S: rotki reads ``Timestamp`` as ``TimestampMS``]."""
    return str(int(entry.occurred_at.astimezone(UTC).replace(microsecond=0).timestamp()) * 1000)


def rotki_event_type(part: Part) -> str:
    """rotki's generic event type [S: rotki ``rotki_events.py``: Deposit, Withdrawal, Income, Loss, Spend, Staking]."""
    entry = part.entry
    category = entry.category
    if category in ("deposit", "withdrawal"):
        return "Deposit" if category == "deposit" else "Withdrawal"
    if category == "reward":
        return "Staking" if entry.type == "staking_reward" else "Income"
    if category == "pnl":
        return _by_sign(part, "Income", "Loss", "Spend")
    if category == "fee":
        return "Spend"
    return _by_sign(part, "Deposit", "Withdrawal", "Withdrawal")  # staking, transfers, unknown: neutral


def _single_asset(part: Part) -> Iterator[Part]:
    """``part`` as rows of one asset each (rotki's events move one asset): the received one first, the fee on it."""
    if part.sent is not None and part.received is not None:
        yield Part(part.entry, None, part.received, part.fee, part.fee_currency)
        yield Part(part.entry, part.sent, None, None, None)
    else:
        yield part


def rotki_events(entries: Sequence[LedgerEntry]) -> Table:
    rows = []
    skipped = 0
    for entry in entries:
        if entry.category == "trade":
            skipped += 1  # rotki's events file holds no trades: `--format rotki-trades`
            continue
        for part in (single for whole in parts(entry) for single in _single_asset(whole)):
            fee, fee_ccy = _fee(part)
            moved = part.received or part.sent
            if moved is None and part.fee is not None:
                moved, fee, fee_ccy = Movement(part.fee_currency or "", -part.fee), "", ""
            rows.append([
                rotki_event_type(part), "bitstamp", _ccy(moved), _qty(moved), fee, fee_ccy, note(entry), _millis(entry),
            ])  # fmt: skip
    return Table(ROTKI_EVENTS_HEADER, rows, skipped)


def rotki_trades(entries: Sequence[LedgerEntry]) -> Table:
    """Trades only [S: rotki ``rotki_trades.py`` columns; G: Buy Amount is what was received and Sell Amount what was
    sent, for buys and sells alike]."""
    rows = []
    skipped = 0
    for entry in entries:
        if entry.category != "trade":
            skipped += 1
            continue
        base, quote = entry.base_quote()
        buy = base is not None and base.amount > 0
        for part in parts(entry):
            fee, fee_ccy = _fee(part)
            rows.append([
                "bitstamp", _ccy(base), _ccy(quote), "Buy" if buy else "Sell", _qty(part.received), _qty(part.sent),
                fee, fee_ccy, note(entry), _millis(entry),
            ])  # fmt: skip
    return Table(ROTKI_TRADES_HEADER, rows, skipped)


TAX_FORMATS: Final[dict[str, Callable[[Sequence[LedgerEntry]], Table]]] = {
    "koinly": koinly,
    "cointracking": cointracking,
    "bittytax": bittytax,
    "rotki": rotki_events,
    "rotki-trades": rotki_trades,
}
