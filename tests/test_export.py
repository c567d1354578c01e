"""``tracker export``: golden files for every format from one fixed ledger covering every ledger type, and the pure
rules behind them (grouping legs into entries, categories, exact decimals, UTC to the second).

The fixed ledger (``LEGS``) is what ``v_ledger`` would hold (the ledger contract's columns): deposits, a buy and a
sell (one on a sub-account), a withdrawal with its fee, transfers between trade accounts, staking in and out, rewards,
settlements, an instant buy with two assets and no pair, a small-balance conversion, the derivatives types, an unknown
type code, a fee-only entry and an amount of 1E-8. Regenerate the golden files after a deliberate change with
``TRACKER_UPDATE_GOLDEN=1 pytest tests/test_export.py`` and review the diff.
"""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tracker.export import bitstamp_csv
from tracker.export.formats import FORMATS, render, table
from tracker.export.ledger import LedgerEntry, LedgerLeg, group_entries

GOLDEN = Path(__file__).parent / "data" / "export"
ACCOUNT = "314159"
T0 = datetime(2024, 1, 5, 15, 4, 5, 678901, tzinfo=UTC)


def leg(
    seq: int,
    entry_id: str,
    type_: str,
    code: int | None,
    currency: str | None,
    amount: str,
    *,
    tai: str = "0",
    fee: str | None = None,
    subtype: str | None = None,
    market: str | None = None,
    rate: str | None = None,
    order_id: str | None = None,
    txid: str | None = None,
    minutes: int | None = None,
) -> LedgerLeg:
    return LedgerLeg(
        account=ACCOUNT,
        trade_account_id=tai,
        entry_id=entry_id,
        leg="fee" if fee is not None else "amount",
        occurred_at=T0 + timedelta(minutes=seq if minutes is None else minutes),
        type=type_,
        type_code=code,
        subtype=subtype,
        currency=currency,
        amount=Decimal(amount),
        fee=Decimal(fee) if fee is not None else None,
        market=market,
        rate=Decimal(rate) if rate is not None else None,
        order_id=order_id,
        trade_id=entry_id if code == 2 else None,
        txid=txid,
        source="rest",
        seq=seq,
    )


def trade(
    seq: int, entry_id: str, legs: list[tuple[str, str]], fee: tuple[str, str] | None, **kw: object
) -> list[LedgerLeg]:
    out = [leg(seq, entry_id, **kw, currency=c, amount=a) for c, a in legs]  # type: ignore[arg-type]
    if fee is not None:
        out.append(leg(seq, entry_id, **kw, currency=fee[0], amount="-" + fee[1], fee=fee[1]))  # type: ignore[arg-type]
    return out


LEGS: list[LedgerLeg] = [
    leg(10, "1001", "deposit", 0, "btc", "1.5", txid="f00dfeed"),
    *trade(11, "1002", [("btc", "0.5"), ("usd", "-30000.25")], ("usd", "75.50"), type_="trade", code=2,
           subtype="buy", market="btcusd", rate="60000.50", order_id="555"),
    *trade(12, "1003", [("eth", "-2"), ("usd", "6000")], ("usd", "15"), type_="trade", code=2, subtype="sell",
           market="ethusd", rate="3000", order_id="556", tai="1234"),
    *trade(13, "1004", [("btc", "-0.2")], ("btc", "0.0005"), type_="withdrawal", code=1, txid="beefcafe"),
    leg(14, "1005", "subaccount_transfer", 14, "usd", "-1000", subtype="out"),
    leg(15, "1006", "subaccount_transfer", 14, "usd", "1000", subtype="in", tai="1234"),
    leg(16, "1007", "staking_sent", 26, "eth", "-1", tai="1234"),
    leg(17, "1008", "staking_credit", 25, "eth", "1", tai="1234"),
    leg(18, "1009", "staking_reward", 27, "eth", "0.00123", tai="1234"),
    leg(19, "1010", "referral_reward", 32, "usd", "5"),
    leg(20, "1011", "settlement_transfer", 33, "usd", "-12.5"),
    leg(21, "1012", "inter_account_transfer", 35, "btc", "0.1", subtype="in"),
    *trade(22, "1013", [("eur", "-100"), ("btc", "0.0015")], ("eur", "0.5"), type_="instant_trade", code=36),
    *trade(23, "1014", [("xrp", "-3.1"), ("btc", "0.00001")], None, type_="small_balance_conversion", code=53),
    leg(24, "1015", "derivatives_settlement", 58, "usd", "42.42"),
    leg(25, "1016", "insurance_fund_claim", 59, "usd", "1"),
    leg(26, "1017", "insurance_fund_premium", 60, "usd", "-0.1"),
    *trade(27, "1018", [("btc", "-0.01"), ("usd", "600")], None, type_="collateral_liquidation", code=61),
    leg(28, "1019", "unknown", 99, "doge", "7"),
    leg(29, "1020", "unknown", 98, "usd", "-0.01", fee="0.01"),
    leg(30, "1021", "deposit", 0, "btc", "1E-8"),
    *trade(31, "1022", [("btc", "0.1"), ("eth", "-2"), ("usd", "-5")], None, type_="unknown", code=97),
]  # fmt: skip


def entries() -> list[LedgerEntry]:
    return group_entries(LEGS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden_file(fmt: str) -> None:
    text = render(table(fmt, entries()))
    path = GOLDEN / f"{fmt}.csv"
    if os.environ.get("TRACKER_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8", newline="")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs: TRACKER_UPDATE_GOLDEN=1 regenerates it"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_carries_the_exchange_id_and_the_log_seq(fmt: str) -> None:
    result = table(fmt, entries())
    by_id = {e.entry_id: e.seq for e in entries()}
    text = render(result)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    for row in rows:
        joined = " ".join(row.values())
        if "ID" in row:
            entry_id = row["ID"]
            assert row["Log seq"] == str(by_id[entry_id])
        else:
            entry_id = joined.split("bitstamp id=", 1)[1].split()[0]
            assert f"seq={by_id[entry_id]}" in joined


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_float_no_exponent_no_fraction_of_a_second(fmt: str) -> None:
    text = render(table(fmt, entries()))
    assert re.search(r"\d[eE][-+]?\d", text) is None
    assert "0.00000001" in text or fmt == "rotki-trades"  # the 1E-8 deposit, exactly
    assert "678901" not in text and ".678" not in text  # UTC to the second


def test_a_trade_is_one_row_with_both_legs_and_its_fee() -> None:
    buy = next(e for e in entries() if e.entry_id == "1002")
    assert [(m.currency, m.amount) for m in buy.movements] == [("btc", Decimal("0.5")), ("usd", Decimal("-30000.25"))]
    assert (buy.fee, buy.fee_currency, buy.category) == (Decimal("75.50"), "usd", "trade")
    rows = list(csv.DictReader(io.StringIO(render(table("koinly", [buy])))))
    assert len(rows) == 1
    row = rows[0]
    assert (row["Sent Amount"], row["Sent Currency"], row["Received Amount"], row["Received Currency"]) == (
        "30000.25", "USD", "0.5", "BTC",
    )  # fmt: skip
    assert (row["Fee Amount"], row["Fee Currency"], row["Date"]) == ("75.5", "USD", "2024-01-05 15:15:05 UTC")


def test_bitstamp_formats_name_accounts_and_times_as_bitstamp_does() -> None:
    sell = next(e for e in entries() if e.entry_id == "1003")
    new = bitstamp_csv.new_cells(bitstamp_csv.statement_lines(sell)[0])
    assert new == ["1003", "Sub Account 1234", "Market", "Sell", "2024-01-05T15:16:05Z", "2", "ETH", "6000", "USD",
                   "3000", "USD", "15", "USD", "556", "12"]  # fmt: skip
    legacy = bitstamp_csv.legacy_cells(bitstamp_csv.statement_lines(sell)[0])
    assert legacy == ["Market", "Jan. 05, 2024, 03:16 PM", "Sub Account 1234", "2 ETH", "6000 USD", "3000 USD",
                      "15 USD", "Sell", "1003", "12"]  # fmt: skip


def test_legacy_time_is_english_whatever_the_hour() -> None:
    assert bitstamp_csv.legacy_datetime(datetime(2023, 12, 31, 0, 5, 59, tzinfo=UTC)) == "Dec. 31, 2023, 12:05 AM"
    assert bitstamp_csv.legacy_datetime(datetime(2023, 6, 1, 12, 0, tzinfo=UTC)) == "Jun. 01, 2023, 12:00 PM"


def test_every_ledger_type_has_a_category_and_unknown_is_neutral() -> None:
    categories = {e.entry_id: e.category for e in entries()}
    assert categories["1019"] == "unknown" and categories["1020"] == "fee" and categories["1013"] == "trade"
    rows = {r[-1].split()[1]: r for r in table("bittytax", entries()).rows}
    assert rows["id=1019"][0] == "Deposit"  # unknown, money in: the neutral category
    assert rows["id=1007"][0] == "Stake" and rows["id=1008"][0] == "Unstake"
    assert rows["id=1011"][0] == "Margin-Loss" and rows["id=1015"][0] == "Margin-Gain"


def test_rotki_events_leave_trades_to_rotki_trades() -> None:
    events, trades = table("rotki", entries()), table("rotki-trades", entries())
    trade_count = sum(1 for e in entries() if e.category == "trade")
    assert events.skipped == trade_count and trades.skipped == len(entries()) - trade_count
    assert {row[0] for row in events.rows} <= {"Deposit", "Withdrawal", "Income", "Loss", "Spend", "Staking"}


def test_an_entry_with_a_third_asset_gets_a_row_per_extra_asset() -> None:
    three = [e for e in entries() if e.entry_id == "1022"]
    assert len(table("koinly", three).rows) == 2
    assert len(table("bitstamp", three).rows) == 3  # the new format holds one asset per Amount/Value pair
