"""Ledger facts → domain events: the legs of a ``user_transactions/`` row, balance snapshots, crypto transactions and
withdrawal requests (the ledger contract of issue 15; docs/bitstamp.md §5.1, §5.6; docs/semantics.md, "The ledger").

Pure, called by ``parse_rest`` for the four ledger events. Every payload is one row (or the balances list) exactly as
received, in canonical exact JSON, so numbers are ``Decimal``/``int`` here, never floats. The trade account is the
one the entry's channel names (``ledger_channels``). Anything unreadable raises ``Bad``/``BadAmount`` (the entry
becomes ``Unknown``, counted: the usual path of a malformed REST fact).

The legs of one ``user_transactions/`` row (the contract's rule):

- every currency key (a lower-case key of 2-12 letters or digits that is not a known non-currency field and not the
  ``<base>_<quote>`` pair-rate key) with a non-zero value → one ``amount`` leg, the signed value. Values come as
  strings, numbers, ``0.0`` for untouched currencies, and the literal string ``"None"`` [S: gct, formance]: ``"None"``
  and ``""`` are zero. A text value with no digit in it is not an amount (a field tracker does not know yet): no leg,
  counted ``ledger_key_not_amount:<key>``; a value with digits that is no number is a bad amount (``Bad``);
- ``fee`` non-zero → one ``fee`` leg, ``amount`` = -fee, in the fee currency: the pair's quote currency when the row
  has a pair-rate key [S: Bitstamp charges spot fees in the quote currency], else the one currency the row moves,
  else ``None`` (counted ``fee_currency_unknown``) [G: Bitstamp documents ``fee`` as "Transaction fee" only]. A
  negative fee (never seen) would credit: its leg is made all the same and counted ``ledger_fee_negative``;
- a derivatives fill (type 2 with a ``margin_mode`` or ``leverage_rate`` value) moves no spot balance: no legs, counted
  ``ledger_derivatives_fill`` [G, medium: perp fills are not delivered; settlements (33, 58-61) carry the money];
- ``type`` as an int or a string (``2`` and ``"2"`` are one code); an unknown code keeps its legs, type name
  ``unknown``, counted ``ledger_type_unknown:<code>``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final

from tracker.bitstamp.ledger_channels import split_ledger_channel
from tracker.bitstamp.parse_fields import Bad, dec, flex_time, id_text, int_text, obj_of, opt_dec, opt_text, req_id
from tracker.bitstamp.rest_entries import pair_key
from tracker.bitstamp.wire import loads_exact, parse_rest_datetime
from tracker.domain.events import (
    BalanceLine,
    BalanceSnapshot,
    CryptoTransaction,
    LedgerLeg,
    LedgerRow,
    WithdrawalRequest,
)
from tracker.domain.ledger import CRYPTO_LISTS, TRADE_CODES, UNKNOWN_TYPE, subtype_of, type_name
from tracker.domain.log import Parseable
from tracker.domain.money import BadAmount, parse_decimal

# The log events of the ledger contract (the same strings as the entry builders in ``ledger_entries``).
REST_LEDGER_ROW: Final = "rest_ledger_row"
REST_BALANCES: Final = "rest_balances"
REST_CRYPTO_TRANSACTION: Final = "rest_crypto_transaction"
REST_WITHDRAWAL_REQUEST: Final = "rest_withdrawal_request"
LEDGER_EVENTS: Final = frozenset({REST_LEDGER_ROW, REST_BALANCES, REST_CRYPTO_TRANSACTION, REST_WITHDRAWAL_REQUEST})

# Fields of a user_transactions/ row that are not currencies [D: spec UserTransactionsResponse; S: margin_mode and
# leverage_rate on derivatives rows, formance]. Keys with an underscore never match the currency shape anyway.
NOT_CURRENCIES: Final = frozenset(
    {"id", "datetime", "type", "fee", "order_id", "self_trade", "self_trade_order_id", "margin_mode",
     "leverage_rate", "trade_account_id", "subtype", "market", "status", "tid", "price"}
)  # fmt: skip
CURRENCY_KEY: Final = re.compile(r"[a-z0-9]{2,12}")
_DIGIT: Final = re.compile(r"[0-9]")
ZERO: Final = Decimal(0)


def _absent(value: object) -> bool:
    """``None``, ``""`` and the literal ``"None"`` the wire sends for "no value" [S]."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _amount(key: str, value: object, notes: list[str]) -> Decimal | None:
    """The signed amount of a currency key, ``None`` when the key holds no amount (see the module docstring)."""
    if _absent(value):
        return ZERO
    if isinstance(value, bool | dict | list):
        notes.append(f"ledger_key_not_amount:{key}")
        return None
    if isinstance(value, str):
        try:
            return parse_decimal(value)
        except BadAmount:
            if _DIGIT.search(value) is None:
                notes.append(f"ledger_key_not_amount:{key}")
                return None
            raise Bad(f"bad amount {value!r} at {key!r}") from None
    return parse_decimal(value)  # Decimal or int (a float never reaches here: the payload is read exactly)


def _optional_decimal(value: object, what: str) -> Decimal | None:
    if _absent(value):
        return None
    try:
        return parse_decimal(value)
    except BadAmount:
        raise Bad(f"bad {what} {value!r}") from None


def type_code_of(value: object) -> str:
    """``2``, ``"2"`` and ``" 02 "`` are code ``"2"``; another text is kept stripped; missing is ``Bad``."""
    number = int_text(value)
    if number is not None:
        return str(number)
    if isinstance(value, str) and value.strip() and value.strip() != "None":
        return value.strip()
    raise Bad(f"ledger row without a type ({value!r})")


def ledger_row(entry: Parseable) -> LedgerRow:
    row = obj_of(loads_exact(entry.payload), "ledger row")
    trade_account_id, _ = split_ledger_channel(entry.channel)
    entry_id = req_id(row, "id")
    code = type_code_of(row.get("type"))
    occurred = parse_rest_datetime(row.get("datetime"))
    if occurred is None:
        raise Bad(f"ledger row without a readable datetime ({row.get('datetime')!r})")
    notes: list[str] = []
    name = type_name(code)
    if name == UNKNOWN_TYPE:
        notes.append(f"ledger_type_unknown:{code}"[:200])
    pair = pair_key(row)
    rate = None if pair is None else _optional_decimal(row.get(f"{pair[0]}_{pair[1]}"), "rate")
    ordered = [] if pair is None else list(pair)
    ordered += sorted(key for key in row if key not in ordered)
    amounts: list[tuple[str, Decimal]] = []
    for key in ordered:
        if key in NOT_CURRENCIES or CURRENCY_KEY.fullmatch(key) is None:
            continue
        amount = _amount(key, row[key], notes)
        if amount is not None and amount != 0:
            amounts.append((key, amount))
    fee = _optional_decimal(row.get("fee"), "fee")
    derivative = code == "2" and not (_absent(row.get("margin_mode")) and _absent(row.get("leverage_rate")))
    legs: list[LedgerLeg] = []
    if derivative:
        notes.append("ledger_derivatives_fill")
    else:
        legs = [LedgerLeg("amount", currency, amount, None) for currency, amount in amounts]
        if fee is not None and fee != 0:
            legs.append(LedgerLeg("fee", _fee_currency(pair, amounts, notes), -fee, fee))
            if fee < 0:
                notes.append("ledger_fee_negative")
    if pair is not None:  # a trade's side: the sign of its base amount
        signed = next((amount for currency, amount in amounts if currency == pair[0]), None)
    elif code in TRADE_CODES:
        signed = None  # no pair, so no base to tell a buy from a sell
    else:  # a transfer's direction: the sign of the one amount it moves
        signed = amounts[0][1] if len(amounts) == 1 else None
    subtype = subtype_of(code, signed)
    return LedgerRow(
        seq=entry.seq,
        account=entry.account,
        trade_account_id=trade_account_id,
        entry_id=entry_id,
        type_code=code,
        type=name,
        subtype=subtype,
        occurred_at=occurred,
        market=None if pair is None else pair[0] + pair[1],
        rate=rate,
        order_id=id_text(row, "order_id"),
        trade_id=entry_id if code == "2" else None,
        fee=fee,
        legs=tuple(legs),
        notes=tuple(notes),
    )


def _fee_currency(pair: tuple[str, str] | None, amounts: list[tuple[str, Decimal]], notes: list[str]) -> str | None:
    if pair is not None:
        return pair[1]
    if len(amounts) == 1:
        return amounts[0][0]
    notes.append("fee_currency_unknown")
    return None


def balance_snapshot(entry: Parseable) -> BalanceSnapshot:
    """The whole ``account_balances/`` answer: a list of ``{currency, total, available, reserved}`` [D] (a single
    object, as ``account_balances/<currency>/`` answers, is read as a list of one)."""
    answer = loads_exact(entry.payload)
    items = [answer] if isinstance(answer, dict) else answer
    if not isinstance(items, list):
        raise Bad("balances answer is not a list")
    trade_account_id, _ = split_ledger_channel(entry.channel)
    lines: list[BalanceLine] = []
    seen: set[str] = set()
    notes: list[str] = []
    for item in items:
        obj = obj_of(item, "balance")
        currency = opt_text(obj, "currency")
        if currency is None:
            raise Bad("balance without a currency")
        currency = currency.strip().lower()
        if currency in seen:
            notes.append("balances_duplicate_currency")
            continue
        seen.add(currency)
        total = _optional_decimal(obj.get("total"), "total")
        if total is None:
            raise Bad(f"balance of {currency} without a total")
        available = _optional_decimal(obj.get("available"), "available")
        reserved = _optional_decimal(obj.get("reserved"), "reserved")
        lines.append(BalanceLine(currency, total, available, reserved))
    return BalanceSnapshot(entry.seq, entry.account, trade_account_id, entry.received_at, tuple(lines), tuple(notes))


def _lower(value: str | None) -> str | None:
    return None if value is None else value.strip().lower()


def _text(obj: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a usable text (an id-like number is text too); ``"None"`` is none."""
    for key in keys:
        value = id_text(obj, key)
        if value is not None:
            return value
    return None


def crypto_transaction(entry: Parseable) -> CryptoTransaction:
    """A ``crypto-transactions/`` row [D: CryptoTransaction: currency, network, destinationAddress, txid, amount
    (a number), datetime (an integer, unit not stated: read by magnitude [G])]."""
    row = obj_of(loads_exact(entry.payload), "crypto transaction")
    _, endpoint = split_ledger_channel(entry.channel)
    list_name = endpoint.rstrip("/").rpartition("/")[2]
    if list_name not in CRYPTO_LISTS:
        raise Bad(f"crypto transaction from an unknown list {endpoint!r}")
    return CryptoTransaction(
        seq=entry.seq,
        account=entry.account,
        list_name=list_name,
        currency=_lower(opt_text(row, "currency")),
        network=opt_text(row, "network"),
        address=_text(row, "destinationAddress", "destination_address"),  # [D] both spellings in the spec
        txid=_text(row, "txid"),
        amount=dec(row, "amount"),
        occurred_at=flex_time(row.get("datetime")),
    )


def withdrawal_request(entry: Parseable) -> WithdrawalRequest:
    """A ``withdrawal-requests/`` row [D: id, datetime, type, currency, network, amount (a string), status, txid
    ("Bitstamp's transaction id", an integer), address, transaction_id (the on-chain id, crypto only)]."""
    row = obj_of(loads_exact(entry.payload), "withdrawal request")
    trade_account_id, _ = split_ledger_channel(entry.channel)
    return WithdrawalRequest(
        seq=entry.seq,
        account=entry.account,
        trade_account_id=trade_account_id,
        request_id=req_id(row, "id"),
        occurred_at=flex_time(row.get("datetime")),
        method=int_text(row.get("type")),
        currency=_lower(opt_text(row, "currency")),
        network=opt_text(row, "network"),
        amount=opt_dec(row, "amount") if not _absent(row.get("amount")) else None,
        status=int_text(row.get("status")),
        txid=_text(row, "txid"),
        address=_text(row, "address"),
        transaction_id=_text(row, "transaction_id"),
    )
