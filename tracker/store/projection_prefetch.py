"""Prefetching a batch's rows: the state a batch is folded into, loaded before the fold, one job in four layers.

The projector keeps no state between batches (memory stays bounded by the batch), so each batch starts from the
stored rows it will read. Reading them one query per row would cost more than the fold; these layers make it a few
queries per batch, and each is only a speed trick (the rows folded are the stored rows either way):

1. Keys: ``tracker.domain.projection_keys`` names the rows the batch's events will read; they are loaded with one
   ``a = ? AND b = ? AND last IN (...)`` query per key prefix and chunk (``load_rows_by_key``).
2. ``LazyTable``: the state's tables (handed to ``ProjectionState(tables=...)``, the domain's seam for this). A row
   the fold asks for that the keys did not predict is loaded then, one query per miss; misses are counted (the tests
   keep them near zero, so the key list does not drift from the fold). This is safe because of the fold's read rule
   (``tracker.domain.projection``): it reads a table only through ``get`` and ``in``, which ``LazyTable`` answers
   for the whole stored table, never by iterating or counting what happens to be in memory.
3. The previous batch's tables: when the checkpoint is still the one this store wrote (nobody else wrote since),
   a row that batch read or wrote is taken from memory instead of queried again (at most one batch kept).
4. For a ``fresh`` store (the rebuild's shadow tables, empty when it started, this store their only writer): a key
   this store never wrote has no row, so it is not queried at all. ``WrittenKeys`` (a Bloom filter) knows the
   written keys; the parallel rebuild's workers use their ``touched`` sets instead (``TouchedKeys``).

On SQLite (``lazy``), with layer 4 on, a batch is not predicted at all (no layer 1): its tables start empty and
every row is looked up when the fold first asks for it (``lazy_loader``): in the previous batch's tables, then in
the written filter, and only a key that may have been written and was not in the previous batch is queried (one
query each). In a rebuild almost every key is new or in the previous batch: over the 300,000-event model log 3,448
of the 256,135 keys the batches would have predicted were queried, so predicting them (``keys_for``, the filter for
each, the set arithmetic) cost ~10% of the rebuild's CPU to save ~3,400 small queries. Not on PostgreSQL, where
each of those queries is a round trip: the rebuild's CPU went up (13.1-13.8 -> 13.5-14.4 s).

If another writer moves the checkpoint all the same, layers 3 and 4 are dropped for good (``Prefetcher.refused``,
or seen at the next ``load``) and the store queries as an ordinary one does.

``touched`` (the parallel rebuild's proof that its parts are independent): per table, ``hash(key)`` of every row
key the fold read or wrote, from the ``LazyTable``'s keys (every key it asked for) and the dirty ones.

The fold's two reads not by key, a position's fills (``PositionFills``: only for a position a fill reached out of
exchange order, once a batch) and an order's fills (``OrderFills``: only when an order learns its trade account
after some of its fills), are ``FillsReader``: one query by the index on (account, position_id) or (account,
order_id), the rows it finds put in the batch's ``fills`` table (so they count as read, and the batch's own rows
stay in their place), then the fills of the position or order that table holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from sqlalchemy import Connection, Dialect, Table, and_, bindparam, select

from tracker.domain.events import DomainEvent
from tracker.domain.projection import ProjectionState
from tracker.domain.projection_keys import (
    balance_keys_of_accounts,
    discrepancy_keys_of_balances,
    discrepancy_keys_of_links,
    fee_keys_of_order_accounts,
    keys_for,
)
from tracker.domain.rows import TABLES, BalanceRow, FillRow, LedgerAccountRow, OrderLinkRow, Row

IN_CHUNK: Final = 400  # keys per IN (...) query, well under SQLite's bound-parameter limit
Key = tuple[Any, ...]


def load_rows_by_key(conn: Connection, table: Table, name: str, keys: Iterable[Key]) -> list[Row]:
    """The stored rows of ``table`` (holding ``TABLES[name]`` rows) with the given keys; absent keys are missing."""
    row_type = TABLES[name]
    key_columns = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
    # Group by every key column but the last: `a = ? AND b = ? AND last IN (...)` uses the primary key index.
    groups: dict[Key, list[Any]] = {}
    for key in keys:
        groups.setdefault(tuple(key[:-1]), []).append(key[-1])
    rows: list[Row] = []
    for prefix, lasts in groups.items():
        condition = and_(*(column == value for column, value in zip(key_columns, prefix, strict=False)))
        for start in range(0, len(lasts), IN_CHUNK):
            chunk = lasts[start : start + IN_CHUNK]
            query = select(table).where(condition, key_columns[-1].in_(chunk))
            rows.extend(row_type(*values) for values in conn.execute(query))
    return rows


class RowByKey:
    """One stored row by its whole key (a miss), or ``None``: the statement is built once per table, where
    ``load_rows_by_key`` builds and compiles one per call (~310 -> ~85 us a row on SQLite).

    On SQLite the query goes to the driver's connection as positional SQL compiled once, and the values through the
    columns' own result processors (what SQLAlchemy would call on them): ~70 -> ~15 us a row. A rebuild's fresh
    store makes ~3,400 of these on the 300,000-event model log (2.5 % of its samples through ``Connection.execute``).
    """

    __slots__ = ("names", "processors", "row_type", "sql", "statement")

    def __init__(self, table: Table, name: str) -> None:
        self.row_type = TABLES[name]
        columns: tuple[str, ...] = self.row_type.KEY  # type: ignore[attr-defined]
        self.names = tuple(f"key_{i}" for i in range(len(columns)))
        self.statement = select(table).where(
            *(table.c[column] == bindparam(name) for column, name in zip(columns, self.names, strict=True))
        )
        self.sql: str | None = None  # the SQLite form, made on the first call on SQLite
        self.processors: tuple[Callable[[Any], Any] | None, ...] = ()

    def __call__(self, conn: Connection, key: Key) -> Row | None:
        raw = conn.connection.driver_connection
        if isinstance(raw, sqlite3.Connection):
            if self.sql is None:
                self._compile(conn.dialect)
            found = raw.execute(self.sql, key).fetchone()  # type: ignore[arg-type]  # (just compiled)
            if found is None:
                return None
            values = [
                value if process is None else process(value)
                for process, value in zip(self.processors, found, strict=True)
            ]
            row: Row = self.row_type(*values)
            return row
        stored = conn.execute(self.statement, dict(zip(self.names, key, strict=True))).first()
        if stored is None:
            return None
        result: Row = self.row_type(*stored)
        return result

    def _compile(self, dialect: Dialect) -> None:
        compiled = self.statement.compile(dialect=dialect)
        if list(compiled.positiontup or ()) != list(self.names):
            raise RuntimeError(f"unexpected parameter order in {compiled}")
        self.processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in self.statement.selected_columns
        )
        self.sql = str(compiled)


def _spent(table: LazyTable, key: Key) -> Row | None:
    """The loader of a committed batch's table (kept as the next batch's cache, read with ``dict.get`` only)."""
    raise RuntimeError(f"a lazy load of {key!r} from a batch that is over")


class LazyTable(dict[Key, Row | None]):
    """A state table (a ``StateTable``) holding the prefetched rows, that loads a row the fold asks for but the
    prefetch did not predict (``load(table, key)``: one query per miss, counted in ``misses``). ``get`` and ``in``
    answer for the stored table; nothing else is overridden, so iterating or counting one would see the rows in
    memory only: the fold does neither (the read rule), the store does after the fold, when it wants exactly those.

    A key whose stored row (or absence) is known is a key of the dict: its row, or ``None`` for "no such row". So
    ``get`` is ``dict.__getitem__`` itself, which answers a known key in C and calls ``__missing__`` (the load) for
    any other: the fold asks ~4.5 times an event, three in four for a key it asked before (300,000-event model log:
    1.35M asks, 1.09M of them known). ``get`` takes the key only, as ``StateTable.get`` does."""

    __slots__ = ("load", "misses")

    def __init__(self, load: Callable[[LazyTable, Key], Row | None]) -> None:
        super().__init__()
        self.load = load
        self.misses = 0  # rows queried one at a time (the loader counts them)

    if TYPE_CHECKING:
        # narrower than dict.get on purpose: no default (StateTable.get has none; nothing passes one)
        def get(self, key: Key, /) -> Row | None: ...  # type: ignore[override]

    else:  # a known key: the dict's own lookup (C); an unknown one: __missing__ below, which stores what it learned
        get = dict.__getitem__

    def __missing__(self, key: Key) -> Row | None:
        row = self.load(self, key)
        self[key] = row  # (the dict's own item assignment: not overridden here)
        return row

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self[key] is not None


_UNKNOWN: Final = object()  # "the previous batch did not know this key" (``None`` is "it knew: no row")


class FillsReader:
    """A batch's ``PositionFills`` or ``OrderFills`` (``tracker.domain.projection_state``): the fills of one position
    (``column`` ``position_id``) or one order (``order_id``) as the batch's state holds them. The stored ones (one
    query, served by the index on (account, ``column``), bounded by that position's or order's fills) join the
    batch's ``fills`` table where it does not know their key yet (from there on they are read rows: in ``touched``,
    in the next batch's cache); then every fill of the position or order in that table is the answer, the batch's
    own rows (new, or enriched with this id) included. Its query runs on the batch's connection, in the batch's one
    snapshot (``projections``), so the stored fills are those of the batch's checkpoint, as every other row it read:
    not another projector's, committed meanwhile."""

    __slots__ = ("column", "conn", "fills", "statement")

    def __init__(self, conn: Connection, statement: Any, fills: LazyTable, column: str) -> None:
        self.conn = conn
        self.statement = statement
        self.fills = fills
        self.column = column

    def __call__(self, account: str, value: str) -> list[FillRow]:
        fills, column = self.fills, self.column
        for values in self.conn.execute(self.statement, {"account": account, "value": value}):
            key = (values.account, values.trade_id)
            if not dict.__contains__(fills, key):
                dict.__setitem__(fills, key, FillRow(*values))  # (no lazy load: the row is known now)
        return [
            row
            for row in dict.values(fills)
            if isinstance(row, FillRow) and getattr(row, column) == value and row.account == account
        ]


FILLS_BY: Final = ("position_id", "order_id")  # the columns a ``FillsReader`` reads fills by (each has its index)


def fills_statement(table: Table, column: str) -> Any:
    """The query a ``FillsReader`` by ``column`` runs (built once per store)."""
    return select(table).where(table.c.account == bindparam("account"), table.c[column] == bindparam("value"))


class WrittenKeys:
    """A Bloom filter of the keys a ``fresh`` store has written: "not written" is certain (no query needed, the row
    does not exist), "written" may be wrong (then one query finds nothing). 2**26 bits (8 MiB), two probes: about
    0.3% false "written" at 2M keys, where a set of the keys themselves would take ~150 MB."""

    __slots__ = ("bits", "salts")
    SIZE: Final = 1 << 26

    def __init__(self) -> None:
        self.bits = bytearray(self.SIZE >> 3)
        self.salts = {name: hash(name) for name in TABLES}

    def add_all(self, name: str, keys: Iterable[Key]) -> None:
        bits, mask, salt = self.bits, self.SIZE - 1, self.salts[name]
        for key in keys:
            h = hash(key) ^ salt
            first, second = h & mask, (h >> 32) & mask
            bits[first >> 3] |= 1 << (first & 7)
            bits[second >> 3] |= 1 << (second & 7)

    def maybe(self, name: str, key: Key) -> bool:
        bits, mask = self.bits, self.SIZE - 1
        h = hash(key) ^ self.salts[name]
        first, second = h & mask, (h >> 32) & mask
        return bool(bits[first >> 3] & (1 << (first & 7))) and bool(bits[second >> 3] & (1 << (second & 7)))


class TouchedKeys:
    """The ``touched`` sets as a fresh store's "written" filter, instead of the Bloom filter when they are kept
    anyway: a key written is a key touched, so a key whose hash is not there was never written (exact but for
    64-bit hash collisions, which only cost a query). A table without a set: "maybe"."""

    __slots__ = ("touched",)

    def __init__(self, touched: Mapping[str, set[int]]) -> None:
        self.touched = touched

    def add_all(self, name: str, keys: Iterable[Key]) -> None:
        """Nothing: ``Prefetcher.committed`` adds every touched key to the sets itself."""

    def maybe(self, name: str, key: Key) -> bool:
        hashes = self.touched.get(name)
        return hashes is None or hash(key) in hashes


class WrittenFilter(Protocol):
    def add_all(self, name: str, keys: Iterable[Key], /) -> None: ...

    def maybe(self, name: str, key: Key, /) -> bool: ...


@dataclass(slots=True)
class Batch:
    """One batch's state and its tables (the same objects: ``state.orders is tables["orders"]``)."""

    state: ProjectionState
    tables: dict[str, LazyTable]

    @property
    def misses(self) -> int:
        """Rows the fold read that were not prefetched (each cost a query)."""
        return sum(table.misses for table in self.tables.values())

    def changed(self) -> dict[str, list[Row]]:
        """The dirty rows per table, unsorted (the database does not care about the order)."""
        changed: dict[str, list[Row]] = {}
        for name, keys in self.state.dirty.items():
            if keys:
                # in C: the rows (``map`` of the dict's lookup), then "is any of them None" (``is_``, not ``in``:
                # ``None in rows`` would call each row's ``__eq__``)
                rows = list(map(self.tables[name].__getitem__, keys))
                if any(map(is_, rows, repeat(None))):  # the fold marks a key dirty when it stores a row there
                    raise RuntimeError(f"{name}: a dirty key without a row")
                changed[name] = cast("list[Row]", rows)  # (no None: checked above)
        return changed


class Prefetcher:
    """Layers 1-4 of the module docstring for one store's ``tables``. ``fresh`` and ``touched``: as
    ``ProjectionStore`` takes them."""

    def __init__(
        self,
        tables: Mapping[str, Table],
        *,
        fresh: bool,
        touched: Mapping[str, set[int]] | None,
        lazy: bool = False,
    ) -> None:
        self.tables = tables
        self.lazy = lazy  # with layer 4 on, predict nothing (``lazy_loader``): for SQLite, where a query is cheap
        self.touched = touched
        self.new_touched: dict[str, set[int]] = {}  # the hashes the last committed batch added to ``touched``
        self._written: WrittenFilter | None = None
        if fresh:
            self._written = WrittenKeys() if touched is None else TouchedKeys(touched)
        self._written_checkpoint = 0  # the checkpoint of the last batch this fresh store wrote
        self._cache: dict[str, LazyTable] | None = None  # the last committed batch's tables
        self._cache_checkpoint = -1
        self._by_key = {name: RowByKey(table, name) for name, table in tables.items()}
        self._fills_by = {column: fills_statement(tables["fills"], column) for column in FILLS_BY}

    @property
    def skips_unwritten(self) -> bool:
        """Layer 4 is on: a fresh store that nobody else has written to (so far)."""
        return self._written is not None

    def load(self, conn: Connection, events: Sequence[DomainEvent], checkpoint: int) -> Batch:
        """A fresh state at ``checkpoint`` for folding ``events``: holding the stored rows they will read (and the
        open discrepancies their order links point at), its tables loading any other row on demand through
        ``conn``; with layer 4 on, holding nothing and loading every row on demand (``lazy_loader``)."""
        self.new_touched = {}
        if self._written is not None and checkpoint != self._written_checkpoint:
            self._written = None  # someone else wrote these tables after all: query as an ordinary store does
        cache = self._cache if self._cache_checkpoint == checkpoint else None
        self._cache = None  # until this batch's write is known to have committed
        if self._written is not None and self.lazy:
            written = self._written
            lazy = {name: LazyTable(self.lazy_loader(conn, name, written, cache)) for name in TABLES}
            state = self._state(conn, lazy)
            state.checkpoint = checkpoint
            return Batch(state, lazy)
        keys = keys_for(events)
        tables = {name: LazyTable(self._loader(conn, name)) for name in TABLES}
        for name, table in tables.items():
            self._fill(conn, table, name, set(keys.get(name, ())), cache)
        # second steps: rows known only once others are loaded (projection_keys)
        accounts = tables["ledger_accounts"].values()
        balances = balance_keys_of_accounts(row for row in accounts if isinstance(row, LedgerAccountRow))
        self._fill(conn, tables["balances"], "balances", balances, cache)
        links = tables["order_links"].values()
        extra = discrepancy_keys_of_links(row for row in links if isinstance(row, OrderLinkRow))
        extra |= discrepancy_keys_of_balances(row for row in tables["balances"].values() if isinstance(row, BalanceRow))
        self._fill(conn, tables["discrepancies"], "discrepancies", extra, cache)
        fees = fee_keys_of_order_accounts(events, tables["orders"])  # REST fills taking their order's trade account
        self._fill(conn, tables["fees_daily"], "fees_daily", fees, cache)
        state = self._state(conn, tables)
        state.checkpoint = checkpoint
        return Batch(state, tables)

    def _state(self, conn: Connection, tables: Mapping[str, LazyTable]) -> ProjectionState:
        """A state over ``tables`` whose fills of a position or an order are read through ``conn``."""
        fills, statements = tables["fills"], self._fills_by
        return ProjectionState(
            tables=tables,
            position_fills=FillsReader(conn, statements["position_id"], fills, "position_id"),
            order_fills=FillsReader(conn, statements["order_id"], fills, "order_id"),
        )

    def _fill(
        self, conn: Connection, table: LazyTable, name: str, wanted: set[Key], cache: dict[str, LazyTable] | None
    ) -> None:
        missing = wanted - table.keys()
        table.update(dict.fromkeys(missing))  # known from here on: absent unless loaded below
        written = self._written
        if written is not None:
            maybe = written.maybe
            missing = {key for key in missing if maybe(name, key)}
        if cache is not None:
            cached = cache[name]
            hits = missing & cached.keys()  # (a spent table's keys: what it knew)
            for key in hits:
                dict.__setitem__(table, key, dict.get(cached, key))  # no lazy load: the batch that cached it is over
            missing -= hits
        for row in load_rows_by_key(conn, self.tables[name], name, missing):
            dict.__setitem__(table, tuple(getattr(row, column) for column in row.KEY), row)

    def _loader(self, conn: Connection, name: str) -> Callable[[LazyTable, Key], Row | None]:
        """A row the prefetch did not predict: one query (a miss)."""
        by_key = self._by_key[name]

        def load(lazy: LazyTable, key: Key) -> Row | None:
            if self._written is not None and not self._written.maybe(name, key):
                return None
            lazy.misses += 1
            return by_key(conn, key)

        return load

    def lazy_loader(
        self, conn: Connection, name: str, written: WrittenFilter, cache: dict[str, LazyTable] | None
    ) -> Callable[[LazyTable, Key], Row | None]:
        """Layer 4's loader (nothing predicted): the previous batch's row (or its absence) when that batch knew the
        key, none when this store never wrote it, else one query (a miss).

        It runs for every key a batch asks for first (~1 in 5 of the fold's asks over the 300,000-event model log):
        the previous batch's answer in one lookup (a sentinel for "not known there", not ``in`` then ``get``), and
        with the Bloom filter (``WrittenKeys``) its test written out here, not a ``maybe`` call
        (``tests/test_rebuild_speed_prefetch.py`` holds the two to the same answers)."""
        by_key = self._by_key[name]
        # Any, not Row | None: a row, None or the sentinel comes out (a ``cast`` would be a call per lookup)
        known: dict[Key, Any] = {} if cache is None else cache[name]
        get = dict.get  # (not the table's own ``get``, which would load: the batch that cached it is over)
        if isinstance(written, WrittenKeys):
            bits, mask, salt = written.bits, written.SIZE - 1, written.salts[name]

            def load_filtered(lazy: LazyTable, key: Key) -> Row | None:
                row = get(known, key, _UNKNOWN)
                if row is not _UNKNOWN:
                    return row  # type: ignore[no-any-return]  # (a row or None: not the sentinel)
                h = hash(key) ^ salt  # WrittenKeys.maybe, written out
                first, second = h & mask, (h >> 32) & mask
                if not (bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))):
                    return None
                lazy.misses += 1
                return by_key(conn, key)

            return load_filtered
        maybe = written.maybe

        def load(lazy: LazyTable, key: Key) -> Row | None:
            row = get(known, key, _UNKNOWN)
            if row is not _UNKNOWN:
                return row  # type: ignore[no-any-return]  # (a row or None: not the sentinel)
            if not maybe(name, key):
                return None
            lazy.misses += 1
            return by_key(conn, key)

        return load

    def committed(self, batch: Batch) -> None:
        """``batch``'s rows and checkpoint are stored: keep its tables for the next batch, note what it wrote."""
        state = batch.state
        if self._written is not None:
            for name, keys in state.dirty.items():
                self._written.add_all(name, keys)
            self._written_checkpoint = state.checkpoint
        for name, table in batch.tables.items():
            # the batch's tables are not used again (no copies), nor loaded from: a lazy loader holds the previous
            # batch's tables, which would hold theirs, and so on back to the first batch (the whole rebuild in
            # memory: 126 -> 366 MB peak on the model log)
            table.load = _spent
            if self.touched is not None and name in self.touched:
                # every key the fold asked for is a key of the table (prefetched or loaded on a miss); a key it
                # wrote without asking (a new discrepancy, say) is dirty
                hashes = set(map(hash, table))
                hashes.update(map(hash, state.dirty[name]))
                hashes -= self.touched[name]
                self.touched[name].update(hashes)
                self.new_touched[name] = hashes
        self._cache = batch.tables
        self._cache_checkpoint = state.checkpoint

    def refused(self) -> None:
        """The batch's write was refused (another writer moved the checkpoint): no more layers 3 and 4."""
        self._written = None
        self._cache = None
