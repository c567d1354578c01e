"""Balances against the fake's books: what the end-to-end tests (kill -9, every fault mode) assert of the ledger.

``v_balances`` must equal, exactly, the fake's own balance of every trade account and currency (a currency the
ledger never moved counts as 0 on the tracker's side), and no ``v_balance_checks`` row may differ: every
``account_balances/`` snapshot tracker took agreed with the ledger it had logged before it (the consistent cut).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text


def balances_in_db(engine: Engine) -> dict[tuple[str, str], Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT trade_account_id, currency, balance FROM v_balances")).all()
    return {(str(tai), str(currency)): Decimal(str(balance)) for tai, currency, balance in rows}


def fake_balances(truth: dict[str, Any]) -> dict[tuple[str, str], Decimal]:
    return {
        (str(tai), str(currency)): Decimal(str(amount))
        for tai, account in truth["accounts"].items()
        for currency, amount in account["balances"].items()
    }


def assert_balances_equal_fake(engine: Engine, truth: dict[str, Any]) -> None:
    """v_balances equals the fake's balances for every trade account and currency, and no snapshot check differs;
    each trade account has at least one check that agrees."""
    mine, theirs = balances_in_db(engine), fake_balances(truth)
    keys = set(mine) | set(theirs)
    assert {k: mine.get(k, Decimal(0)) for k in keys} == {k: theirs.get(k, Decimal(0)) for k in keys}
    assert {tai for tai, _ in theirs} == set(truth["accounts"])
    with engine.connect() as conn:
        statuses = conn.execute(
            text("SELECT trade_account_id, currency, snapshot_seq, status, difference FROM v_balance_checks")
        ).all()
    differing = [row for row in statuses if row[3] != "agrees"]
    assert differing == [], differing
    assert {str(row[0]) for row in statuses} == set(truth["accounts"]), "a trade account without a balance check"
