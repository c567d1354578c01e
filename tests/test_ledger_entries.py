"""The ledger facts' entry builders (``tracker.bitstamp.ledger_entries``): channels, dedup keys and columns of the
ledger contract, exact payloads, and quarantine (never an exception) for anything malformed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.bitstamp import ledger_entries as le
from tracker.bitstamp.wire import dumps_canonical, loads_exact, sha256_text
from tracker.domain.log import NewEntry, QuarantineItem

NOW = datetime(2026, 12, 6, 7, 0, 0, 123456, tzinfo=UTC)
NOW_US = int(NOW.timestamp()) * 1_000_000 + 123456


def _entry(item: NewEntry | QuarantineItem) -> NewEntry:
    assert isinstance(item, NewEntry), item
    return item


TRADE = loads_exact(
    '{"id": 9001, "datetime": "2026-12-05 10:00:00.250000", "type": "2", "btc": "0.01000000", "usd": "-500.00",'
    ' "btc_usd": 50000.00, "fee": "1.25", "order_id": 77, "eur": 0.0}'
)


def test_ledger_row_main_account() -> None:
    e = _entry(le.entry_from_ledger_row(TRADE, account="42", trade_account_id="0", received_at=NOW))
    assert (e.source, e.channel, e.event) == ("rest", "user_transactions/", "rest_ledger_row")
    assert e.dedup_key == "rest:42:ledger:0:9001"
    assert e.market is None
    assert (e.order_id, e.trade_id) == ("77", "9001")
    assert e.exchange_ts_us == int(datetime(2026, 12, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000 + 250_000
    assert e.payload == dumps_canonical(TRADE)
    assert json.loads(e.payload, parse_float=Decimal)["btc_usd"] == Decimal("50000.00")  # exact, as received
    assert e.received_at == NOW


def test_ledger_row_sub_account_and_non_trade() -> None:
    row = {"id": "17", "datetime": "2026-12-05 10:00:00", "type": 0, "btc": "1.0", "fee": "0"}
    e = _entry(le.entry_from_ledger_row(row, account="42", trade_account_id="1234", received_at=NOW))
    assert e.channel == "subaccount/1234/user_transactions/"
    assert e.dedup_key == "rest:42:ledger:1234:17"
    assert (e.trade_id, e.order_id) == (None, None)


def test_ledger_row_int_type_two_is_a_trade() -> None:
    e = _entry(le.entry_from_ledger_row({"id": 5, "type": 2}, account="a", trade_account_id="0", received_at=NOW))
    assert e.trade_id == "5"
    assert e.exchange_ts_us is None


@pytest.mark.parametrize(
    ("row", "tai"),
    [
        ([1, 2], "0"),
        ("text", "0"),
        ({"type": 2}, "0"),
        ({"id": None}, "0"),
        ({"id": True}, "0"),
        ({"id": 1}, "01"),
        ({"id": 1}, "-3"),
        ({"id": 1, "x": float("nan")}, "0"),
    ],
)
def test_ledger_row_malformed_is_quarantined(row: Any, tai: str) -> None:
    item = le.entry_from_ledger_row(row, account="42", trade_account_id=tai, received_at=NOW)
    assert isinstance(item, QuarantineItem)
    assert (item.kind, item.source, item.account) == ("malformed", "rest", "42")
    assert (item.channel or "").endswith("user_transactions/")


def test_balances_snapshot() -> None:
    answer = loads_exact('[{"currency": "BTC", "total": "1.5", "available": "1.0", "reserved": "0.5"}]')
    e = _entry(le.entry_from_balances(answer, account="42", trade_account_id="0", received_at=NOW))
    assert (e.channel, e.event, e.market) == ("account_balances/", "rest_balances", None)
    assert e.dedup_key == f"rest:42:balances:0:{NOW_US}"
    assert e.payload == dumps_canonical(answer)
    sub = _entry(le.entry_from_balances([], account="42", trade_account_id="7", received_at=NOW))
    assert sub.channel == "subaccount/7/account_balances/"
    assert sub.dedup_key == f"rest:42:balances:7:{NOW_US}"


@pytest.mark.parametrize("answer", [{"currency": "BTC"}, [1], "x", None, [{"a": 1}, "b"]])
def test_balances_malformed(answer: Any) -> None:
    item = le.entry_from_balances(answer, account="42", trade_account_id="0", received_at=NOW)
    assert isinstance(item, QuarantineItem)


def test_crypto_transaction() -> None:
    row = loads_exact(
        '{"currency": "BTC", "network": "bitcoin", "destinationAddress": "bc1q", "txid": "ab12",'
        ' "amount": 0.50000000, "datetime": 1764928800}'
    )
    e = _entry(le.entry_from_crypto_transaction(row, account="42", list_name="deposits", received_at=NOW))
    assert (e.channel, e.event, e.market) == ("crypto-transactions/deposits", "rest_crypto_transaction", None)
    assert e.dedup_key == f"rest:42:crypto:deposits:sha256:{sha256_text(e.payload)}"
    assert '"amount":0.50000000' in e.payload  # the number exactly as received
    assert e.exchange_ts_us == 1764928800 * 1_000_000
    ms = _entry(
        le.entry_from_crypto_transaction(
            {**row, "datetime": 1764928800123}, account="42", list_name="withdrawals", received_at=NOW
        )
    )
    assert ms.exchange_ts_us == 1764928800123 * 1000
    assert ms.channel == "crypto-transactions/withdrawals"
    text = _entry(
        le.entry_from_crypto_transaction(
            {**row, "datetime": "2026-12-05 10:00:00"},
            account="42",
            list_name="ripple_iou_transactions",
            received_at=NOW,
        )
    )
    assert text.exchange_ts_us == int(datetime(2026, 12, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000


def test_crypto_transaction_malformed() -> None:
    assert isinstance(
        le.entry_from_crypto_transaction({}, account="42", list_name="other", received_at=NOW), QuarantineItem
    )
    assert isinstance(
        le.entry_from_crypto_transaction([1], account="42", list_name="deposits", received_at=NOW), QuarantineItem
    )


def test_withdrawal_request_each_status_a_fact() -> None:
    row = {
        "id": 55,
        "datetime": "2026-12-05 10:00:00",
        "type": 1,
        "currency": "BTC",
        "amount": "0.1",
        "status": 0,
        "txid": 9002,
        "address": "bc1q",
    }
    open_ = _entry(le.entry_from_withdrawal_request(row, account="42", trade_account_id="0", received_at=NOW))
    done = _entry(
        le.entry_from_withdrawal_request(
            {**row, "status": 2, "transaction_id": "ff"}, account="42", trade_account_id="0", received_at=NOW
        )
    )
    assert (open_.channel, open_.event) == ("withdrawal-requests/", "rest_withdrawal_request")
    assert open_.dedup_key.startswith("rest:42:withdrawal_request:0:55:sha256:")
    assert open_.dedup_key != done.dedup_key
    again = le.entry_from_withdrawal_request(dict(row), account="42", trade_account_id="0", received_at=NOW)
    assert _entry(again).dedup_key == open_.dedup_key
    assert open_.exchange_ts_us == int(datetime(2026, 12, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000
    sub = _entry(le.entry_from_withdrawal_request(row, account="42", trade_account_id="9", received_at=NOW))
    assert sub.channel == "subaccount/9/withdrawal-requests/"
    assert sub.dedup_key.startswith("rest:42:withdrawal_request:9:55:sha256:")


def test_withdrawal_request_malformed() -> None:
    for row, tai in (({"status": 1}, "0"), (7, "0"), ({"id": 1}, "x")):
        assert isinstance(
            le.entry_from_withdrawal_request(row, account="42", trade_account_id=tai, received_at=NOW), QuarantineItem
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.decimals(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@given(row=json_values | st.dictionaries(st.sampled_from(["id", "type", "datetime", "order_id"]), json_values))
def test_builders_never_raise(row: Any) -> None:
    for item in (
        le.entry_from_ledger_row(row, account="a", trade_account_id="0", received_at=NOW),
        le.entry_from_balances(row, account="a", trade_account_id="3", received_at=NOW),
        le.entry_from_crypto_transaction(row, account="a", list_name="deposits", received_at=NOW),
        le.entry_from_withdrawal_request(row, account="a", trade_account_id="0", received_at=NOW),
    ):
        assert isinstance(item, NewEntry | QuarantineItem)
