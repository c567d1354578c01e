"""``tracker report`` for the ledger kinds (ledger, balances, transfers, settlements, self-trades, liquidations,
discrepancies): filters by trade account and time, exact values, and the older kinds unchanged beside them.

The ledger views are look-alike tables with the contract's columns until their migration lands (created here).
Rules: local databases only; no network.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from test_export import LEGS
from test_import_statement import _prepared

from tracker.cli import main
from tracker.store.engine import open_engine
from tracker.store.ledger_queries import LEDGER_VIEWS, LedgerFilter, ledger_metadata, read_ledger_report, read_legs


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _with_balances(url: str) -> None:
    _prepared(url)
    engine = open_engine(url)
    try:
        ledger_metadata.create_all(engine, tables=[LEDGER_VIEWS["v_balances"], LEDGER_VIEWS["v_transfers"]])
        with engine.begin() as conn:
            conn.execute(LEDGER_VIEWS["v_balances"].insert(), [
                {"account": "314159", "trade_account_id": "0", "currency": "btc", "balance": Decimal("1.3995"),
                 "as_of": datetime(2024, 1, 5, 16, tzinfo=UTC), "last_entry_id": "1022", "entries": 9, "last_seq": 31},
                {"account": "314159", "trade_account_id": "1234", "currency": "eth", "balance": Decimal("-1.99877"),
                 "as_of": datetime(2024, 1, 5, 16, tzinfo=UTC), "last_entry_id": "1009", "entries": 4, "last_seq": 18},
            ])  # fmt: skip
    finally:
        engine.dispose()


def test_legs_read_back_exactly(db_url: str) -> None:
    _prepared(db_url)
    engine = open_engine(db_url)
    try:
        assert read_legs(engine, LedgerFilter()) == sorted(LEGS, key=lambda g: (g.seq, g.trade_account_id, g.entry_id,
                                                                                g.leg))  # fmt: skip
        only = read_legs(engine, LedgerFilter(trade_account_id="1234", until=datetime(2024, 1, 5, 15, 21, tzinfo=UTC)))
        assert [g.entry_id for g in only] == ["1003", "1003", "1003", "1006", "1007"]
        assert read_legs(engine, LedgerFilter(account="someone else")) == []
    finally:
        engine.dispose()


def test_report_ledger_filters_by_trade_account(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _prepared(db_url)
    assert main(["report", "ledger", "--db-url", db_url, "--account", "1234", "--format", "csv"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert {r["trade_account_id"] for r in rows} == {"1234"} and len(rows) == 7
    assert [r["amount"] for r in rows if r["entry_id"] == "1009"] == ["0.00123"]
    assert main(["report", "ledger", "--db-url", db_url, "--format", "json", "--since", "2024-01-05T15:34"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["entry_id"] for i in items] == ["1021", "1022", "1022", "1022"]
    assert items[0]["amount"] == "0.00000001" and items[0]["seq"] == 30  # exact text, counts as numbers
    assert main(["report", "ledger", "--db-url", db_url]) == 0
    assert f"({len(LEGS)} rows)" in capsys.readouterr().out


def test_report_balances_now_and_at_a_moment(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _with_balances(db_url)
    assert main(["report", "balances", "--db-url", db_url, "--format", "csv", "--account", "1234"]) == 0
    assert [(r["currency"], r["balance"]) for r in _csv(capsys.readouterr().out)] == [("eth", "-1.99877")]
    # At a moment: the exact sum of the legs before it.
    assert main(["report", "balances", "--db-url", db_url, "--format", "csv", "--until", "2024-01-05T15:16"]) == 0
    rows = {(r["trade_account_id"], r["currency"]): r for r in _csv(capsys.readouterr().out)}
    assert rows[("0", "btc")]["balance"] == "2" and rows[("0", "usd")]["balance"] == "-30075.75"
    assert set(rows) == {("0", "btc"), ("0", "usd")}
    assert main(["report", "balances", "--db-url", db_url, "--since", "2024-01-01"]) == 2
    assert "use --until" in capsys.readouterr().err


def test_report_kinds_over_the_older_views(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _with_balances(db_url)
    for kind in ("transfers", "settlements", "self-trades", "liquidations", "discrepancies"):
        assert main(["report", kind, "--db-url", db_url, "--format", "csv"]) == 0, kind
        assert capsys.readouterr().out.count("\n") == 1  # the header: nothing there yet
    assert main(["report", "self-trades", "--db-url", db_url, "--account", "1234"]) == 0
    assert main(["report", "settlements", "--db-url", db_url, "--account", "0"]) == 0  # its position's (0007)
    assert main(["report", "ledger", "--db-url", db_url, "--market", "btcusd"]) == 2
    assert main(["report", "fills", "--db-url", db_url, "--user", "314159", "--format", "csv"]) == 0  # the user id


def test_every_ledger_kind_reads(db_url: str) -> None:
    _with_balances(db_url)
    engine = open_engine(db_url)
    try:
        for kind in ("ledger", "balances", "transfers", "settlements", "self-trades", "liquidations", "discrepancies"):
            report = read_ledger_report(engine, kind, LedgerFilter())
            assert report.columns[0] == "account", kind
    finally:
        engine.dispose()


def test_a_database_without_the_ledger_views_says_what_to_do(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import inspect

    from tracker.errors import StoreError
    from tracker.store import migrate
    from tracker.store.ledger_queries import require_views

    migrate.upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        with pytest.raises(StoreError, match="has no v_absent: run `tracker db upgrade`"):
            require_views(engine, "v_absent")
        with engine.connect() as conn:
            migrated = inspect(conn).has_table("v_ledger")
    finally:
        engine.dispose()
    if not migrated:  # before the ledger migration: the commands say the same, in one line
        assert main(["report", "ledger", "--db-url", sqlite_url]) == 2
        assert "has no v_ledger: run `tracker db upgrade`" in capsys.readouterr().err
        assert main(["export", "--format", "koinly", "--db-url", sqlite_url]) == 2
