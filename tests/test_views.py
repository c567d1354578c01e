"""The public views (docs/sql.md): the contract's names and columns, identical results on SQLite and PostgreSQL for
the same log, and agreement with the fake exchange's ground truth.

Rules: local databases only; PostgreSQL tests skip (or fail under CI=true) when the server is unreachable.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import sample_ledger
from pipeline import NOW
from sqlalchemy import Engine, false, func, select, table, text
from sqlalchemy.exc import DBAPIError
from test_projection_store import MARKETS, T0

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.domain.money import format_decimal
from tracker.fake.model import AccountModel
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import VIEWS
from tracker.store.projections import ProjectionStore

CONTRACT: dict[str, tuple[str, ...]] = {
    "v_orders": ("order_id", "market", "side", "status", "amount", "amount_filled", "amount_remaining", "price",
                 "client_order_id", "created_at", "updated_at"),
    "v_fills": ("trade_id", "order_id", "market", "side", "amount", "price", "fee", "executed_at", "source"),
    "v_fees_daily": ("day", "market", "fills", "volume", "fees"),
    "v_self_trades": ("buy_order_id", "sell_order_id", "market", "amount", "price", "occurred_at"),
    "v_settlements": ("position_id", "transaction_id", "ccy", "amount", "occurred_at"),
    "v_liquidations": ("position_id", "event", "margin_mode", "occurred_at"),
    "v_positions": ("position_id", "market", "side", "size", "status"),
    "v_discrepancies": ("id", "kind", "entity", "detail", "status", "opened_seq", "resolved_seq"),
    # the ledger contract (issue 15)
    "v_ledger": ("trade_account_id", "entry_id", "leg", "occurred_at", "type", "type_code", "subtype", "currency",
                 "amount", "fee", "market", "rate", "order_id", "trade_id", "txid", "source", "seq", "balance_after"),
    "v_balances": ("trade_account_id", "currency", "balance", "as_of", "last_entry_id", "entries", "last_seq"),
    "v_balance_checks": ("trade_account_id", "currency", "snapshot_at", "snapshot_seq", "exchange_total",
                         "exchange_available", "exchange_reserved", "computed_total", "difference", "status",
                         "first_entry_id"),
    "v_transfers": ("trade_account_id", "direction", "currency", "amount", "fee", "occurred_at", "entry_id",
                    "entry_seq", "request_id", "request_status", "request_status_name", "request_seq", "txid",
                    "address", "network", "crypto_seq", "matched_by"),
}  # fmt: skip


def model_log(seed: int, steps: int) -> tuple[list[NewEntry], dict[str, Any]]:
    """Websocket frames of the fake model for two accounts (different seeds) and a small ledger each, plus the first
    account's truth."""
    entries: list[NewEntry] = []
    truth: dict[str, Any] = {}
    for account, account_seed in (("acc", seed), ("other", seed + 100)):
        model = AccountModel(account_seed, MARKETS)
        for i in range(steps):
            for emission in model.step(T0 + i * 250_000):
                entry = entry_from_frame(emission.text, account=account, received_at=NOW, connection_id="c")
                assert isinstance(entry, NewEntry)
                entries.append(entry)
        entries.extend(sample_ledger(account))  # the ledger views (tests/test_ledger_views.py has the rest)
        if account == "acc":
            truth = model.truth()
    return entries, truth


def _projected(url: str, entries: list[NewEntry | QuarantineItem]) -> Engine:
    engine = open_engine(url)
    migrate.upgrade(engine)
    log = EventLog(engine)
    log.append([e for e in entries if isinstance(e, NewEntry)])
    ProjectionStore(engine).catch_up(log, batch=700)
    return engine


def _sort_key(row: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    # Sorted here, not by ORDER BY: the backends order NULLs and text differently (collations), not the data.
    return tuple((0, 0) if value is None else (1, value) for value in row)


def read_views(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(view))), key=_sort_key)
            for name, view in VIEWS.items()
        }


@pytest.fixture(scope="module")
def fake_log() -> tuple[list[NewEntry], dict[str, Any]]:
    return model_log(5, 1200)


@pytest.fixture
def both(sqlite_url: str, pg_url: str, fake_log: tuple[list[NewEntry], dict[str, Any]]) -> Iterator[list[Engine]]:
    engines = [_projected(url, list(fake_log[0])) for url in (sqlite_url, pg_url)]
    try:
        yield engines
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres
def test_views_identical_on_sqlite_and_postgresql(both: list[Engine]) -> None:
    on_sqlite, on_postgres = (read_views(engine) for engine in both)
    for name in VIEWS:
        assert on_sqlite[name] == on_postgres[name], name
        assert on_sqlite[name], f"{name} is empty: the fake log should exercise every view"
    # Same Python types too (Decimal money, aware UTC datetimes, ints), not only equal values.
    for name in VIEWS:
        for a, b in zip(on_sqlite[name][:50], on_postgres[name][:50], strict=True):
            assert [type(v) for v in a] == [type(v) for v in b], name
    sample = on_sqlite["v_fills"][0]
    assert isinstance(sample[VIEWS["v_fills"].c.keys().index("fee")], Decimal)
    executed_at = sample[VIEWS["v_fills"].c.keys().index("executed_at")]
    assert isinstance(executed_at, datetime)
    assert executed_at.tzinfo == UTC


def test_views_have_the_contract_columns(db_url: str) -> None:
    """Names and column order as the database reports them (plain SQL, no SQLAlchemy table description)."""
    engine = open_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            for name, required in CONTRACT.items():
                columns = tuple(conn.execute(select(text("*")).select_from(table(name)).where(false())).keys())
                assert columns[0] == "account", name
                assert set(required) <= set(columns), (name, set(required) - set(columns))
                assert columns == tuple(VIEWS[name].c.keys()), name
    finally:
        engine.dispose()


def _d(value: Decimal | str | None) -> str | None:
    return None if value is None else format_decimal(Decimal(value))


def test_views_equal_the_fake_truth(db_url: str, fake_log: tuple[list[NewEntry], dict[str, Any]]) -> None:
    entries, truth = fake_log
    engine = _projected(db_url, list(entries))
    try:
        views = read_views(engine)
    finally:
        engine.dispose()

    def rows(name: str, columns: tuple[str, ...], decimals: tuple[str, ...]) -> list[dict[str, Any]]:
        keys = VIEWS[name].c.keys()
        out = []
        for row in views[name]:
            record = dict(zip(keys, row, strict=True))
            if record["account"] != "acc":
                continue
            out.append({c: _d(record[c]) if c in decimals else record[c] for c in columns})
        return out

    def truth_rows(name: str, columns: tuple[str, ...], decimals: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{c: _d(r[c]) if c in decimals else r[c] for c in columns} for r in truth[name]]

    order_columns = ("order_id", "market", "side", "status", "amount", "amount_filled", "amount_remaining", "price",
                     "client_order_id")  # fmt: skip
    order_decimals = ("amount", "amount_filled", "amount_remaining", "price")
    by_id = lambda r: int(r["order_id"])  # noqa: E731
    assert sorted(rows("v_orders", order_columns, order_decimals), key=by_id) == sorted(
        truth_rows("orders", order_columns, order_decimals), key=by_id
    )
    fill_columns = ("trade_id", "order_id", "market", "side", "amount", "price", "fee")
    fill_decimals = ("amount", "price", "fee")
    by_trade = lambda r: int(r["trade_id"])  # noqa: E731
    mine_fills = rows("v_fills", fill_columns, fill_decimals)
    assert sorted(mine_fills, key=by_trade) == sorted(truth_rows("fills", fill_columns, fill_decimals), key=by_trade)
    assert len({f["trade_id"] for f in mine_fills}) == len(mine_fills)  # exactly one row per fill
    day_columns = ("day", "market", "fills", "volume", "fees")
    day_decimals = ("volume", "fees")
    by_day = lambda r: (r["day"], r["market"])  # noqa: E731
    assert sorted(rows("v_fees_daily", day_columns, day_decimals), key=by_day) == sorted(
        truth_rows("fees_daily", day_columns, day_decimals), key=by_day
    )
    position_columns = ("position_id", "market", "side", "size", "status", "entry_price", "fees", "realised_pnl")
    position_decimals = ("size", "entry_price", "fees", "realised_pnl")
    by_position = lambda r: r["position_id"]  # noqa: E731
    assert sorted(rows("v_positions", position_columns, position_decimals), key=by_position) == sorted(
        truth_rows("positions", position_columns, position_decimals), key=by_position
    )
    assert len(rows("v_self_trades", ("market",), ())) == len(truth["self_trades"])
    assert len(rows("v_settlements", ("transaction_id",), ())) == len(truth["settlements"])
    assert len(rows("v_liquidations", ("event",), ())) == len(truth["liquidations"])
    assert not [r for r in rows("v_discrepancies", ("status",), ()) if r["status"] == "open"]


DOCS = Path(__file__).resolve().parents[1] / "docs" / "sql.md"


def _doc_queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    return [block for block in blocks if "CREATE ROLE" not in block]


def test_every_view_has_a_documented_example_that_runs(db_url: str) -> None:
    queries = _doc_queries()
    for name in VIEWS:
        assert any(f"FROM {name}" in query for query in queries), f"docs/sql.md has no example query for {name}"
    engine = _projected(db_url, list(model_log(9, 200)[0]))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            for query in queries:
                conn.exec_driver_sql(query.replace("'314159'", "'acc'")).all()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_reporting_role_reads_views_only(pg_url: str) -> None:
    block = next(b for b in re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL) if "CREATE ROLE" in b)
    role = f"reporting_{uuid.uuid4().hex[:8]}"  # identifiers cannot be bound parameters: a generated name
    engine = _projected(pg_url, list(model_log(9, 50)[0]))
    try:
        with engine.begin() as conn:
            database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            script = block.replace("reporting", role).replace("DATABASE tracker", f'DATABASE "{database}"')
            script = script.replace("SCHEMA public", f'SCHEMA "{schema}"')
            conn.exec_driver_sql(script)
        with engine.connect() as conn:
            conn.exec_driver_sql(f'SET ROLE "{role}"')
            assert conn.exec_driver_sql("SELECT count(*) FROM v_fills").scalar_one() > 0
            for forbidden in ("event_log", "proj_fills"):
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(select(func.count()).select_from(table(forbidden)))
                conn.rollback()
                conn.exec_driver_sql(f'SET ROLE "{role}"')
            conn.exec_driver_sql("RESET ROLE")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()
