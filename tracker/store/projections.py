"""Persisting the projection fold: batches of log entries → changed rows + checkpoint, in one transaction.

``ProjectionStore.project(entries)`` is the whole step: parse each entry (``parse_entry``), prefetch the rows the
batch will read into a fresh ``ProjectionState`` (``projection_prefetch``), fold, then write the changed rows
(``projection_codec``) and the new checkpoint in ONE write transaction. Memory stays bounded by the batch: no
state is kept between batches but what the prefetch keeps of the last one.

Exactly-once: the write transaction first locks the checkpoint row and compares it with the checkpoint the batch was
folded from. If it moved (another projector, or ``tracker rebuild`` swapped the tables in), nothing is written and
``project`` returns ``None``: the caller reloads and goes on from the new checkpoint. A crash before the commit leaves
both the rows and the checkpoint as they were; the fold also ignores events at or below its checkpoint.

Reads happen before the write transaction (short write lock: the event log's appender shares it on SQLite), all
in ONE read transaction that sees one snapshot, from the checkpoint on: the rows the fold reads, the ones it loads on
a miss and a position's or an order's fills (``FillsReader``) are the tables as they were at that checkpoint, however
far another projector (the reconciler's ``catch_up`` beside ``tracker run``'s projector) commits meanwhile. Its commit
is then seen by the write's checkpoint check, which writes nothing; the fold's own consistency checks (a position's
fills against its row: ``refold_positions``) never meet a mix of two checkpoints. SQLite: a deferred ``BEGIN``
(``engine.py``) in WAL mode reads one snapshot from the first statement on. PostgreSQL: REPEATABLE READ
(``_snapshot``); its default, READ COMMITTED, gives each statement its own snapshot, and a batch whose fills were
read after the other projector's commit (a later fill of a position whose row was read before it) stopped the
projector: "its 3 fills sum to 0E-8, its row to -0.26155088".

The modules: this one loads, writes and catches up; ``projection_prefetch`` decides which rows are in memory when
the fold starts; ``projection_codec`` turns rows into the driver's parameters and upserts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, Table, delete, func, select
from sqlalchemy.dialects import postgresql

from tracker.bitstamp.parse import parse_entry
from tracker.domain.events import DomainEvent
from tracker.domain.log import Parseable
from tracker.domain.projection import apply, refold_positions
from tracker.domain.rows import TABLES, Row
from tracker.store.engine import writer
from tracker.store.event_log import EventLog
from tracker.store.projection_codec import RowUpserts, upsert
from tracker.store.projection_prefetch import Prefetcher, load_rows_by_key
from tracker.store.projection_schema import CHECKPOINT_NAME, PROJECTION_TABLES, projector_checkpoint

BATCH: Final = 5000  # log entries per transaction


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int  # entries folded (past the checkpoint)
    checkpoint: int  # the checkpoint written
    rows_written: int
    misses: int  # rows the fold read that were not prefetched (see projection_prefetch)


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


def _snapshot(engine: Engine) -> Engine:
    """The engine (same pool) whose transactions read one snapshot: REPEATABLE READ on PostgreSQL (set as the
    connection is checked out, sent with its BEGIN: no round trip; reset when it goes back to the pool). A read-only
    REPEATABLE READ transaction never fails to serialize. SQLite's transactions do already (WAL, ``engine.py``)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine


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
        a row it never wrote does not exist: no query for it (``projection_prefetch``, layer 4). Should another
        writer move the checkpoint all the same (seen when a batch starts, or when its write is refused), it goes
        back to querying for good.

        ``touched``: per table name, a set that gets ``hash(key)`` of every row key the fold read or wrote in the
        batches this store wrote (the parallel rebuild proves its parts independent with them); ``new_touched``
        holds the hashes the last batch added."""
        self.engine = engine
        self.tables = dict(tables)
        self.checkpoint_name = checkpoint_name
        self.clock = clock
        self.prefetch = Prefetcher(self.tables, fresh=fresh, touched=touched, lazy=engine.dialect.name == "sqlite")
        self._writer = writer(engine)
        self._snapshot = _snapshot(engine)
        self._upserts = RowUpserts(self.tables, engine.dialect)
        self.checkpoint_upsert = upsert(projector_checkpoint, engine.dialect.name)

    @property
    def new_touched(self) -> dict[str, set[int]]:
        """Per table, the key hashes the last batch added to ``touched`` (empty without ``touched``)."""
        return self.prefetch.new_touched

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
            rows = load_rows_by_key(conn, self.tables[name], name, keys)
            if rows:
                result[name] = rows
        return result

    def all_rows(self) -> dict[str, list[Row]]:
        """Every stored row of every table, sorted by key (tests and small databases only)."""
        with self.engine.connect() as conn:
            result: dict[str, list[Row]] = {}
            for name, table in self.tables.items():
                row_type = TABLES[name]
                order = [table.c[column] for column in row_type.KEY]  # type: ignore[attr-defined]
                result[name] = [row_type(*values) for values in conn.execute(select(table).order_by(*order))]
            return result

    def count_open_discrepancies(self) -> int:
        table = self.tables["discrepancies"]
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(table).where(table.c.status == "open")
            return int(conn.execute(query).scalar_one())

    # -- writes ----------------------------------------------------------------------------------------------------

    def write_batch(self, changed: Mapping[str, Sequence[Row]], checkpoint: int, *, expected: int) -> int | None:
        """Upsert ``changed`` rows and set the checkpoint, in one transaction, if the stored checkpoint is still
        ``expected``; returns the rows written, or ``None`` (nothing written) when it moved meanwhile."""
        with self._writer.connect() as conn, conn.begin() as transaction:
            stored = lock_checkpoint(conn, self.checkpoint_name)
            if stored != expected:
                transaction.rollback()  # nothing of this transaction stays (not even lock_checkpoint's insert)
                return None
            written = self._upserts.write(conn, changed)
            conn.execute(
                self.checkpoint_upsert,
                [{"name": self.checkpoint_name, "seq": checkpoint, "updated_at": self.clock()}],
            )
        return written

    def clear(self, conn: Connection) -> None:
        """Delete every row of these tables and their checkpoint (inside the caller's transaction)."""
        for table in self.tables.values():
            conn.execute(delete(table))
        conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == self.checkpoint_name))

    # -- the step ----------------------------------------------------------------------------------------------------

    def project(self, entries: Sequence[Parseable]) -> BatchResult | None:
        """Fold one batch of log entries (in seq order) into the tables; ``None`` if the checkpoint moved meanwhile
        (nothing written: reload the checkpoint and read the log again from there)."""
        return self.project_events(list(map(parse_entry, entries)))

    def project_events(self, events: Sequence[DomainEvent]) -> BatchResult | None:
        """``project`` for events already parsed (in seq order)."""
        with self._snapshot.connect() as conn:  # every read of the batch in one snapshot (module docstring)
            batch = self.prefetch.load(conn, events, self.load_checkpoint(conn))
            state = batch.state
            expected = state.checkpoint
            folded = 0
            for event in events:
                if event.seq > state.checkpoint:
                    apply(state, event)
                    folded += 1
            refold_positions(state)  # the batch's end (reads through ``conn``: FillsReader)
            misses = batch.misses
        if not folded:
            return BatchResult(0, expected, 0, misses)
        written = self.write_batch(batch.changed(), state.checkpoint, expected=expected)
        if written is None:
            self.prefetch.refused()
            return None
        self.prefetch.committed(batch)
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
