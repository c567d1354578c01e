"""The ledger's parser (pure): which keys are currencies, the fee's currency, derivatives fills, type as an int or a
string, ``"None"`` strings and ``0.0`` numbers, unknown codes; balance snapshots, crypto rows, withdrawal requests;
malformed rows become ``Unknown`` (the usual path of an unreadable REST fact)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from ledger_helpers import (
    T0,
    balances_entry,
    crypto_entry,
    ledger_entry,
    movement_row,
    request_entry,
    trade_row,
    when,
)
from pipeline import Log

from tracker.bitstamp.rest_entries import entry_from_user_transaction
from tracker.bitstamp.wire import dumps_canonical
from tracker.domain.events import (
    BalanceLine,
    BalanceSnapshot,
    CryptoTransaction,
    Fill,
    LedgerLeg,
    LedgerRow,
    Unknown,
    WithdrawalRequest,
)

D = Decimal


def _parse(entry: object) -> Any:
    event = Log().append(entry)
    assert event is not None
    return event


def _row(row: dict[str, Any], tai: str = "0") -> LedgerRow:
    event = _parse(ledger_entry(row, tai=tai))
    assert isinstance(event, LedgerRow), event
    return event


def test_a_spot_trade_is_two_legs_and_a_fee_in_the_quote_currency() -> None:
    event = _row(trade_row(5, 0, "0.01000000", "-500.00", "50000.00", "1.25"))
    assert event.legs == (
        LedgerLeg("amount", "btc", D("0.01000000"), None),
        LedgerLeg("amount", "usd", D("-500.00"), None),
        LedgerLeg("fee", "usd", D("-1.25"), D("1.25")),
    )
    assert (event.type_code, event.type, event.subtype) == ("2", "trade", "buy")
    assert (event.market, event.rate, event.order_id, event.trade_id) == ("btcusd", D("50000.00"), "9005", "5")
    assert event.trade_account_id == "0" and event.notes == ()


def test_a_sell_and_the_rate_key_is_found_by_its_halves_not_by_order() -> None:
    row = {"id": 6, "datetime": when(0), "type": 2, "usdc_eur": "0.92", "eur": "92.00", "usdc": "-100", "fee": "0.1"}
    event = _row(row)
    assert event.market == "usdceur" and event.subtype == "sell"
    assert [(leg.leg, leg.currency, leg.amount) for leg in event.legs] == [
        ("amount", "usdc", D("-100")),
        ("amount", "eur", D("92.00")),
        ("fee", "eur", D("-0.1")),
    ]


@pytest.mark.parametrize("code", [0, "0", " 0 ", "00"])
def test_type_as_int_or_string_is_one_code(code: object) -> None:
    event = _row(movement_row(7, 0, code, "usd", "10"))  # type: ignore[arg-type]
    assert (event.type_code, event.type) == ("0", "deposit")


def test_none_strings_and_zero_numbers_make_no_legs() -> None:
    row = {"id": 8, "datetime": when(0), "type": "1", "btc": "-0.5", "usd": Decimal("0.0"), "eur": "None",
           "gbp": 0, "xrp": "", "fee": "None", "order_id": "None"}  # fmt: skip
    event = _row(row)
    assert event.legs == (LedgerLeg("amount", "btc", D("-0.5"), None),)
    assert event.fee is None and event.order_id is None and event.trade_id is None


def test_fee_in_the_single_currency_moved_or_unknown() -> None:
    single = _row(movement_row(9, 0, 1, "eth", "-1.5", "0.005"))
    assert single.legs[-1] == LedgerLeg("fee", "eth", D("-0.005"), D("0.005"))
    two = _row({"id": 10, "datetime": when(0), "type": "36", "btc": "0.1", "eur": "-5000", "fee": "12"})
    assert two.legs[-1] == LedgerLeg("fee", None, D("-12"), D("12"))
    assert "fee_currency_unknown" in two.notes
    assert two.subtype is None  # an instant trade without a pair has no base to tell buy from sell


def test_instant_trade_with_a_pair_has_a_side() -> None:
    row = {"id": 11, "datetime": when(0), "type": 36, "btc": "0.1", "eur": "-5000", "btc_eur": "50000", "fee": "0"}
    event = _row(row)
    assert (event.type, event.subtype, event.market) == ("instant_trade", "buy", "btceur")
    assert len(event.legs) == 2  # a zero fee makes no leg


def test_transfers_have_in_and_out() -> None:
    assert _row(movement_row(12, 0, 14, "usd", "-5")).subtype == "out"
    assert _row(movement_row(13, 0, "35", "usd", "5")).subtype == "in"


def test_a_derivatives_fill_moves_no_spot_balance() -> None:
    event = _row(trade_row(14, 0, "0.5", "-25000", "50000", "10", margin_mode="CROSS", leverage_rate="5"))
    assert event.legs == ()
    assert event.notes == ("ledger_derivatives_fill",)
    spot = _row(trade_row(15, 0, "0.5", "-25000", "50000", "10", margin_mode=None, leverage_rate="None"))
    assert len(spot.legs) == 3  # present but empty: a spot fill


def test_unknown_code_keeps_its_legs_and_is_noted() -> None:
    event = _row(movement_row(16, 0, 99, "sol", "3", "0.01"))
    assert (event.type_code, event.type) == ("99", "unknown")
    assert event.notes == ("ledger_type_unknown:99",)
    assert [leg.currency for leg in event.legs] == ["sol", "sol"]


def test_a_field_that_is_not_an_amount_is_skipped_and_noted() -> None:
    row = {**movement_row(17, 0, 0, "usd", "10"), "status": "done", "note": "hello", "flag": True}
    event = _row(row)
    assert event.legs == (LedgerLeg("amount", "usd", D("10"), None),)
    assert event.notes == ("ledger_key_not_amount:flag", "ledger_key_not_amount:note")


def test_the_trade_account_comes_from_the_channel() -> None:
    assert _row(movement_row(18, 0, 0, "usd", "1"), tai="1234").trade_account_id == "1234"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"datetime": when(0), "type": 0, "usd": "1"}, "missing id"),
        ({"id": 1, "datetime": when(0), "type": 0, "usd": "1.2.3"}, "bad amount"),
        ({"id": 1, "datetime": when(0), "type": 0, "usd": "1", "fee": "x1y"}, "bad fee"),
        ({"id": 1, "datetime": when(0), "usd": "1"}, "without a type"),
        ({"id": 1, "datetime": "yesterday", "type": 0, "usd": "1"}, "datetime"),
    ],
)
def test_malformed_rows_are_unknown(row: dict[str, Any], reason: str) -> None:
    entry = dataclasses.replace(ledger_entry({"id": 1}), payload=dumps_canonical(row))
    event = _parse(entry)
    assert isinstance(event, Unknown)
    assert reason in event.reason


def test_per_market_user_transactions_stay_fills() -> None:
    row = trade_row(20, 0, "0.01", "-500", "50000", "1.25")
    entry = entry_from_user_transaction(row, account="acc", received_at=T0, markets_by_pair={}, market="btcusd")
    assert isinstance(_parse(entry), Fill)


def test_balances_answer() -> None:
    answer = [
        {"currency": "BTC", "total": "0.5", "available": "0.4", "reserved": "0.1"},
        {"currency": "usd", "total": "10.00", "available": "None", "reserved": None},
        {"currency": "btc", "total": "9", "available": "9", "reserved": "0"},
    ]
    event = _parse(balances_entry(answer, tai="77"))
    assert isinstance(event, BalanceSnapshot)
    assert event.trade_account_id == "77"
    assert event.lines == (
        BalanceLine("btc", D("0.5"), D("0.4"), D("0.1")),
        BalanceLine("usd", D("10.00"), None, None),
    )
    assert event.notes == ("balances_duplicate_currency",)
    one = _parse(balances_entry({"currency": "eur", "total": "1"}))  # type: ignore[arg-type]
    assert isinstance(one, BalanceSnapshot) and one.lines == (BalanceLine("eur", D("1"), None, None),)
    bad = _parse(balances_entry([{"currency": "eur"}]))
    assert isinstance(bad, Unknown) and "total" in bad.reason


def test_crypto_transaction() -> None:
    row = {"currency": "BTC", "network": "bitcoin", "destinationAddress": "bc1q", "txid": "abc", "amount": D("0.5"),
           "datetime": 1_790_000_000}  # fmt: skip
    event = _parse(crypto_entry(row, "withdrawals"))
    assert isinstance(event, CryptoTransaction)
    assert (event.list_name, event.currency, event.address, event.txid, event.amount) == (
        "withdrawals", "btc", "bc1q", "abc", D("0.5"),
    )  # fmt: skip
    assert event.occurred_at is not None and event.occurred_at.year == 2026
    snake = _parse(crypto_entry({**row, "destinationAddress": None, "destination_address": "bc1z"}, "deposits"))
    assert isinstance(snake, CryptoTransaction) and snake.address == "bc1z"


def test_withdrawal_request() -> None:
    row = {"id": 55, "datetime": "2026-11-01 10:00:00", "type": 1, "currency": "BTC", "network": "bitcoin",
           "amount": "0.2", "status": 11, "txid": 104, "address": "bc1q", "transaction_id": "hash"}  # fmt: skip
    event = _parse(request_entry(row, tai="3"))
    assert isinstance(event, WithdrawalRequest)
    assert (event.trade_account_id, event.request_id, event.status, event.txid, event.transaction_id) == (
        "3", "55", 11, "104", "hash",
    )  # fmt: skip
    assert event.amount == D("0.2") and event.currency == "btc" and event.method == 1
