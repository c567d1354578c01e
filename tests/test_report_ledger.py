"""``tracker report`` for the ledger kinds (ledger, balances, transfers, settlements, self-trades, liquidations,
discrepancies): filters by trade account and time, exact values, and the older kinds unchanged beside them.

The ledger is ``test_export.LEGS`` appended as Bitstamp's rows and projected by the real fold (``_prepared``): every
ledger view is the real one, and the expectations are what that fold gives (``FOLDED``).
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
from test_import_statement import FOLDED, _prepared

from tracker.cli import main
from tracker.store.engine import open_engine
from tracker.store.ledger_queries import LedgerFilter, read_ledger_report, read_legs


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _final_balances(tai: str) -> list[tuple[str, str]]:
    """(currency, balance) of trade account ``tai`` after the last leg, from ``FOLDED``'s running balances."""
    last: dict[str, Decimal] = {}
    for part in FOLDED:
        if part.trade_account_id == tai and part.currency is not None and part.balance_after is not None:
            last[part.currency] = part.balance_after
    return [(currency, f"{balance.normalize():f}") for currency, balance in sorted(last.items())]


def _negative_balances() -> dict[str, tuple[str, str]]:
    """The ``negative_balance`` discrepancies of ``FOLDED`` (docs/semantics.md): opened by the first leg that takes a
    trade account's currency below zero, resolved when it is back at zero or more."""
    opened: dict[tuple[str, str], str] = {}
    out: dict[str, tuple[str, str]] = {}
    for part in FOLDED:
        if part.currency is None or part.balance_after is None:
            continue
        key = (part.trade_account_id, part.currency)
        if part.balance_after < 0 and key not in opened:
            opened[key] = f"negative_balance:{key[0]}:{key[1]}:{part.entry_id}"
            out[opened[key]] = ("negative_balance", "open")
        elif part.balance_after >= 0 and key in opened:
            out[opened.pop(key)] = ("negative_balance", "resolved")
    return out


def test_legs_read_back_exactly(db_url: str) -> None:
    _prepared(db_url)
    engine = open_engine(db_url)
    try:
        assert read_legs(engine, LedgerFilter()) == FOLDED
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
    _prepared(db_url)
    assert main(["report", "balances", "--db-url", db_url, "--format", "csv", "--account", "1234"]) == 0
    balances = [(r["currency"], r["balance"]) for r in _csv(capsys.readouterr().out)]
    assert balances == _final_balances("1234") == [("eth", "-1.99877"), ("usd", "6985")]
    # At a moment: the exact sum of the legs before it.
    assert main(["report", "balances", "--db-url", db_url, "--format", "csv", "--until", "2024-01-05T15:16"]) == 0
    rows = {(r["trade_account_id"], r["currency"]): r for r in _csv(capsys.readouterr().out)}
    assert rows[("0", "btc")]["balance"] == "2" and rows[("0", "usd")]["balance"] == "-30075.75"
    assert set(rows) == {("0", "btc"), ("0", "usd")}
    assert main(["report", "balances", "--db-url", db_url, "--since", "2024-01-01"]) == 2
    assert "use --until" in capsys.readouterr().err


def test_report_kinds_over_the_older_views(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _prepared(db_url)
    for kind in ("settlements", "self-trades", "liquidations"):
        assert main(["report", kind, "--db-url", db_url, "--format", "csv"]) == 0, kind
        assert capsys.readouterr().out.count("\n") == 1  # the header: no WS events in this log
    assert main(["report", "transfers", "--db-url", db_url, "--format", "csv"]) == 0
    transfers = [(r["entry_id"], r["direction"], r["amount"], r["txid"]) for r in _csv(capsys.readouterr().out)]
    moves = [g for g in FOLDED if g.type in ("deposit", "withdrawal") and g.leg == "amount"]
    assert transfers == [(g.entry_id, g.type, f"{g.amount.normalize():f}", g.txid or "") for g in moves]
    assert main(["report", "discrepancies", "--db-url", db_url, "--format", "csv"]) == 0
    found = {r["id"]: (r["kind"], r["status"]) for r in _csv(capsys.readouterr().out)}
    assert found == _negative_balances()  # the fold's own: this made-up ledger starts from nothing
    assert main(["report", "self-trades", "--db-url", db_url, "--account", "1234"]) == 0
    assert main(["report", "settlements", "--db-url", db_url, "--account", "0"]) == 0  # its position's (0007)
    assert main(["report", "ledger", "--db-url", db_url, "--market", "btcusd"]) == 2
    assert main(["report", "fills", "--db-url", db_url, "--user", "314159", "--format", "csv"]) == 0  # the user id


def test_an_unknown_user_or_a_user_id_as_account_is_an_error_not_an_empty_output(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both printed an empty report or an empty CSV (exit 0), which reads as "no activity" for a typo'd id.
    _prepared(db_url)
    for command in (["report", "ledger"], ["report", "fees"], ["export", "--format", "koinly"]):
        assert main([*command, "--db-url", db_url, "--user", "271828"]) == 2
        assert capsys.readouterr().err == (
            "tracker: error: --user 271828: this database has no Bitstamp account '271828' (known: 314159)\n"
        )
    assert main(["export", "--format", "koinly", "--db-url", db_url, "--account", "314159"]) == 2
    assert "--account is the trade account (0 the main one); use --user 314159" in capsys.readouterr().err
    assert main(["export", "--format", "koinly", "--db-url", db_url, "--account", "acc"]) == 2
    assert "--account acc: not a trade account id" in capsys.readouterr().err
    # A known account with nothing in the window is still an empty output.
    assert main(["export", "--format", "koinly", "--db-url", db_url, "--user", "314159", "--since", "2099-01-01"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # the header


def test_discrepancies_of_a_kind_none_has_name_the_kinds_there_are(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tracker discrepancies --kind <typo>` said only "no open discrepancies": the all-clear a typo must not give.
    _prepared(db_url)
    assert main(["discrepancies", "--db-url", db_url, "--kind", "negativ_balance"]) == 0
    assert capsys.readouterr().out == (
        "no open discrepancies of kind 'negativ_balance' (kinds in this database: negative_balance)\n"
    )
    assert main(["discrepancies", "--db-url", db_url, "--kind", "negative_balance", "--status", "all"]) == 0
    assert "negative_balance on " in capsys.readouterr().out


def test_every_ledger_kind_reads(db_url: str) -> None:
    _prepared(db_url)
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
    from tracker.errors import StoreError
    from tracker.store import migrate
    from tracker.store.ledger_queries import require_views

    migrate.upgrade(sqlite_url, "0005_wire_fields_and_acks")  # before the ledger migration
    assert main(["report", "ledger", "--db-url", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not migrated" in err and "run `tracker db upgrade`" in err
    assert main(["export", "--format", "koinly", "--db-url", sqlite_url]) == 2
    assert "run `tracker db upgrade`" in capsys.readouterr().err
    migrate.upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        with pytest.raises(StoreError, match="has no v_absent: run `tracker db upgrade`"):
            require_views(engine, "v_absent")
    finally:
        engine.dispose()
