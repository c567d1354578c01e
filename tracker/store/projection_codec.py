"""Writing projection rows fast: rows → driver parameters (generated encoders) and the upsert statements.

The hot path of a rebuild writes millions of rows. SQLAlchemy's per-value processing (``Money``, ``UtcDateTime``
bind processors, called per value through the compiled statement) would cost more than the fold itself, so the
store writes each table with ``exec_driver_sql`` and parameters made here:

- ``upsert``: ``INSERT ... ON CONFLICT DO UPDATE`` of every non-key column (SQLite and PostgreSQL);
  ``fast_upsert``: the same compiled once to positional driver SQL, values in the table's column order;
- ``encoder``: one function per table, ``rows -> [tuple of column values]``, generated from the row type's field
  names (as ``dataclasses`` makes ``__init__``), each converted column inlined as an expression: no Python-level
  loop over the columns and no call per value in the usual cases.

``tests/test_row_encoding.py`` holds every encoder, for every table and both dialects, to the column types' own
bind processors, including the values that take the slow branch (decimals in exponent form, non-UTC offsets).
``RowUpserts`` puts the two together for the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain
from typing import Any, Final

import msgspec
from sqlalchemy import Boolean, Connection, Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable

from tracker.domain.money import plain_decimal as decimal_text
from tracker.domain.rows import TABLES, Row
from tracker.store.projection_schema import Money
from tracker.store.schema import UtcDateTime

FIELDS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(f.name for f in msgspec.structs.fields(row_type)) for name, row_type in TABLES.items()
}  # per table, the row type's field names: the columns, in order
Encoder = Callable[[Sequence[Row]], list[tuple[Any, ...]]]


def _stamp_sqlite(value: datetime) -> str:
    """What ``UtcDateTime`` stores on SQLite (SQLAlchemy's DateTime text in UTC, always with microseconds)."""
    if value.tzinfo is UTC:  # the usual case: what the parser makes (isoformat ends "+00:00")
        return value.isoformat(" ", "microseconds")[:-6]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: tracker stores aware UTC datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_bool_processor() -> Callable[[Any], Any]:
    """SQLAlchemy's own bind processor of a ``Boolean`` column on SQLite (1, 0, None; anything else refused)."""
    dialect = sqlite.dialect()
    process = Boolean(create_constraint=False).dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        raise RuntimeError("SQLite's Boolean has no bind processor")
    return process


def _money_postgres(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Inline:
    """A converter written into the generated encoder as an expression (``{v}``: the value, not ``None``; ``{v}s``
    may name a temporary): no Python-level call per value. ``names``: what the expression refers to."""

    expression: str
    names: Mapping[str, Any]


# The usual cases inline, anything else through the function that says what is wrong. A row's Decimals are finite
# (the parser refuses others; the default decimal context traps overflow and invalid operations); checked anyway.
# ``str`` of a finite Decimal is its plain text unless it has an exponent ("1E+3", "1E-9": then ``format(v, 'f')``,
# what ``plain_decimal`` does); without one they are the same digits, and ``str`` takes a third of the time (0.25 ->
# 0.1 us). A time as text from its fields (the format SQLAlchemy's SQLite DateTime writes) instead of ``isoformat``
# on the aware value: 1.4 -> 0.9 us (and since from digit tables, below). tests/test_row_encoding.py holds both to
# the column types' bind processors.
SQLITE_MONEY: Final = Inline(
    "({v}s if 'E' not in ({v}s := _str({v})) and _is_finite({v}) else _decimal_text({v}))",
    {"_str": str, "_is_finite": Decimal.is_finite, "_decimal_text": decimal_text},
)


class _Years(dict[int, str]):
    """``"%04d" % year``, made when a year is first written (a few in a log; not 10,000 texts at every import)."""

    def __missing__(self, year: int) -> str:
        text = self[year] = f"{year:04d}"
        return text


# The fields' digits from tables (``_Y[year]`` is ``"%04d" % year``, ``_D2`` two digits, ``_D3`` three) put together
# by one f-string: ~7,100 machine instructions a time against ~10,900 for ``"%04d-%02d-..." % fields`` (callgrind;
# orders have two times a row, fills one). Every valid field indexes its table (the rest are < 1000).
_YEARS: Final = _Years()
_DIGITS2: Final = tuple(f"{n:02d}" for n in range(100))
_DIGITS3: Final = tuple(f"{n:03d}" for n in range(1000))
SQLITE_STAMP: Final = Inline(
    "(f'{{_Y[{v}.year]}}-{{_D2[{v}.month]}}-{{_D2[{v}.day]}} {{_D2[{v}.hour]}}:{{_D2[{v}.minute]}}:"
    "{{_D2[{v}.second]}}.{{_D3[{v}.microsecond // 1000]}}{{_D3[{v}.microsecond % 1000]}}'"
    " if {v}.tzinfo is _UTC else _stamp_sqlite({v}))",
    {"_UTC": UTC, "_Y": _YEARS, "_D2": _DIGITS2, "_D3": _DIGITS3, "_stamp_sqlite": _stamp_sqlite},
)


# A bool as the int SQLAlchemy's Boolean writes on SQLite (1 or 0): the driver binds an int directly, a bool through
# its adapter lookup first (~0.33 us a value: an executemany of 76,000 rows with three bool columns 3.1 -> 2.1 us a
# row). Anything but True/False goes to the column type's own processor (which refuses it as it would).
SQLITE_BOOL: Final = Inline(
    "(1 if {v} is True else 0 if {v} is False else _bool_column({v}))", {"_bool_column": _sqlite_bool_processor()}
)


Converter = Callable[[Any], Any] | Inline | None


def bind_none_directly() -> None:
    """Have ``sqlite3`` bind ``None`` through a registered adapter that returns it, so it binds NULL as before.

    The driver binds an exact ``int``, ``float``, ``str`` or ``bytearray`` directly; any other value, ``None``
    included, goes to its adapter lookup first: no adapter registered for ``NoneType``, it asks the protocol type
    for ``__adapt__``, which raises (and formats) an ``AttributeError`` before it falls back to the value itself:
    ~1,250 machine instructions a NULL (callgrind), and a rebuild binds ~3.5 an event (an order's empty optional
    columns, a stream's ``last_break_seq``). With an adapter registered the lookup finds it and calls it: ``{}.get``,
    a C function that returns ``None`` for ``None`` (a Python function would be a frame per NULL). The value bound
    is the same ``None`` either way, so the same NULL is stored; the adapter table is the module's (every ``sqlite3``
    connection of the process), where it changes nothing but this speed. ``None`` is not one of the types whose
    adapters switch the driver's fast path off (``int``, ``float``, ``str``, ``bytearray``). Idempotent."""
    sqlite3.register_adapter(type(None), _NONE_TO_NONE)


_NONE_TO_NONE: Final[Callable[[None], None]] = dict[None, None]().get  # (C) None -> None


def converters(table: Table, dialect_name: str) -> tuple[Converter, ...]:
    """Per column, how to turn a row's value (not ``None``) into what the driver takes (what the column types
    would do)."""
    result: list[Converter] = []
    for column in table.columns:
        if isinstance(column.type, Money):
            result.append(SQLITE_MONEY if dialect_name == "sqlite" else _money_postgres)
        elif isinstance(column.type, UtcDateTime) and dialect_name == "sqlite":
            result.append(SQLITE_STAMP)
        elif isinstance(column.type, Boolean) and dialect_name == "sqlite":
            result.append(SQLITE_BOOL)
        else:
            result.append(None)
    return tuple(result)


def encoder(fields: Sequence[str], converters: Sequence[Converter]) -> Encoder:
    """``rows -> [values in column order]`` for one table: a comprehension generated from the field names (as
    ``dataclasses`` makes ``__init__``), a converted column as ``None if v is None else convert(v)``: no per-row
    loop over the columns."""
    if len(fields) != len(converters) or not all(name.isidentifier() for name in fields):
        raise RuntimeError(f"fields {fields} do not match the columns")
    namespace: dict[str, Any] = {}
    values: list[str] = []
    for i, (name, convert) in enumerate(zip(fields, converters, strict=True)):
        if convert is None:
            values.append(f"r.{name}")
        elif isinstance(convert, Inline):
            namespace.update(convert.names)
            values.append(f"(None if (v{i} := r.{name}) is None else {convert.expression.format(v=f'v{i}')})")
        else:
            namespace[f"_c{i}"] = convert
            values.append(f"(None if (v{i} := r.{name}) is None else _c{i}(v{i}))")
    source = f"def encode(rows):\n    return [({', '.join(values)},) for r in rows]\n"
    exec(source, namespace)  # generated from the row type's field names (identifiers, checked above)
    result: Encoder = namespace["encode"]
    return result


def upsert(table: Table, dialect_name: str) -> Executable:
    """Insert, or on a key conflict update every non-key column (a projected row is replaced whole)."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    statement = module.insert(table)
    keys = [column.name for column in table.primary_key.columns]
    updates = {column.name: statement.excluded[column.name] for column in table.columns if not column.primary_key}
    upserting: Executable = statement.on_conflict_do_update(index_elements=keys, set_=updates)
    return upserting


def fast_upsert(table: Table, dialect: Dialect) -> str:
    """The upsert as positional driver SQL (values in the table's column order), for ``exec_driver_sql``."""
    positional = dialect if dialect.positional else type(dialect)(paramstyle="format")  # type: ignore[call-arg]
    keys = [column.key for column in table.columns]
    compiled = upsert(table, dialect.name).compile(dialect=positional, column_keys=keys)  # type: ignore[attr-defined]
    if list(compiled.positiontup or ()) != keys:
        raise RuntimeError(f"unexpected parameter order in {compiled}")
    return str(compiled)


class ArrayUpsert:
    """One table's upsert on PostgreSQL as one statement for many rows: ``INSERT INTO t (columns) SELECT * FROM
    unnest(%b::type[], ...) ON CONFLICT ... DO UPDATE`` with one array parameter per column, sent in binary:
    psycopg's text format quotes every item in Python, a tenth of a PostgreSQL rebuild (100,000 events: 5.3 -> 4.7-4.8
    s wall, 3.9 -> 3.4-3.5 s CPU; tests/test_row_encoding.py reads every table back equal).

    An ``executemany`` of the one-row upsert (even pipelined, as psycopg does it) makes the server parse, plan and
    execute one statement per row: writing the projection rows was half of a PostgreSQL rebuild's wall time, most
    of it waiting for the server (py-spy, 200k events). Here it is one executor pass per table and batch, with the
    same conflict rule. Each array is cast to its column's type, so the server parses every value by that type as it
    would a single parameter (a ``Decimal`` stays exact NUMERIC). Rejected: a multi-row ``VALUES`` list (the same
    parameters, one per value) was slower than ``executemany``, because psycopg converts a long query text on every
    execution (it caches only short ones). The rows of one call must have distinct keys (PostgreSQL refuses to
    update a row twice in one statement); the store's are (one row per dirty key).
    """

    __slots__ = ("statement",)

    def __init__(self, table: Table, one_row: str, dialect: Dialect) -> None:
        head, values = one_row.split(" VALUES ", 1)
        _, tail = values.split(" ON CONFLICT ", 1)
        if not head.startswith("INSERT INTO ") or " VALUES " in values:
            raise RuntimeError(f"unexpected upsert statement: {one_row}")
        arrays = ", ".join(f"%b::{column.type.compile(dialect=dialect)}[]" for column in table.columns)
        self.statement = f"{head} SELECT * FROM unnest({arrays}) ON CONFLICT {tail}"

    def write(self, conn: Connection, params: Sequence[tuple[Any, ...]]) -> None:
        conn.exec_driver_sql(self.statement, tuple(list(column) for column in zip(*params, strict=True)))


SQLITE_VARIABLES: Final = 999  # bound parameters a statement may have on any SQLite (3.32+ allows 32,766)
ROWS_PER_STATEMENT: Final = 64


class MultiRowUpsert:
    """One table's upsert on SQLite as ``INSERT ... VALUES (...), (...), ... ON CONFLICT ... DO UPDATE`` of
    ``rows`` rows a statement (an ``executemany`` of it), the rows left over by the one-row statement.

    The same rows stored: SQLite applies a multi-row ``VALUES`` one row after the other, each with the conflict rule
    (the store's rows have distinct keys anyway). Each execution of a statement costs ``sqlite3_step``'s and the
    driver's per-call work (the interpreter lock released and taken again, the statement reset): over 40,000 order
    and fill rows, 34.9k -> 31.9k machine instructions a row written, 50 rows a statement (callgrind); 10 a statement
    saved nothing. At most ``SQLITE_VARIABLES`` parameters a statement."""

    __slots__ = ("one_row", "rows", "statement")

    def __init__(self, one_row: str, columns: int, rows: int | None = None) -> None:
        head, values = one_row.split(" VALUES ", 1)
        group, tail = values.split(" ON CONFLICT ", 1)
        if not head.startswith("INSERT INTO ") or group != f"({', '.join(['?'] * columns)})":
            raise RuntimeError(f"unexpected upsert statement: {one_row}")
        self.rows = max(1, min(ROWS_PER_STATEMENT, SQLITE_VARIABLES // columns)) if rows is None else rows
        self.statement = f"{head} VALUES {', '.join([group] * self.rows)} ON CONFLICT {tail}"
        self.one_row = one_row

    def write(self, conn: Connection, params: Sequence[tuple[Any, ...]]) -> None:
        n, full = self.rows, len(params) - len(params) % self.rows
        if full:
            conn.exec_driver_sql(
                self.statement, [tuple(chain.from_iterable(params[i : i + n])) for i in range(0, full, n)]
            )
        if full < len(params):
            conn.exec_driver_sql(self.one_row, params[full:])


class RowUpserts:
    """Upserts rows into a set of projection tables (``tables``: name -> table of that row type): on SQLite an
    ``executemany`` of a many-row statement per table (``MultiRowUpsert``, prepared statements reused in-process),
    one statement of arrays on PostgreSQL (``ArrayUpsert``). ``rows_per_statement``: on SQLite (tests)."""

    __slots__ = ("arrays", "encoders", "multi", "statements")

    def __init__(self, tables: Mapping[str, Table], dialect: Dialect, *, rows_per_statement: int | None = None) -> None:
        self.statements = {name: fast_upsert(table, dialect) for name, table in tables.items()}
        self.encoders = {name: encoder(FIELDS[name], converters(table, dialect.name)) for name, table in tables.items()}
        self.arrays: dict[str, ArrayUpsert] = {}
        self.multi: dict[str, MultiRowUpsert] = {}
        if dialect.name == "postgresql":
            self.arrays = {name: ArrayUpsert(table, self.statements[name], dialect) for name, table in tables.items()}
        elif dialect.name == "sqlite":
            bind_none_directly()
            self.multi = {
                name: MultiRowUpsert(self.statements[name], len(table.columns), rows_per_statement)
                for name, table in tables.items()
            }

    def write(self, conn: Connection, changed: Mapping[str, Sequence[Row]]) -> int:
        """Upsert ``changed`` (rows per table name, distinct keys per table) in the caller's transaction; returns the
        rows written."""
        written = 0
        for name, rows in changed.items():
            if rows:
                arrays = self.arrays.get(name)
                if arrays is not None:
                    arrays.write(conn, self.encoders[name](rows))
                elif (multi := self.multi.get(name)) is not None:
                    multi.write(conn, self.encoders[name](rows))
                else:
                    conn.exec_driver_sql(self.statements[name], self.encoders[name](rows))
                written += len(rows)
        return written
