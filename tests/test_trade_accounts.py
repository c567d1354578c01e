"""Every view carries ``trade_account_id`` (issue 15, item 3): the fees per trade account (a fill's account learned
later moves its figures), positions first-learned from fills and liquidation alerts, settlements from their
position, self trades when both sides agree; migration 0007 moving existing rows; ``tracker report --account`` the
trade account and ``--user`` the Bitstamp account on every kind.

Rules: local databases only; no network.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from store_helpers import rows_of

from tracker.cli import main
from tracker.domain.events import DomainEvent, Fill, LiquidationAlert, SelfTrade, Settlement
from tracker.domain.projection import fold
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.projection_schema import VIEWS
from tracker.store.projections import ProjectionStore

USER = "314159"
DAY1 = datetime(2026, 11, 20, 12, tzinfo=UTC)
DAY2 = datetime(2026, 11, 21, 9, tzinfo=UTC)


def _fill(
    seq: int,
    trade_id: str,
    tai: str | None,
    *,
    market: str = "btcusd",
    at: datetime = DAY1,
    position: str | None = None,
    source: str = "ws",
    amount: str = "0.5",
    price: str = "100",
    fee: str = "0.25",
) -> Fill:
    return Fill(
        seq=seq, account=USER, source=source, trade_id=trade_id, order_id=f"o{trade_id}", market=market, side="buy",
        amount=Decimal(amount), price=Decimal(price), fee=Decimal(fee), executed_at=at, position_id=position,
        is_liquidation=False, trade_account_id=tai,
    )  # type: ignore[arg-type]  # fmt: skip


def events() -> list[DomainEvent]:
    return [
        _fill(1, "t1", "0"),
        _fill(2, "t2", None, source="rest", amount="0.1", fee="0.05"),  # REST: no trade account
        _fill(3, "t3", "7", market="btcusd-perp", position="p1", fee="0.1"),
        _fill(4, "t4", None, source="rest", amount="0.2", price="101"),  # REST first ...
        _fill(5, "t4", "7", amount="0.2", price="101"),  # ... its frame names trade account 7: moved
        _fill(6, "t6", None, at=DAY2, source="rest", market="btcusd-perp", position="p2"),
        LiquidationAlert(
            seq=7, account=USER, kind="liquidation_start", position_id="p2", margin_mode="CROSS", occurred_at=DAY2,
            initial_margin_ratio=None, maintenance_margin_ratio=None, trade_account_id="5",
        ),
        _fill(8, "t8", "6", at=DAY2, market="btcusd-perp", position="p2"),  # first-learned stays 5
        Settlement(
            seq=9, account=USER, source="ws", kind="settlement", transaction_id="s1", position_id="p1", ccy="USD",
            amount=Decimal("1.5"), occurred_at=DAY2,
        ),
        Settlement(
            seq=10, account=USER, source="ws", kind="insurance_fund_premium", transaction_id="s2", position_id=None,
            ccy="USD", amount=Decimal("-0.1"), occurred_at=DAY2,
        ),
        SelfTrade(
            seq=11, account=USER, market="btcusd", buy_order_id="o1", sell_order_id="o9", amount=Decimal("0.1"),
            price=Decimal("100"), occurred_at=DAY1, buyers_trade_account_id="0", sellers_trade_account_id="0",
        ),
        SelfTrade(
            seq=12, account=USER, market="btcusd", buy_order_id="o1", sell_order_id="o8", amount=Decimal("0.1"),
            price=Decimal("100"), occurred_at=DAY2, buyers_trade_account_id="0", sellers_trade_account_id="3",
        ),
    ]  # fmt: skip


# (trade account, day, market) -> fills, volume, fees, base volume: the expected v_fees_daily
FEES = {
    ("0", "2026-11-20", "btcusd"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
    (None, "2026-11-20", "btcusd"): (1, Decimal("10"), Decimal("0.05"), Decimal("0.1")),
    ("7", "2026-11-20", "btcusd-perp"): (1, Decimal("50"), Decimal("0.1"), Decimal("0.5")),
    ("7", "2026-11-20", "btcusd"): (1, Decimal("20.2"), Decimal("0.25"), Decimal("0.2")),
    (None, "2026-11-21", "btcusd-perp"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
    ("6", "2026-11-21", "btcusd-perp"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
}


def test_the_fold_keeps_fees_per_trade_account_and_moves_a_fill_whose_account_comes_later() -> None:
    state = fold(events())
    rows = {(k[1], k[2], k[3]): r for k, r in state.rows_of("fees_daily").items()}
    moved = rows.pop(("", "2026-11-20", "btcusd"))
    assert (moved.fills, moved.volume, moved.fees, moved.base_volume) == (1, 10, Decimal("0.05"), Decimal("0.1"))
    shown = {(k[0] or None, k[1], k[2]): (r.fills, r.volume, r.fees, r.base_volume) for k, r in rows.items()}
    assert shown == {k: v for k, v in FEES.items() if k != (None, "2026-11-20", "btcusd")}
    positions = state.rows_of("positions")
    assert positions[(USER, "p1")].trade_account_id == "7"
    assert positions[(USER, "p2")].trade_account_id == "5"  # the alert came first; the later fill's 6 is ignored


def test_a_position_learns_its_account_when_a_fill_is_enriched() -> None:
    state = fold([_fill(1, "t1", None, source="rest", position="p1"), _fill(2, "t1", "4", position="p1")])
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "4"
    fees = {k[1]: r.fills for k, r in state.rows_of("fees_daily").items()}
    assert fees == {"": 0, "4": 1}


def _projected(url: str) -> None:
    engine = open_engine(url)
    try:
        migrate.upgrade(engine)
        ProjectionStore(engine).project_events(events())
    finally:
        engine.dispose()


def _view(url: str, name: str, *columns: str) -> list[tuple[Any, ...]]:
    engine = open_engine(url)
    try:
        view = VIEWS[name]
        with engine.connect() as conn:
            rows = conn.execute(select(*(view.c[c] for c in columns)))
            return sorted((tuple(row) for row in rows), key=lambda r: tuple((v is None, str(v)) for v in r))
    finally:
        engine.dispose()


def _fees(url: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = _view(url, "v_fees_daily", "trade_account_id", "day", "market", "fills", "volume", "fees", "base_volume")
    return {r[:3]: r[3:] for r in rows}


def test_every_view_carries_the_trade_account(db_url: str) -> None:
    _projected(db_url)
    assert _fees(db_url) == FEES  # the emptied "unknown" row is hidden
    assert _view(db_url, "v_positions", "position_id", "trade_account_id") == [("p1", "7"), ("p2", "5")]
    assert _view(db_url, "v_settlements", "transaction_id", "trade_account_id") == [("s1", "7"), ("s2", None)]
    assert _view(db_url, "v_self_trades", "sell_order_id", "trade_account_id") == [("o8", None), ("o9", "0")]
    fills = dict(_view(db_url, "v_fills", "trade_id", "trade_account_id"))
    assert fills == {"t1": "0", "t2": None, "t3": "7", "t4": "7", "t6": None, "t8": "6"}
    for view in VIEWS.values():
        assert "trade_account_id" in view.c or "buyers_trade_account_id" in view.c, view.name
        assert view.c.keys()[-1] == "trade_account_id" or view.name in {"v_orders", "v_fills", "v_liquidations",
                                                                       "v_ledger", "v_balances", "v_balance_checks",
                                                                       "v_transfers"}  # fmt: skip


def test_migration_0007_moves_existing_rows(db_url: str) -> None:
    """Back to 0006 (one fees row per day and market, positions without an account) and up again: the fees are
    computed again from the fills, per trade account, and the positions take their fills' account."""
    _projected(db_url)
    migrate.downgrade(db_url, "0006_ledger")
    old = rows_of(db_url, "SELECT day, market, fills FROM v_fees_daily")
    assert sorted(old) == [
        ("2026-11-20", "btcusd", 3), ("2026-11-20", "btcusd-perp", 1), ("2026-11-21", "btcusd-perp", 2)
    ]  # fmt: skip
    migrate.upgrade(db_url)
    assert _fees(db_url) == FEES
    # Backfilled from the earliest fill naming one (the fold's first-learned 5 came from an alert before it).
    assert _view(db_url, "v_positions", "position_id", "trade_account_id") == [("p1", "7"), ("p2", "6")]


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_report_account_is_the_trade_account_on_every_kind(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _projected(sqlite_url)
    base = ["--db-url", sqlite_url, "--format", "csv"]
    assert main(["report", "fees", *base, "--account", "7"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert {(r["trade_account_id"], r["market"]) for r in rows} == {("7", "btcusd"), ("7", "btcusd-perp")}
    assert main(["report", "fills", *base, "--account", "7"]) == 0
    assert sorted(r["trade_id"] for r in _csv(capsys.readouterr().out)) == ["t3", "t4"]
    assert main(["report", "positions", *base, "--account", "5"]) == 0
    assert [r["position_id"] for r in _csv(capsys.readouterr().out)] == ["p2"]
    assert main(["report", "settlements", *base, "--account", "7"]) == 0
    assert [r["transaction_id"] for r in _csv(capsys.readouterr().out)] == ["s1"]
    assert main(["report", "self-trades", *base, "--account", "3"]) == 0  # either side
    assert [r["sell_order_id"] for r in _csv(capsys.readouterr().out)] == ["o8"]
    assert main(["report", "fills", *base, "--user", USER]) == 0
    assert len(_csv(capsys.readouterr().out)) == 6
    assert main(["report", "fills", *base, "--user", "someone else"]) == 2  # an unknown user id: not an empty report
    assert "this database has no Bitstamp account 'someone else'" in capsys.readouterr().err


def test_report_account_refuses_what_is_not_a_trade_account(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _projected(sqlite_url)
    assert main(["report", "fees", "--db-url", sqlite_url, "--account", "acc"]) == 2
    assert "--account acc: not a trade account id" in capsys.readouterr().err
    # A Bitstamp account (user id) given as --account, as scripts did before: the error names --user.
    assert main(["report", "fills", "--db-url", sqlite_url, "--account", USER]) == 2
    assert f"use --user {USER}" in capsys.readouterr().err
