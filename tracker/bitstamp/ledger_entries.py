"""Log entries for the account's ledger facts (pure; the ledger walker calls these). Issue 15, the ledger contract.

Every fact is stored like the other REST facts (``rest_entries.py``): the row (or answer) exactly as received, as
canonical JSON (``dumps_canonical``: sorted keys, exact decimals), ``source='rest'``, ``market`` NULL. The channel is
the endpoint path for the main account (trade account ``0``) and ``subaccount/<id>/<endpoint path>`` for a
sub-account (``ledger_channels.ledger_channel``):

- a row of the account-wide ``user_transactions/`` → ``rest_ledger_row``, key ``rest:{account}:ledger:{tai}:{id}``;
- an ``account_balances/`` answer (the whole list) → ``rest_balances``, key
  ``rest:{account}:balances:{tai}:{received_at_us}``;
- a row of the ``deposits``, ``withdrawals`` or ``ripple_iou_transactions`` list of ``crypto-transactions/`` (main
  account only; channel ``crypto-transactions/<list>``) → ``rest_crypto_transaction``, key
  ``rest:{account}:crypto:{list}:sha256:{hash}``;
- a row of ``withdrawal-requests/`` → ``rest_withdrawal_request``, key
  ``rest:{account}:withdrawal_request:{tai}:{id}:sha256:{hash}`` (each status change is a new fact).

A ledger row keeps ``order_id``, ``trade_id`` (its id, for a type 2 trade) and ``exchange_ts_us``. A crypto row has
no id (the spec's ``CryptoTransaction`` has none), so its content is its identity. Rows are parsed with
``loads_exact`` by the caller (floats as ``Decimal``: ``amount`` of a crypto row is a JSON number [D: spec]) so the
canonical text is exact. A malformed row (not an object, no id, an unknown list or trade account) becomes a
``QuarantineItem`` (kind ``malformed``). Builders never raise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from tracker.bitstamp.ledger_channels import MAIN, is_trade_account_id, ledger_channel
from tracker.bitstamp.rest_entries import USER_TRANSACTIONS, dump_or_none, reject
from tracker.bitstamp.wire import (
    datetime_to_us,
    id_text,
    int64_or_none,
    int_text,
    parse_rest_datetime,
    sha256_text,
    unix_us_by_magnitude,
)
from tracker.domain.log import NewEntry, QuarantineItem

ACCOUNT_BALANCES: Final = "account_balances/"
CRYPTO_TRANSACTIONS: Final = "crypto-transactions/"
WITHDRAWAL_REQUESTS: Final = "withdrawal-requests/"
CRYPTO_LISTS: Final = ("deposits", "withdrawals", "ripple_iou_transactions")

REST_LEDGER_ROW: Final = "rest_ledger_row"
REST_BALANCES: Final = "rest_balances"
REST_CRYPTO_TRANSACTION: Final = "rest_crypto_transaction"
REST_WITHDRAWAL_REQUEST: Final = "rest_withdrawal_request"
LEDGER_EVENTS: Final = frozenset({REST_LEDGER_ROW, REST_BALANCES, REST_CRYPTO_TRANSACTION, REST_WITHDRAWAL_REQUEST})


def _channel(endpoint: str, trade_account_id: str) -> str | None:
    return ledger_channel(endpoint, trade_account_id) if is_trade_account_id(trade_account_id) else None


def _rest_us(value: object) -> int | None:
    moment = parse_rest_datetime(value)
    return None if moment is None else int64_or_none(datetime_to_us(moment))


def entry_from_ledger_row(
    row: object, *, account: str, trade_account_id: str, received_at: datetime
) -> NewEntry | QuarantineItem:
    """One row of the account-wide ``user_transactions/`` (no market) of trade account ``trade_account_id``."""
    channel = _channel(USER_TRANSACTIONS, trade_account_id)
    if channel is None:
        return reject(f"not a trade account id: {trade_account_id!r}", row, account, USER_TRANSACTIONS, received_at)
    if not isinstance(row, dict):
        return reject("ledger row is not an object", row, account, channel, received_at)
    row_id = id_text(row, "id")
    payload = dump_or_none(row)
    if row_id is None or payload is None:
        return reject("ledger row without id or not encodable", row, account, channel, received_at)
    # ``type`` has come as an integer and as a string (docs/bitstamp.md §5.1) [S: seen both].
    is_trade = str(row.get("type")).strip() == "2"
    return NewEntry(
        account=account,
        source="rest",
        channel=channel,
        event=REST_LEDGER_ROW,
        payload=payload,
        dedup_key=f"rest:{account}:ledger:{trade_account_id}:{row_id}",
        received_at=received_at,
        market=None,  # spot and perp rows share a pair key: the ledger never guesses a market
        order_id=id_text(row, "order_id"),
        trade_id=row_id if is_trade else None,
        exchange_ts_us=_rest_us(row.get("datetime")),
    )


def entry_from_balances(
    answer: object, *, account: str, trade_account_id: str, received_at: datetime
) -> NewEntry | QuarantineItem:
    """One ``account_balances/`` answer of trade account ``trade_account_id``: the whole list, as received. Its key
    is its receive time: two answers are two snapshots even when they agree."""
    channel = _channel(ACCOUNT_BALANCES, trade_account_id)
    if channel is None:
        return reject(f"not a trade account id: {trade_account_id!r}", answer, account, ACCOUNT_BALANCES, received_at)
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        return reject("account_balances answer is not a list of objects", answer, account, channel, received_at)
    payload = dump_or_none(answer)
    if payload is None:
        return reject("account_balances answer not encodable", answer, account, channel, received_at)
    return NewEntry(
        account=account,
        source="rest",
        channel=channel,
        event=REST_BALANCES,
        payload=payload,
        dedup_key=f"rest:{account}:balances:{trade_account_id}:{datetime_to_us(received_at)}",
        received_at=received_at,
        market=None,
    )


def entry_from_crypto_transaction(
    row: object, *, account: str, list_name: str, received_at: datetime
) -> NewEntry | QuarantineItem:
    """One row of the ``deposits``, ``withdrawals`` or ``ripple_iou_transactions`` list of ``crypto-transactions/``
    (main account only [D: "This call is for your main account only"]). ``datetime`` is typed integer [D: spec]:
    a unix time whose unit is not stated, read by its size [G]; a text date is read as REST's."""
    if list_name not in CRYPTO_LISTS:
        return reject(f"unknown crypto-transactions list {list_name!r}", row, account, CRYPTO_TRANSACTIONS, received_at)
    channel = CRYPTO_TRANSACTIONS + list_name
    if not isinstance(row, dict):
        return reject("crypto-transactions row is not an object", row, account, channel, received_at)
    payload = dump_or_none(row)
    if payload is None:
        return reject("crypto-transactions row not encodable", row, account, channel, received_at)
    when = int_text(row.get("datetime"))
    exchange_us = int64_or_none(unix_us_by_magnitude(when)) if when is not None else _rest_us(row.get("datetime"))
    return NewEntry(
        account=account,
        source="rest",
        channel=channel,
        event=REST_CRYPTO_TRANSACTION,
        payload=payload,
        dedup_key=f"rest:{account}:crypto:{list_name}:sha256:{sha256_text(payload)}",
        received_at=received_at,
        market=None,
        exchange_ts_us=exchange_us,
    )


def entry_from_withdrawal_request(
    row: object, *, account: str, trade_account_id: str, received_at: datetime
) -> NewEntry | QuarantineItem:
    """One row of ``withdrawal-requests/``. Its key holds the row's content hash: each status change (0 open, 1 in
    process, 2 finished, 3 cancelled, 4 failed, 11 reversed [D: spec]) is a new fact, a repeat is absorbed."""
    channel = _channel(WITHDRAWAL_REQUESTS, trade_account_id)
    if channel is None:
        return reject(f"not a trade account id: {trade_account_id!r}", row, account, WITHDRAWAL_REQUESTS, received_at)
    if not isinstance(row, dict):
        return reject("withdrawal-requests row is not an object", row, account, channel, received_at)
    request_id = id_text(row, "id")
    payload = dump_or_none(row)
    if request_id is None or payload is None:
        return reject("withdrawal-requests row without id or not encodable", row, account, channel, received_at)
    return NewEntry(
        account=account,
        source="rest",
        channel=channel,
        event=REST_WITHDRAWAL_REQUEST,
        payload=payload,
        dedup_key=f"rest:{account}:withdrawal_request:{trade_account_id}:{request_id}:sha256:{sha256_text(payload)}",
        received_at=received_at,
        market=None,
        exchange_ts_us=_rest_us(row.get("datetime")),
    )


__all__ = [
    "ACCOUNT_BALANCES",
    "CRYPTO_LISTS",
    "CRYPTO_TRANSACTIONS",
    "LEDGER_EVENTS",
    "MAIN",
    "REST_BALANCES",
    "REST_CRYPTO_TRANSACTION",
    "REST_LEDGER_ROW",
    "REST_WITHDRAWAL_REQUEST",
    "USER_TRANSACTIONS",
    "WITHDRAWAL_REQUESTS",
    "entry_from_balances",
    "entry_from_crypto_transaction",
    "entry_from_ledger_row",
    "entry_from_withdrawal_request",
]
