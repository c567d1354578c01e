"""Persisting the projection fold: batches of log entries → changed rows + checkpoint, in one transaction.

``ProjectionStore.project(entries)`` is the whole step: parse each entry (``parse_entry``), prefetch the rows the
batch will read (``projection_keys``) into a fresh ``ProjectionState``, fold, then write the changed rows and the new
checkpoint in ONE write transaction. Memory stays bounded by the batch: no state is kept between batches.

Exactly-once: the write transaction first locks the checkpoint row and compares it with the checkpoint the batch was
folded from. If it moved (another projector, or ``tracker rebuild`` swapped the tables in), nothing is written and
``project`` returns ``None``: the caller reloads and goes on from the new checkpoint. A crash before the commit leaves
both the rows and the checkpoint as they were; the fold also ignores events at or below its checkpoint.

Reads happen before the write transaction (short write lock: the event log's appender shares it on SQLite).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection, Dialect, Engine, Table, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable

from tracker.bitstamp.parse import parse_entry
from tracker.domain.events import DomainEvent
from tracker.domain.log import Parseable
from tracker.domain.money import plain_decimal as decimal_text
from tracker.domain.projection import ProjectionState, apply
from tracker.domain.rows import TABLES, OrderLinkRow, Row
from tracker.store.engine import writer
from tracker.store.event_log import EventLog
from tracker.store.projection_keys import Keys, discrepancy_keys_of_links, keys_for
from tracker.store.projection_schema import CHECKPOINT_NAME, PROJECTION_TABLES, Money, projector_checkpoint
from tracker.store.schema import UtcDateTime

BATCH: Final = 5000  # log entries per transaction
_IN_CHUNK: Final = 400  # keys per IN (...) query, well under SQLite's bound-parameter limit
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(f.name for f in dataclasses.fields(row_type)) for name, row_type in TABLES.items()
}


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int  # entries folded (past the checkpoint)
    checkpoint: int  # the checkpoint written
    rows_written: int
    misses: int  # rows the fold read that were not prefetched (see projection_keys)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def lock_checkpoint(conn: Connection, name: str) -> int:
    """Take the checkpoint row's lock in a write transaction and return its seq (0 when there is no row yet).

    SQLite: the transaction's BEGIN IMMEDIATE already holds the database's write lock. PostgreSQL: ``SELECT ... FOR
    UPDATE`` locks nothing when the row does not exist, so two first writers could both pass the check; a missing
    row is therefore inserted first (``ON CONFLICT DO NOTHING`` waits for a concurrent inserter's commit), then
    locked. A transaction that does not go on to write rolls back, so no row appears before the projector ran.
    """
    query = select(projector_checkpoint.c.seq).where(projector_checkpoint.c.name == name)
    if conn.dialect.name == "postgresql":
        conn.execute(
            postgresql.insert(projector_checkpoint)
            .values(name=name, seq=0, updated_at=_EPOCH)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one_or_none() or 0)


class _LazyTable(dict[Any, Any]):
    """A state table that loads a row the fold asks for but the prefetch did not predict (one query per miss)."""

    __slots__ = ("known", "load", "misses")

    def __init__(self, load: Callable[[tuple[Any, ...]], Row | None]) -> None:
        super().__init__()
        self.known: set[tuple[Any, ...]] = set()  # keys whose stored row (or absence) is in this dict
        self.load = load
        self.misses = 0

    def get(self, key: Any, default: Any = None) -> Any:
        row = dict.get(self, key)
        if row is not None or key in self.known:
            return default if row is None else row
        self.known.add(key)
        self.misses += 1
        row = self.load(key)
        if row is None:
            return default
        dict.__setitem__(self, key, row)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None


class _WrittenKeys:
    """A Bloom filter of the keys a ``fresh`` store has written: "not written" is certain (no query needed, the row
    does not exist), "written" may be wrong (then one query finds nothing). 2**26 bits (8 MiB), two probes: about
    0.3% false "written" at 2M keys, where a set of the keys themselves would take ~150 MB."""

    __slots__ = ("bits", "salts")
    SIZE: Final = 1 << 26

    def __init__(self) -> None:
        self.bits = bytearray(self.SIZE >> 3)
        self.salts = {name: hash(name) for name in TABLES}

    def add_all(self, name: str, keys: Iterable[tuple[Any, ...]]) -> None:
        bits, mask, salt = self.bits, self.SIZE - 1, self.salts[name]
        for key in keys:
            h = hash(key) ^ salt
            first, second = h & mask, (h >> 32) & mask
            bits[first >> 3] |= 1 << (first & 7)
            bits[second >> 3] |= 1 << (second & 7)

    def maybe(self, name: str, key: tuple[Any, ...]) -> bool:
        bits, mask = self.bits, self.SIZE - 1
        h = hash(key) ^ self.salts[name]
        first, second = h & mask, (h >> 32) & mask
        return bool(bits[first >> 3] & (1 << (first & 7))) and bool(bits[second >> 3] & (1 << (second & 7)))


class _TouchedKeys:
    """The ``touched`` sets (see ``ProjectionStore``) as a fresh store's "written" filter, instead of the Bloom
    filter when they are kept anyway: a key written is a key touched, so a key whose hash is not there was never
    written (exact but for 64-bit hash collisions, which only cost a query). A table without a set: "maybe"."""

    __slots__ = ("touched",)

    def __init__(self, touched: Mapping[str, set[int]]) -> None:
        self.touched = touched

    def add_all(self, name: str, keys: Iterable[tuple[Any, ...]]) -> None:
        """Nothing: ``project_events`` adds every touched key to the sets itself."""

    def maybe(self, name: str, key: tuple[Any, ...]) -> bool:
        hashes = self.touched.get(name)
        return hashes is None or hash(key) in hashes


def _stamp_sqlite(value: datetime) -> str:
    """What ``UtcDateTime`` stores on SQLite (SQLAlchemy's DateTime text in UTC, always with microseconds)."""
    if value.tzinfo is UTC:  # the usual case: what the parser makes (isoformat ends "+00:00")
        return value.isoformat(" ", "microseconds")[:-6]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: tracker stores aware UTC datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _money_postgres(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Inline:
    """A converter written into the generated encoder as an expression (``{v}``: the value, not ``None``): no
    Python-level call per value. ``names``: what the expression refers to."""

    expression: str
    names: Mapping[str, Any]


# The usual cases inline, anything else through the function that says what is wrong. A row's Decimals are finite
# (the parser refuses others; the default decimal context traps overflow and invalid operations); checked anyway.
_SQLITE_MONEY: Final = _Inline(
    "(_format({v}, 'f') if _is_finite({v}) else _decimal_text({v}))",
    {"_format": format, "_is_finite": Decimal.is_finite, "_decimal_text": decimal_text},
)
_SQLITE_STAMP: Final = _Inline(
    "({v}.isoformat(' ', 'microseconds')[:-6] if {v}.tzinfo is _UTC else _stamp_sqlite({v}))",
    {"_UTC": UTC, "_stamp_sqlite": _stamp_sqlite},
)
Converter = Callable[[Any], Any] | _Inline | None


def _converters(table: Table, dialect_name: str) -> tuple[Converter, ...]:
    """Per column, how to turn a row's value (not ``None``) into what the driver takes (what the column types
    would do)."""
    result: list[Converter] = []
    for column in table.columns:
        if isinstance(column.type, Money):
            result.append(_SQLITE_MONEY if dialect_name == "sqlite" else _money_postgres)
        elif isinstance(column.type, UtcDateTime) and dialect_name == "sqlite":
            result.append(_SQLITE_STAMP)
        else:
            result.append(None)
    return tuple(result)


def _encoder(
    fields: Sequence[str], converters: Sequence[Converter]
) -> Callable[[Sequence[Row]], list[tuple[Any, ...]]]:
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
        elif isinstance(convert, _Inline):
            namespace.update(convert.names)
            values.append(f"(None if (v{i} := r.{name}) is None else {convert.expression.format(v=f'v{i}')})")
        else:
            namespace[f"_c{i}"] = convert
            values.append(f"(None if (v{i} := r.{name}) is None else _c{i}(v{i}))")
    source = f"def encode(rows):\n    return [({', '.join(values)},) for r in rows]\n"
    exec(source, namespace)  # generated from the row type's field names
    return namespace["encode"]  # type: ignore[no-any-return]


def _fast_upsert(table: Table, dialect: Dialect) -> str:
    """The upsert as positional driver SQL (values in the table's column order), for ``exec_driver_sql``."""
    positional = dialect if dialect.positional else type(dialect)(paramstyle="format")  # type: ignore[call-arg]
    keys = [column.key for column in table.columns]
    compiled = _upsert(table, dialect.name).compile(dialect=positional, column_keys=keys)  # type: ignore[attr-defined]
    if list(compiled.positiontup or ()) != keys:
        raise RuntimeError(f"unexpected parameter order in {compiled}")
    return str(compiled)


def _upsert(table: Table, dialect_name: str) -> Executable:
    module = postgresql if dialect_name == "postgresql" else sqlite
    statement = module.insert(table)
    keys = [column.name for column in table.primary_key.columns]
    updates = {column.name: statement.excluded[column.name] for column in table.columns if not column.primary_key}
    return statement.on_conflict_do_update(index_elements=keys, set_=updates)


class ProjectionStore:
    """The projection's tables on one database (``tables``: the live ``proj_*`` ones unless told otherwise)."""

    def __init__(
        self,
        engine: Engine,
        *,
        tables: Mapping[str, Table] = PROJECTION_TABLES,
        checkpoint_name: str = CHECKPOINT_NAME,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fresh: bool = False,
        touched: Mapping[str, set[int]] | None = None,
    ) -> None:
        """``fresh``: ``tables`` are empty now and this store is their only writer (the rebuild's shadow tables), so
        a row it never wrote does not exist: no query for it (``_WrittenKeys``). Should another writer move the
        checkpoint all the same (seen when a batch starts, or when its write is refused), it goes back to querying
        for good.

        ``touched``: per table name, a set that gets ``hash(key)`` of every row key the fold read or wrote in the
        batches this store wrote (the parallel rebuild proves its parts independent with them); ``new_touched``
        holds the hashes the last batch added."""
        self.engine = engine
        self.touched = touched
        self.new_touched: dict[str, set[int]] = {}
        self._written: _WrittenKeys | _TouchedKeys | None = None
        if fresh:
            self._written = _WrittenKeys() if touched is None else _TouchedKeys(touched)
        self._written_checkpoint = 0  # the checkpoint of the last batch this fresh store wrote
        self.tables = dict(tables)
        self.checkpoint_name = checkpoint_name
        self.clock = clock
        self._writer = writer(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._upserts = {name: _fast_upsert(table, engine.dialect) for name, table in self.tables.items()}
        self._cache: dict[str, tuple[dict[Any, Row], set[Any]]] | None = None  # see load_state
        self._cache_checkpoint = -1
        self._encoders = {
            name: _encoder(_FIELDS[name], _converters(table, engine.dialect.name))
            for name, table in self.tables.items()
        }
        self.checkpoint_upsert = _upsert(projector_checkpoint, engine.dialect.name)

    # -- reads -----------------------------------------------------------------------------------------------------

    def load_checkpoint(self, conn: Connection | None = None) -> int:
        """The last seq folded into the tables (0 when nothing was projected yet)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.load_checkpoint(own)
        query = select(projector_checkpoint.c.seq).where(projector_checkpoint.c.name == self.checkpoint_name)
        return int(conn.execute(query).scalar_one_or_none() or 0)

    def load_rows(
        self, keys_by_table: Mapping[str, Iterable[tuple[Any, ...]]], conn: Connection | None = None
    ) -> dict[str, list[Row]]:
        """The stored rows with the given keys (absent keys are simply missing from the result)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.load_rows(keys_by_table, own)
        result: dict[str, list[Row]] = {}
        for name, keys in keys_by_table.items():
            rows = self._load_table(conn, name, keys)
            if rows:
                result[name] = rows
        return result

    def _load_table(self, conn: Connection, name: str, keys: Iterable[tuple[Any, ...]]) -> list[Row]:
        table = self.tables[name]
        row_type = TABLES[name]
        key_columns = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
        # Group by every key column but the last: `a = ? AND b = ? AND last IN (...)` uses the primary key index.
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for key in keys:
            groups.setdefault(tuple(key[:-1]), []).append(key[-1])
        rows: list[Row] = []
        for prefix, lasts in groups.items():
            condition = and_(*(column == value for column, value in zip(key_columns, prefix, strict=False)))
            for start in range(0, len(lasts), _IN_CHUNK):
                chunk = lasts[start : start + _IN_CHUNK]
                query = select(table).where(condition, key_columns[-1].in_(chunk))
                rows.extend(row_type(*values) for values in conn.execute(query))
        return rows

    def all_rows(self) -> dict[str, list[Row]]:
        """Every stored row of every table, sorted by key (tests and small databases only)."""
        with self.engine.connect() as conn:
            result: dict[str, list[Row]] = {}
            for name, table in self.tables.items():
                row_type = TABLES[name]
                order = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
                result[name] = [row_type(*values) for values in conn.execute(select(table).order_by(*order))]
            return result

    def load_state(self, keys: Keys, conn: Connection) -> ProjectionState:
        """A fresh state holding the stored rows for ``keys`` (and their open discrepancies) at the checkpoint.

        Rows the previous batch of this store read or wrote come from memory when the checkpoint is still the one
        this store wrote (nobody else wrote since); at most one batch's rows are kept that way.
        """
        state = ProjectionState()
        state.checkpoint = self.load_checkpoint(conn)
        if self._written is not None and state.checkpoint != self._written_checkpoint:
            self._written = None  # someone else wrote these tables after all: query as an ordinary store does
        cache = self._cache if self._cache_checkpoint == state.checkpoint else None
        tables: dict[str, _LazyTable] = {}
        for name in TABLES:
            tables[name] = _LazyTable(self._loader(conn, name))
            setattr(state, name, tables[name])
            self._fill(conn, tables[name], name, set(keys.get(name, ())), cache)
        links = tables["order_links"].values()
        extra = discrepancy_keys_of_links(row for row in links if isinstance(row, OrderLinkRow))
        self._fill(conn, tables["discrepancies"], "discrepancies", extra, cache)
        return state

    def _fill(
        self,
        conn: Connection,
        table: _LazyTable,
        name: str,
        wanted: set[tuple[Any, ...]],
        cache: dict[str, tuple[dict[Any, Row], set[Any]]] | None,
    ) -> None:
        missing = wanted - table.known
        table.known |= missing
        written = self._written
        if written is not None:
            maybe = written.maybe
            missing = {key for key in missing if maybe(name, key)}
        if cache is not None:
            cached_rows, cached_known = cache[name]
            hits = missing & cached_known
            for key in hits:
                row = dict.get(cached_rows, key)  # no lazy load: the batch that cached it is over
                if row is not None:
                    dict.__setitem__(table, key, row)
            missing -= hits
        for row in self._load_table(conn, name, missing):
            dict.__setitem__(table, tuple(getattr(row, column) for column in row.KEY), row)

    def _loader(self, conn: Connection, name: str) -> Callable[[tuple[Any, ...]], Row | None]:
        def load(key: tuple[Any, ...]) -> Row | None:
            if self._written is not None and not self._written.maybe(name, key):
                return None
            rows = self._load_table(conn, name, [key])
            return rows[0] if rows else None

        return load

    # -- writes ----------------------------------------------------------------------------------------------------

    def write_batch(self, changed: Mapping[str, Sequence[Row]], checkpoint: int, *, expected: int) -> int | None:
        """Upsert ``changed`` rows and set the checkpoint, in one transaction, if the stored checkpoint is still
        ``expected``; returns the rows written, or ``None`` (nothing written) when it moved meanwhile."""
        with self._writer.connect() as conn, conn.begin() as transaction:
            stored = lock_checkpoint(conn, self.checkpoint_name)
            if stored != expected:
                transaction.rollback()  # nothing of this transaction stays (not even lock_checkpoint's insert)
                return None
            written = self._write_rows(conn, changed)
            conn.execute(
                self.checkpoint_upsert,
                [{"name": self.checkpoint_name, "seq": checkpoint, "updated_at": self.clock()}],
            )
        return written

    def _write_rows(self, conn: Connection, changed: Mapping[str, Sequence[Row]]) -> int:
        written = 0
        for name, rows in changed.items():
            if rows:
                conn.exec_driver_sql(self._upserts[name], self._values(name, rows))
                written += len(rows)
        return written

    def _values(self, name: str, rows: Sequence[Row]) -> list[Any]:
        """Driver parameters for ``rows`` in column order (the hot path: no per-row SQLAlchemy processing)."""
        return self._encoders[name](rows)

    def project(self, entries: Sequence[Parseable]) -> BatchResult | None:
        """Fold one batch of log entries (in seq order) into the tables; ``None`` if the checkpoint moved meanwhile
        (nothing written: reload the checkpoint and read the log again from there)."""
        return self.project_events([parse_entry(entry) for entry in entries])

    def project_events(self, events: Sequence[DomainEvent]) -> BatchResult | None:
        """``project`` for events already parsed (in seq order)."""
        self.new_touched = {}
        with self.engine.connect() as conn:
            state = self.load_state(keys_for(events), conn)
            expected = state.checkpoint
            folded = 0
            for event in events:
                if event.seq > state.checkpoint:
                    apply(state, event)
                    folded += 1
            misses = sum(table.misses for table in (state.table(name) for name in TABLES))
        if not folded:
            return BatchResult(0, expected, 0, misses)
        self._cache = None  # until this write is known to have committed
        # The dirty rows, unsorted (``changed_rows()`` sorts them; the database does not care about the order).
        changed: dict[str, list[Row]] = {}
        for name, keys in state.dirty.items():
            if keys:
                rows = state.table(name)
                changed[name] = [rows[key] for key in keys]
        written = self.write_batch(changed, state.checkpoint, expected=expected)
        if written is None:
            self._written = None  # someone else writes these tables after all
            return None
        if self._written is not None:
            for name, keys in state.dirty.items():
                self._written.add_all(name, keys)
            self._written_checkpoint = state.checkpoint
        self._cache_checkpoint = state.checkpoint
        self._cache = {}
        for name in TABLES:
            table = state.table(name)
            table.known.update(table.keys())  # the batch's tables are not used again: no copies
            self._cache[name] = (table, table.known)
            if self.touched is not None and name in self.touched:
                # every key the fold asked for is in ``known`` (prefetched or loaded on a miss); a key it wrote
                # without asking (a new discrepancy, say) is dirty
                hashes = set(map(hash, table.known))
                hashes.update(map(hash, state.dirty[name]))
                hashes -= self.touched[name]
                self.touched[name] |= hashes
                self.new_touched[name] = hashes
        return BatchResult(folded, state.checkpoint, written, misses)

    def catch_up(
        self,
        log: EventLog,
        *,
        batch: int = BATCH,
        until: int | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> int:
        """Project the log from the stored checkpoint to its head (or ``until``); returns the checkpoint reached."""
        checkpoint = self.load_checkpoint()
        while until is None or checkpoint < until:
            limit = batch if until is None else min(batch, until - checkpoint)
            entries = log.read_records_after(checkpoint, limit)
            if not entries:
                break
            result = self.project(entries)
            if result is None:  # the checkpoint moved under us (a rebuild swapped the tables in): start from it
                checkpoint = self.load_checkpoint()
                continue
            checkpoint = entries[-1].seq if result.events == 0 else result.checkpoint
            if on_batch is not None:
                on_batch(result)
        return checkpoint

    def count_open_discrepancies(self) -> int:
        table = self.tables["discrepancies"]
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(table).where(table.c.status == "open")
            return int(conn.execute(query).scalar_one())

    def clear(self, conn: Connection) -> None:
        """Delete every row of these tables and their checkpoint (inside the caller's transaction)."""
        for table in self.tables.values():
            conn.execute(delete(table))
        conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == self.checkpoint_name))
