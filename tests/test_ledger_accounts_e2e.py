"""End to end, the whole account (issue 15): ``tracker reconcile`` (``reconcile_once``) against the fake exchange over
real sockets, with its sub-accounts, deposits, withdrawals and their requests, staking, transfers, instant buys and
unknown type codes; into SQLite and PostgreSQL.

- every trade account's ``v_balances`` equals the fake's own balances, exactly, and every snapshot check agrees;
- ``v_transfers`` has one row per withdrawal request, each with its latest status (reversed and failed shown), the
  finished crypto ones matched to their ledger row and their on-chain txid;
- a ledger row changed on the fake's side before tracker reads it: the check differs and ``v_discrepancies`` names it;
- the fake ignoring ``X-Auth-Subaccount-Id`` (formance's observation): tracker refuses to count the main account's
  rows again under a sub-account and says so in ``v_discrepancies``.

Rules: loopback only, port 0, an absolute timeout, no sleep used as synchronisation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from ledger_truth import assert_balances_equal_fake, balances_in_db, fake_balances
from sqlalchemy import text

from tracker.config import Settings
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.recovery import reconcile_once
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore

pytestmark = pytest.mark.timeout(120)
MARKETS = ("btcusd", "ethusd", "btcusd-perp")


def settings_for(fx: FakeExchange, db_url: str) -> Settings:
    return fx.settings(db_url, markets=MARKETS)


async def reconcile_and_project(fx: FakeExchange, db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        log = EventLog(engine)
        await reconcile_once(settings_for(fx, db_url), log, full=True)
        ProjectionStore(engine).catch_up(log)
    finally:
        engine.dispose()


def rows(db_url: str, sql: str) -> list[Any]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


async def test_every_trade_account_balance_equals_the_fake(db_url: str) -> None:
    upgrade(db_url)
    async with open_fake_exchange(seed=11, markets=MARKETS) as fx:
        await fx.generate(600)
        await reconcile_and_project(fx, db_url)
        await fx.generate(200)  # more movements, then a second reconciliation continues from the cursors
        await reconcile_and_project(fx, db_url)
        truth = fx.truth()
    engine = open_engine(db_url)
    try:
        assert_balances_equal_fake(engine, truth)
    finally:
        engine.dispose()
    assert {tai for tai, _ in fake_balances(truth)} == {"0", "1001", "1002"}
    types = {r[0] for r in rows(db_url, "SELECT DISTINCT type FROM v_ledger")}
    assert {"deposit", "withdrawal", "trade", "subaccount_transfer", "instant_trade", "unknown"} <= types

    requests = {str(w["id"]): w for account in truth["accounts"].values() for w in account["withdrawal_requests"]}
    transfers = {
        str(r[0]): r[1:]
        for r in rows(
            db_url,
            "SELECT request_id, request_status, request_status_name, entry_id, txid, matched_by FROM v_transfers"
            " WHERE request_id IS NOT NULL",
        )
    }
    assert set(transfers) == set(requests)  # every request once, whatever became of it
    for rid, (status, _name, entry_id, txid, matched_by) in transfers.items():
        want = requests[rid]
        assert int(status) == int(want["status"])
        if want.get("txid") is not None:  # it reached the ledger: the request is matched to its ledger row
            assert str(entry_id) == str(want["txid"]) and matched_by is not None
        if want.get("transaction_id"):
            assert txid == want["transaction_id"]
    names = {r[1] for r in transfers.values()}
    assert "finished" in names and ({"reversed", "failed", "cancelled"} & names)


async def test_a_ledger_row_changed_on_the_exchange_is_a_discrepancy(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    async with open_fake_exchange(seed=12, markets=MARKETS) as fx:
        await fx.generate(300)
        await reconcile_and_project(fx, sqlite_url)
        await fx.generate(100)
        account = fx.model.state.accounts["1001"]
        known = {int(r[0]) for r in rows(sqlite_url, "SELECT entry_id FROM v_ledger WHERE trade_account_id = '1001'")}
        row = next(
            r for r in account.transactions if r.id not in known and any(k in r.row for k in ("usd", "btc", "eth"))
        )
        currency = next(c for c in ("usd", "btc", "eth") if c in row.row and Decimal(str(row.row[c])) != 0)
        fx.tamper_ledger_row("1001", row.id, currency, Decimal(str(row.row[currency])) + Decimal("0.01"))
        await reconcile_and_project(fx, sqlite_url)
        truth = fx.truth()
    mine, theirs = balances_in_db(open_engine(sqlite_url)), fake_balances(truth)
    assert mine[("1001", currency)] - theirs[("1001", currency)] == Decimal("0.01")
    differing = rows(
        sqlite_url,
        "SELECT currency, difference, first_entry_id FROM v_balance_checks"
        " WHERE trade_account_id = '1001' AND status = 'differs'",
    )
    assert [(c, Decimal(str(d))) for c, d, _ in differing] == [(currency, Decimal("-0.01"))]
    assert int(differing[0][2]) <= row.id  # the first ledger entry since the last agreement: at or before the change
    found = rows(sqlite_url, "SELECT kind, status, detail FROM v_discrepancies WHERE kind = 'balance_mismatch'")
    assert len(found) == 1 and found[0][1] == "open" and currency in found[0][2]


async def test_an_ignored_subaccount_header_is_refused_not_counted_twice(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    async with open_fake_exchange(seed=13, markets=MARKETS, modes=["subaccount-header-ignored"]) as fx:
        await fx.generate(200)
        await reconcile_and_project(fx, sqlite_url)
        truth = fx.truth()
    main = {c: Decimal(v) for c, v in truth["accounts"]["0"]["balances"].items()}
    mine = balances_in_db(open_engine(sqlite_url))
    assert {c: b for (tai, c), b in mine.items() if tai == "0"} == {c: b for c, b in main.items() if b != 0}
    kinds = {r[0] for r in rows(sqlite_url, "SELECT kind FROM v_discrepancies WHERE status = 'open'")}
    assert "subaccount_header_ignored" in kinds
    # the main account's rows were not counted under the sub-accounts
    assert not [k for k in mine if k[0] != "0" and mine[k] == main.get(k[1])]
