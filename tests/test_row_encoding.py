"""The projection store's generated row encoders give the driver exactly what the SQLAlchemy column types would.

The store skips SQLAlchemy's per-value processing on its hot path (``projection_codec.encoder``); these tests hold it to
the column types' own bind processors, for every table and both dialects, including the unusual values (decimals
in exponent form, non-UTC offsets) that take the slow branch.
"""

from __future__ import annotations

import sqlite3
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Dialect, Engine, delete
from sqlalchemy.dialects import postgresql, sqlite

from tracker.domain import rows as row_module
from tracker.domain.rows import TABLES, row_key
from tracker.store.engine import writer
from tracker.store.projection_codec import FIELDS, RowUpserts, bind_none_directly, converters, encoder
from tracker.store.projection_prefetch import RowByKey
from tracker.store.projection_schema import PROJECTION_TABLES
from tracker.store.projections import ProjectionStore

DIALECTS: dict[str, Dialect] = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}

decimals = st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal("1E+3"), Decimal("1E-9"), Decimal("0.50"), Decimal("-0"), Decimal("123456789012345678901234567890.1")]
)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
) | st.sampled_from(  # the ends of every field (the SQLite encoder's digit tables)
    [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
     datetime(2026, 10, 9, 9, 9, 9, 1000, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC)]
)  # fmt: skip


def _strategy(annotation: Any, *, nul: bool = True) -> st.SearchStrategy[Any]:
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    parts: list[st.SearchStrategy[Any]] = []
    for option in options:
        if option is type(None):
            parts.append(st.none())
        elif option is Decimal:
            parts.append(decimals)
        elif option is datetime:
            parts.append(moments)
        elif option is bool:
            parts.append(st.booleans())
        elif option is int:
            parts.append(st.integers(min_value=0, max_value=2**62))
        elif option is str or typing.get_origin(option) is typing.Literal:
            # no NUL for a database round trip: PostgreSQL text cannot hold one (refused either way)
            parts.append(
                st.text(max_size=8)
                if nul
                else st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
            )
        else:
            raise AssertionError(f"no strategy for {option!r}")
    return st.one_of(parts)


def _rows(name: str, *, nul: bool = True) -> st.SearchStrategy[Any]:
    row_type = TABLES[name]
    hints = typing.get_type_hints(row_type, vars(row_module))
    return st.builds(row_type, **{f.name: _strategy(hints[f.name], nul=nul) for f in msgspec.structs.fields(row_type)})


def _expected(name: str, row: Any, dialect: Dialect) -> tuple[Any, ...]:
    table = PROJECTION_TABLES[name]
    out = []
    for field, column in zip(FIELDS[name], table.columns, strict=True):
        value = getattr(row, field)
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        out.append(process(value) if process is not None and value is not None else value)
    return tuple(out)


@pytest.mark.parametrize("dialect_name", sorted(DIALECTS))
@pytest.mark.parametrize("name", sorted(TABLES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encoder_equals_the_column_types(name: str, dialect_name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[dialect_name]
    encode = encoder(FIELDS[name], converters(PROJECTION_TABLES[name], dialect_name))
    rows = data.draw(st.lists(_rows(name), min_size=1, max_size=4))
    encoded = encode(rows)
    expected = [_expected(name, row, dialect) for row in rows]
    assert encoded == expected
    # ``==`` takes True for 1: the types too (on SQLite the column type makes a bool 1 or 0, and the driver binds an
    # int without the adapter lookup it makes for a bool)
    assert [[type(value) for value in row] for row in encoded] == [[type(value) for value in row] for row in expected]


def test_non_finite_money_and_naive_times_are_refused() -> None:
    encode = encoder(FIELDS["fills"], converters(PROJECTION_TABLES["fills"], "sqlite"))
    good = TABLES["fills"](
        "a",
        "t",
        None,
        None,
        "buy",
        Decimal(1),
        Decimal(2),
        Decimal(0),
        datetime.now(UTC),
        None,
        False,
        "ws",
        1,
        None,
        None,
        None,
    )
    encode([good])
    with pytest.raises(ValueError, match="finite"):
        encode([msgspec.structs.replace(good, fee=Decimal("NaN"))])
    with pytest.raises(ValueError, match="naive"):
        encode([msgspec.structs.replace(good, executed_at=datetime(2026, 1, 1))])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rows_written_read_back_equal(migrated_engine: Engine, data: st.DataObject) -> None:
    """``RowUpserts`` (``executemany`` of many-row statements on SQLite, one statement of arrays a table on
    PostgreSQL) stores every table's rows exactly: read back, they equal what was written (decimals exact, times the
    same instants)."""
    written = {
        name: data.draw(st.lists(_rows(name, nul=False), min_size=1, max_size=5, unique_by=row_key)) for name in TABLES
    }
    with writer(migrated_engine).begin() as conn:
        for table in PROJECTION_TABLES.values():
            conn.execute(delete(table))
        # on SQLite 2 rows a statement, so up to 5 rows a table take both the many-row statement and the one-row one
        upserts = RowUpserts(PROJECTION_TABLES, migrated_engine.dialect, rows_per_statement=2)
        assert upserts.write(conn, written) == sum(map(len, written.values()))
        # again: every row a conflict now (the DO UPDATE of each statement), the same rows stored
        assert upserts.write(conn, written) == sum(map(len, written.values()))
    stored = ProjectionStore(migrated_engine).all_rows()
    for name, rows in written.items():
        assert stored[name] == sorted(rows, key=row_key), name
    # One row by its key, as the fresh store's lazy loads read them (on SQLite through the driver's connection and
    # the columns' result processors): the same rows, and None for a key that is not there.
    with migrated_engine.connect() as conn:
        for name, rows in written.items():
            by_key = RowByKey(PROJECTION_TABLES[name], name)
            for row in rows:
                assert by_key(conn, row_key(row)) == row, name
            absent = ("no such account", *row_key(rows[0])[1:])  # (every key starts with the account)
            assert by_key(conn, absent) is None, name


def test_many_row_statements_stay_within_sqlite_parameter_limit() -> None:
    """Every table's many-row statement has at most 999 parameters (any SQLite's limit) and is the one-row statement
    with its ``VALUES`` group repeated."""
    upserts = RowUpserts(PROJECTION_TABLES, DIALECTS["sqlite"])
    for name, table in PROJECTION_TABLES.items():
        multi = upserts.multi[name]
        assert multi.rows >= 1 and multi.rows * len(table.columns) <= 999
        assert multi.statement.count("?") == multi.rows * len(table.columns)
        assert multi.statement.replace(
            ", ".join(["(" + ", ".join("?" * len(table.columns)) + ")"] * multi.rows), "X"
        ) == (upserts.statements[name].replace("(" + ", ".join("?" * len(table.columns)) + ")", "X"))


def test_none_binds_as_null_through_the_registered_adapter() -> None:
    """``bind_none_directly`` (a SQLite ``RowUpserts`` calls it): ``None`` is found in the driver's adapter table and
    binds the NULL it bound before, alone and in an ``executemany``; the other values' binding is untouched."""
    RowUpserts(PROJECTION_TABLES, DIALECTS["sqlite"])
    bind_none_directly()  # (twice: idempotent)
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    with sqlite3.connect(":memory:") as raw:
        assert raw.execute("SELECT ? IS NULL, typeof(?)", (None, None)).fetchone() == (1, "null")
        raw.execute("CREATE TABLE t (a, b)")
        raw.executemany("INSERT INTO t VALUES (?, ?)", [(None, 1), ("x", None), (None, None)])
        assert raw.execute("SELECT typeof(a), typeof(b) FROM t ORDER BY rowid").fetchall() == [
            ("null", "integer"), ("text", "null"), ("null", "null")
        ]  # fmt: skip
        assert raw.execute("SELECT ?, ?, ?", (1, 1.5, "s")).fetchone() == (1, 1.5, "s")
