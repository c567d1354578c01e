"""The append-only, hash-chained event log: append a batch in one transaction, read pages in ``seq`` order.

Synchronous SQLAlchemy Core. Callers in trio use one writer thread (``trio.to_thread.run_sync(..., limiter=...)``);
several writers (threads or processes) are still correct, because each append takes the write lock first.

``seq`` is assigned here as head + 1 inside the append transaction, after taking the write lock, so it is gapless and
its order is commit order. A tailing reader can therefore poll ``read_after(last_seen)`` and never skip a row. On
PostgreSQL a small batch is appended by the server-side function ``tracker_append`` (migration 0008: the same steps,
one statement, the lock never held while the server waits for this process); everything else is appended from here.
That append is also handed out as non-blocking steps (``server_append_steps``), which the writer drives on its event
loop instead of in a thread (``tracker/runtime/loop_append.py``).
"""

from __future__ import annotations

import json
import operator
import sqlite3
import threading
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Dialect,
    Engine,
    Integer,
    Select,
    String,
    bindparam,
    event,
    exc,
    func,
    or_,
    select,
)

from tracker.domain.chain import GENESIS, Anchor, canonical_tail, link_hash, tail_link
from tracker.domain.log import LogEntry, LogRecord, NewEntry, QuarantineItem
from tracker.store.engine import writer
from tracker.store.schema import UtcDateTime, event_log, quarantine

# psycopg is imported where a PostgreSQL log is used, not here: a process on SQLite (the embedded default, every CLI
# command) never loads it (importing `tracker run`'s modules: 0.50 -> 0.46 s, 60.7 -> 52.5 MB peak RSS);
# tests/test_lazy_psycopg.py checks it stays out.
if TYPE_CHECKING:
    import psycopg
    from psycopg import abc as pg_abc
    from psycopg import pq
    from psycopg.abc import PQGen

LOG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LogEntry))
_LOG_COLUMNS = tuple(event_log.c[name] for name in LOG_FIELDS)
RECORD_FIELDS: tuple[str, ...] = LogRecord._fields
_INSERT_LOG = event_log.insert()
_INSERT_QUARANTINE = quarantine.insert()
_IN_CHUNK = 500  # dedup keys per IN (...) query: well under SQLite's bound-parameter limit

# On PostgreSQL a sequence or max(seq)+1 hands out numbers in *start* order, but transactions become visible in
# *commit* order: an appender that took seq 7 may commit after another that took seq 8. A reader tailing with
# `seq > 6` would then see 8, move its cursor to 8 and never see 7. Taking this lock before reading the head makes
# appenders run one at a time, so seq order is commit order and the log is gapless. EXCLUSIVE mode blocks other
# writers only: plain SELECTs (ACCESS SHARE) go on. Under READ COMMITTED the head query after the lock takes a fresh
# snapshot, so it sees the previous appender's commit. (SQLite gets the same from BEGIN IMMEDIATE, see engine.py.)
_PG_LOCK_SQL = "LOCK TABLE event_log IN EXCLUSIVE MODE"
_PG_HEAD = "SELECT seq, hash FROM event_log ORDER BY seq DESC LIMIT 1"
# The unique index is on a digest of the key (migration 0009): the lookup goes through it and compares the key too,
# one index probe per key (LATERAL ... LIMIT 1): as a plain join the planner may hash the keys and scan the whole log
# instead (a 1,000-key lookup on a 20,000-row log: 52 ms and growing with the log, against ~3 ms). The keys go in
# binary (%b): psycopg's text format quotes them item by item in Python (3 % of an unpaced ingest).
_PG_STORED = (
    "SELECT e.dedup_key, e.seq, e.payload FROM unnest(%b::text[]) AS k(key) CROSS JOIN LATERAL ("
    "SELECT s.dedup_key, s.seq, s.payload FROM event_log s"
    " WHERE tracker_key_digest(s.dedup_key) = tracker_key_digest(k.key) AND s.dedup_key = k.key LIMIT 1) AS e"
)
_PG_LOOK = "; ".join((_PG_LOCK_SQL, _PG_HEAD, _PG_STORED))  # the pipeline, as its errors name it
# In binary: psycopg's text format escapes each row's texts in Python-called C, the binary one copies their UTF-8 (500
# rows of model frames: 9.0 -> 6.7 us a row in this process, 13.9 -> 13.2 in the server: no integer or time to parse).
_COPY_LOG = "COPY event_log (" + ", ".join(c.name for c in event_log.c) + ") FROM STDIN (FORMAT BINARY)"


def _copy_type(column: Column[Any]) -> str:
    """The PostgreSQL type a binary COPY sends ``column``'s values as (its column type's, so a new column of another
    type fails here, at import, not as bytes the server misreads)."""
    if isinstance(column.type, UtcDateTime):
        return "timestamptz"
    if isinstance(column.type, BigInteger):
        return "bigint"
    if isinstance(column.type, String):  # Text too
        return "text"
    raise TypeError(f"event_log.{column.name}: no binary COPY type for {column.type!r}")


_COPY_TYPES = [_copy_type(column) for column in event_log.c]

# The append as one server-side function (migration 0008): lock, head, dedup, number, hash, insert and, called in
# autocommit, commit, all inside the server: the lock is never held while the server waits for this process. The
# arrays go in binary (%b): psycopg's text format escapes every quote of every payload with a regex, 0.7 s per 1000.
_PG_APPEND_TYPES = ["text[]"] * 10 + ["bigint[]", "timestamptz[]"] + ["text[]"] * 4
_PG_APPEND = (
    "SELECT appended, positions, duplicates, base_hash, head_seq, head_hash FROM tracker_append("
    + ", ".join(f"${n}::{type_}" for n, type_ in enumerate(_PG_APPEND_TYPES, 1))
    + ")"
)
_PG_APPEND_SQL = _PG_APPEND.encode()
# The function's arguments but the last (the tails), in its order: one column (array) each.
_PG_APPEND_NAMES = (
    "account", "source", "channel", "event", "market", "order_id", "trade_id", "position_id", "event_id",
    "pre_event_id", "exchange_ts_us", "received_at", "connection_id", "payload", "dedup_key",
)  # fmt: skip
_PG_APPEND_FIELDS = operator.attrgetter(*_PG_APPEND_NAMES)
_RECEIVED_AT = _PG_APPEND_NAMES.index("received_at")
# Batches up to this size go to the function; larger ones (a backlog) take the client's COPY path, which writes them
# faster: one process, this machine, ms per append server/client: 100 rows 7.2/6.9, 300 rows 24.5/14.5, 1000 rows
# 53/34 (the function inserts from arrays and loops in PL/pgSQL; COPY streams). Live batches are small, and there
# the function's one round trip is what matters (docs/storage.md).
SERVER_APPEND_MAX = 100
_PG_CONFLICT = "TK001"  # the function refused the batch: a dedup_key conflict (appended the client's way instead)
_PG_UNUSABLE = ("TK002", "42883")  # not a UTF8 database; no such function (a log not migrated to 0008)


def _driver_connection(conn: Connection) -> psycopg.Connection[Any]:
    """``conn``'s own psycopg connection (work on it runs inside ``conn``'s transaction)."""
    import psycopg

    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(driver).__name__}")
    return driver


def _sqlite_cursor(conn: Connection) -> sqlite3.Cursor:
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"expected a sqlite3 connection, got {type(driver).__name__}")
    return driver.cursor()


def _driver_cursor(conn: Connection) -> psycopg.Cursor[Any]:
    return _driver_connection(conn).cursor()


@dataclass(frozen=True, slots=True)
class AppendResult:
    appended: tuple[int, ...]  # the new rows' seqs, in the order of the batch
    duplicates: int  # same dedup_key, same payload: already stored (or earlier in the batch), not appended again
    conflicts: int  # same dedup_key, different payload: quarantined with both payloads (once per distinct payload)
    quarantined: int  # quarantine rows written (the given items plus the conflicts)
    head: Anchor  # the log's head after this append
    # The server append only (else empty): each appended entry's position in the batch (1-based, with ``appended``'s
    # order); the entries at the other positions were duplicates. How one combined append's outcome is split back
    # among the batches it was made of (``split_result``, tracker/runtime/append_combiner.py). Not compared: the same
    # append has it on one path and not on the other.
    positions: tuple[int, ...] = field(default=(), compare=False)


def split_result(result: AppendResult, sizes: Sequence[int]) -> list[AppendResult]:
    """The outcome of each of the consecutive batches (of ``sizes`` entries) that one server append took together:
    its appended seqs and duplicates (the server append refuses a conflict, so there are none); ``head`` is the
    combined append's. ``ValueError`` for a result without positions (not a server append's)."""
    if result.conflicts or result.quarantined or len(result.positions) != len(result.appended):
        raise ValueError("only a server append's result (positions, no conflict, no quarantine) can be split")
    if len(result.appended) + result.duplicates != sum(sizes):
        raise ValueError(f"the result covers {len(result.appended) + result.duplicates} entries, not {sum(sizes)}")
    parts: list[AppendResult] = []
    at = first = 0
    for size in sizes:
        end = first + size
        taken = at
        while at < len(result.positions) and result.positions[at] <= end:
            at += 1
        appended = result.appended[taken:at]
        positions = tuple(position - first for position in result.positions[taken:at])
        parts.append(AppendResult(appended, size - len(appended), 0, 0, result.head, positions))
        first = end
    return parts


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """A stored quarantine row (``QuarantineItem`` plus what the store adds for conflicts)."""

    id: int
    kind: str
    reason: str
    account: str | None
    source: str | None
    channel: str | None
    connection_id: str | None
    dedup_key: str | None
    existing_seq: int | None
    raw: str
    existing_payload: str | None
    received_at: datetime


_Q_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(QuarantineRow))


def _quarantine_row(item: QuarantineItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "reason": item.reason,
        "account": item.account,
        "source": item.source,
        "channel": item.channel,
        "connection_id": item.connection_id,
        "dedup_key": None,
        "existing_seq": None,
        "raw": item.raw,
        "existing_payload": None,
        "received_at": item.received_at,
    }


# PostgreSQL refuses text longer than a String column's width, and any text containing NUL; SQLite stores both. So
# that one absurd frame can never stop the writer: an entry with such a field is quarantined instead (on every
# backend, so the outcome does not depend on it), and a quarantine row is made to fit (an over-long or NUL-bearing
# channel, account, ... becomes NULL: the raw text keeps it; on PostgreSQL a raw text with NUL is kept JSON-quoted).
_ENTRY_WIDTHS: tuple[tuple[str, int | None], ...] = tuple(
    (f.name, getattr(event_log.c[f.name].type, "length", None))
    for f in fields(NewEntry)
    if f.name in event_log.c and isinstance(event_log.c[f.name].type, String)
)
_QUARANTINE_WIDTHS: tuple[tuple[str, int], ...] = tuple(
    (c.name, c.type.length)
    for c in quarantine.c
    if isinstance(c.type, String) and c.type.length and c.name != "kind" and c.nullable
)


def _unfit(entry: NewEntry) -> str | None:
    """Why ``entry`` cannot be stored as it is (see above), or None."""
    for name, width in _ENTRY_WIDTHS:
        value = getattr(entry, name)
        if value is None:
            continue
        if width is not None and len(value) > width:
            return f"{name} is {len(value)} characters long; the event log keeps at most {width}"
        if "\x00" in value:
            return f"{name} contains NUL, which the event log cannot keep"
    return None


_SIZED = tuple((name, width) for name, width in _ENTRY_WIDTHS if width is not None)
_SIZED_TEXTS = operator.attrgetter(*(name for name, _ in _SIZED))
_SIZED_LIMITS = tuple(width for _, width in _SIZED)
_UNSIZED_TEXTS = tuple(name for name, width in _ENTRY_WIDTHS if width is None)  # the payload


def _maybe_unfit(entry: NewEntry) -> bool:
    """``_unfit(entry) is not None``, quicker (every entry is tested; ``_unfit`` says why, for the rare one): the
    values in one C call, one loop without ``getattr`` or a message."""
    for name in _UNSIZED_TEXTS:
        value = getattr(entry, name)
        if value is not None and "\x00" in value:
            return True
    for value, width in zip(_SIZED_TEXTS(entry), _SIZED_LIMITS, strict=True):
        if value is not None and (len(value) > width or "\x00" in value):
            return True
    return False


def _unfit_row(entry: NewEntry, reason: str) -> dict[str, Any]:
    return _quarantine_row(
        QuarantineItem(
            kind="malformed",
            reason=reason,
            raw=entry.payload,
            received_at=entry.received_at,
            account=entry.account,
            source=entry.source,
            channel=entry.channel,
            connection_id=entry.connection_id,
        )
    )


def _fit(row: dict[str, Any], postgres: bool) -> dict[str, Any]:
    for name, width in _QUARANTINE_WIDTHS:
        value = row[name]
        if value is not None and (len(value) > width or "\x00" in value):
            row[name] = None
    if postgres:
        row["reason"] = row["reason"].replace("\x00", "\\u0000")
        if "\x00" in row["raw"]:
            row["raw"] = json.dumps(row["raw"])
            row["reason"] += " (raw text kept JSON-quoted: it contains NUL, which PostgreSQL text cannot hold)"
    return row


def fit_quarantine_row(row: dict[str, Any]) -> dict[str, Any]:
    """A quarantine row (every column, by name) made to fit PostgreSQL, as this module's writer stores it there: an
    over-long or NUL-bearing short column NULL, a raw text with NUL JSON-quoted and the reason saying so
    (``tracker db copy`` from SQLite, which keeps both as they are). Changes ``row`` and returns it."""
    return _fit(row, postgres=True)


def _conflict_row(entry: NewEntry, existing_seq: int, existing_payload: str) -> dict[str, Any]:
    return {
        "kind": "conflict",
        "reason": f"dedup_key {entry.dedup_key!r} is stored at seq {existing_seq} with a different payload",
        "account": entry.account,
        "source": entry.source,
        "channel": entry.channel,
        "connection_id": entry.connection_id,
        "dedup_key": entry.dedup_key,
        "existing_seq": existing_seq,
        "raw": entry.payload,
        "existing_payload": existing_payload,
        "received_at": entry.received_at,
    }


def _sqlite_stamp(moment: datetime) -> str:
    """What ``UtcDateTime`` stores on SQLite (SQLAlchemy's DateTime text, UTC, always with microseconds)."""
    if moment.tzinfo is UTC:  # the usual case (``utc_now``): the same text without converting (1.5 -> 1.0 us)
        return moment.isoformat(" ", "microseconds")[:26]
    if moment.tzinfo is None:
        raise ValueError(f"received_at must be timezone-aware (UTC), got naive {moment!r}")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"received_at must be timezone-aware (UTC), got naive {moment!r}")
    return moment


def _fast_insert(dialect: Dialect) -> tuple[str, Callable[[datetime], object]]:
    """The event_log INSERT as positional driver SQL for ``dialect``, and how to bind ``received_at`` for it."""
    positional = dialect if dialect.positional else type(dialect)(paramstyle="format")  # type: ignore[call-arg]
    compiled = _INSERT_LOG.compile(dialect=positional, column_keys=[c.key for c in event_log.c])
    if list(compiled.positiontup or ()) != [c.key for c in event_log.c]:
        raise RuntimeError(f"unexpected parameter order in {compiled}")
    return str(compiled), (_sqlite_stamp if dialect.name == "sqlite" else _aware)


@contextmanager
def _translated(conn: Connection, statement: str) -> Iterator[None]:
    """Driver errors of work done on the driver connection directly (psycopg or sqlite3), raised as what SQLAlchemy
    would raise had the statement gone through it (IntegrityError, OperationalError, ...): the writer's retry and the
    lease tell failures apart by these classes. A lost connection is invalidated, so the pool does not hand it out
    again."""
    driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except driver_error as error:
        lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(error)
        raise exc.DBAPIError.instance(
            statement, None, error, driver_error, dialect=conn.dialect, connection_invalidated=lost
        ) from error


_DEDUP_INDEX = "ix_event_log_dedup_digest"  # PostgreSQL's unique dedup index (schema.py, migration 0009)


def _dedup_violation(error: exc.IntegrityError) -> bool:
    """The unique dedup index refused a row (PostgreSQL: a stored key; other violations are the caller's to raise)."""
    diag = getattr(error.orig, "diag", None)
    return getattr(error.orig, "sqlstate", None) == "23505" and getattr(diag, "constraint_name", None) == _DEDUP_INDEX


def _pg_lock_and_look(conn: Connection, keys: list[str]) -> tuple[int, str, dict[str, tuple[int, str]]]:
    """Take the write lock, read the head and look the batch's dedup keys up: (head seq, head hash, key -> (seq,
    payload) of the stored ones). The three statements go in one psycopg pipeline, one round trip instead of three:
    the lock is held from the first to the commit, and every round trip in between is time the other appenders
    wait (on a busy machine, each is a wait for this process to be scheduled). The server still runs them in order,
    each SELECT with a snapshot taken after the lock, so the head is the previous appender's commit."""
    driver = _driver_connection(conn)
    with _translated(conn, _PG_LOOK):
        lock, head, stored = driver.cursor(), driver.cursor(), driver.cursor()
        try:
            with driver.pipeline():  # sent together; the block's end waits for the three results
                lock.execute(_PG_LOCK_SQL)
                head.execute(_PG_HEAD)
                if keys:
                    stored.execute(_PG_STORED, (keys,))
            top = head.fetchone()
            found = {key: (seq, payload) for key, seq, payload in stored.fetchall()} if keys else {}
        finally:
            for cursor in (lock, head, stored):
                cursor.close()
    return (0, GENESIS, found) if top is None else (top[0], top[1], found)


_TRANSFORMER = "tracker_transformer"  # (with the SQL) the pooled connection's ``info`` key of a Transformer (_pg_call)


def _type_oid(driver: psycopg.Connection[Any], name: str) -> int:
    """The oid of a built-in type (``text``, ``bigint[]``, ...)."""
    array = name.endswith("[]")
    info = driver.adapters.types.get(name.removesuffix("[]"))
    if info is None:
        raise LookupError(f"unknown PostgreSQL type {name!r}")
    return info.array_oid if array else info.oid


def _pg_call(
    conn: Connection, statement: str, sql: bytes, params: Sequence[Any], types: Sequence[str]
) -> PQGen[tuple[Any, ...] | None]:
    """One statement on ``conn``'s psycopg connection as non-blocking steps (psycopg's generator protocol: yield what
    to wait for, get what is ready), its first row or None. ``sql`` has ``$n`` placeholders, whose PostgreSQL types
    are ``types``; the parameters are sent in binary, adapted by psycopg as a cursor's ``execute`` would, whose steps
    these are, less the cursor: the caller drives them, blocking (``psycopg.Connection.wait``) or on an event loop.
    Errors are raised as ``_translated`` raises them (a lost connection is invalidated)."""
    from psycopg import errors as pg_errors
    from psycopg import pq
    from psycopg.adapt import PyFormat, Transformer
    from psycopg.waiting import Ready, Wait

    driver = _driver_connection(conn)
    pgconn = driver.pgconn
    with _translated(conn, statement):
        # Kept with the pooled connection, dropped with it. Its dumpers are fixed by the parameters' types, found once:
        # looking the dumper of each list up by its items (what a cursor does) was half of the adaptation's time.
        info = conn.connection.info
        tx: pg_abc.Transformer | None = info.get((_TRANSFORMER, sql))
        if tx is None:
            tx = info[(_TRANSFORMER, sql)] = Transformer(driver)
            tx.set_dumper_types([_type_oid(driver, name) for name in types], pq.Format.BINARY)
        values = tx.dump_sequence(params, (PyFormat.BINARY,) * len(params))
        pgconn.send_query_params(sql, values, tx.types, tx.formats)
        while pgconn.flush():  # the rest of a large query: the server may answer (a notice) as it reads
            if (yield Wait.RW) & Ready.R:
                pgconn.consume_input()
        results: list[pq.abc.PGresult] = []
        while True:
            while pgconn.is_busy():
                while not (yield Wait.R):
                    pass
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
        for result in results:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise pg_errors.error_from_result(result, encoding=driver.info.encoding)
        if not results or results[0].status != pq.ExecStatus.TUPLES_OK or results[0].ntuples < 1:
            return None
        tx.set_pgresult(results[0])
        row: tuple[Any, ...] = tx.load_row(0, tuple)
        return row


_SQLITE_HEAD = "SELECT seq, hash FROM event_log ORDER BY seq DESC LIMIT 1"


def _sqlite_stored(count: int) -> str:
    return "SELECT dedup_key, seq, payload FROM event_log WHERE dedup_key IN (" + ",".join("?" * count) + ")"


def _sqlite_look(conn: Connection, keys: set[str]) -> tuple[int, str, dict[str, tuple[int, str]]]:
    """SQLite: the head and the stored dedup keys (as ``_pg_lock_and_look``; the write lock is the transaction's
    ``BEGIN IMMEDIATE``), through the driver's cursor: the same queries through SQLAlchemy Core cost ~0.5 ms of
    Python per append (compile cache lookups, result processing), a third of a small append's time; the driver
    caches the prepared statements itself."""
    found: dict[str, tuple[int, str]] = {}
    ordered = sorted(keys)
    cursor = _sqlite_cursor(conn)
    try:
        with _translated(conn, _SQLITE_HEAD):
            top = cursor.execute(_SQLITE_HEAD).fetchone()
            for start in range(0, len(ordered), _IN_CHUNK):
                chunk = ordered[start : start + _IN_CHUNK]
                for key, seq, payload in cursor.execute(_sqlite_stored(len(chunk)), chunk):
                    found[key] = (seq, payload)
    finally:
        cursor.close()
    return (0, GENESIS, found) if top is None else (top[0], top[1], found)


class DriverQuery:
    """A Core SELECT compiled once to positional driver SQL, for the raw cursor reads below (no per-row SQLAlchemy
    processing): ``params(**values)`` lays the values out in the order the SQL wants them (with the statement's
    own defaults, e.g. the ``OFFSET 0`` SQLite adds to a bound ``LIMIT``). Expanding ``IN`` lists are rendered."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        positional = dialect if dialect.positional else type(dialect)(paramstyle="format")  # type: ignore[call-arg]
        compiled = statement.compile(dialect=positional, compile_kwargs={"render_postcompile": True})
        self.sql = str(compiled)
        self.defaults = compiled.construct_params()
        self.order = tuple(compiled.positiontup or ())

    def params(self, **values: Any) -> tuple[Any, ...]:
        merged = {**self.defaults, **values}
        return tuple(merged[name] for name in self.order)


_RECORD_COLUMNS = tuple(event_log.c[name] for name in RECORD_FIELDS)
_SEQ = event_log.c.seq
# read_records_after: the entries after a seq, in seq order, a page at a time.
_RECORDS_AFTER = (
    select(*_RECORD_COLUMNS)
    .where(bindparam("after", 0) < _SEQ)
    .order_by(_SEQ)
    .limit(bindparam("limit", 1, type_=Integer))
)


def _records_of_markets(markets: Sequence[str], *, other_markets: bool) -> Select[Any]:
    """read_records_of_markets: a seq range, the entries of some markets (or of the others) and those of none."""
    market = event_log.c.market
    chosen = market.not_in(markets) if other_markets else market.in_(markets)
    return (
        select(*_RECORD_COLUMNS, event_log.c.position_id)
        .where(bindparam("after", 0) < _SEQ, bindparam("until", 0) >= _SEQ, or_(chosen, market.is_(None), market == ""))
        .order_by(_SEQ)
        .limit(bindparam("limit", 1, type_=Integer))
    )


def _received_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """``received_at`` as the driver returns it -> what ``UtcDateTime`` makes of it (an aware UTC datetime).

    SQLite stores naive UTC text (``2026-11-29 12:00:00.000000``): one ``fromisoformat`` of it with ``+00:00``
    appended gives the same datetime (tzinfo ``UTC``) as the column type's processor (``fromisoformat``, then
    ``replace(tzinfo=UTC)``) in a sixth of the time. Anything else goes through the column type's processor."""
    process = event_log.c.received_at.type.dialect_impl(dialect).result_processor(dialect, None)
    if process is None:
        raise RuntimeError("received_at has no result processor")
    from_iso = datetime.fromisoformat

    def received(value: Any) -> datetime:
        if type(value) is str:
            try:
                moment = from_iso(value + "+00:00")
            except ValueError:
                pass
            else:
                if moment.tzinfo is UTC:
                    return moment
        processed = process(value)
        if not isinstance(processed, datetime):  # NOT NULL column: the processor returns a datetime
            raise TypeError(f"received_at read as {processed!r}")
        return processed

    return received


class _Batch:
    """One append's chain state: ``rows()`` yields the new rows in event_log's column order, hashing each onto the
    previous, and counts what it skips (duplicates, conflicts: same dedup_key stored or earlier in the batch)."""

    def __init__(self, head: int, prev: str, known: dict[str, tuple[int, str]]) -> None:
        self.head, self.prev, self.known = head, prev, known
        self.appended: list[int] = []
        self.clashes: list[dict[str, Any]] = []
        self.duplicates = self.conflicts = 0

    def rows(self, entries: Sequence[NewEntry], stamp: Callable[[datetime], object]) -> Iterator[tuple[Any, ...]]:
        known = self.known
        for entry in entries:
            seen = known.get(entry.dedup_key)
            if seen is not None:
                if seen[1] == entry.payload:
                    self.duplicates += 1
                else:
                    self.conflicts += 1
                    self.clashes.append(_conflict_row(entry, seen[0], seen[1]))
                continue
            head = self.head + 1
            prev = self.prev
            link = link_hash(prev, head, entry)
            known[entry.dedup_key] = (head, entry.payload)
            self.appended.append(head)
            self.head, self.prev = head, link
            # In event_log's column order (tests/test_event_log.py round-trips every field and the chain).
            yield (
                head,
                entry.account,
                entry.source,
                entry.channel,
                entry.event,
                entry.market,
                entry.order_id,
                entry.trade_id,
                entry.position_id,
                entry.event_id,
                entry.pre_event_id,
                entry.exchange_ts_us,
                stamp(entry.received_at),
                entry.connection_id,
                entry.payload,
                entry.dedup_key,
                prev,
                link,
            )


def _mid_statement(conn: Connection) -> bool:
    from psycopg import pq

    return _driver_connection(conn).pgconn.transaction_status == pq.TransactionStatus.ACTIVE


def _close_held(held: weakref.ref[_HeldConnection], _engine: Engine) -> None:
    kept = held()
    if kept is not None:
        kept.close(disposed=True)


class _HeldConnection:
    """One pooled connection kept checked out between appends (PostgreSQL's server-side append, SQLite's appends):
    the pool's pre-ping is a round trip on every checkout, 0.6 ms of a 1.7 ms one-row append (p50, this machine). A
    use that fails gives the connection back (the pool discards it if it was invalidated: a lost connection) and the
    next use checks a fresh one out, pinged as usual. ``close`` gives it back for good (the EventLog's finalizer calls
    it)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()  # one user at a time: appends of one EventLog from several threads queue here
        self._kept: list[Connection] = []

    @contextmanager
    def use(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._kept.pop() if self._kept else self._engine.connect()
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            if conn.invalidated:
                conn.close()
            else:
                self._kept.append(conn)

    def take_nowait(self) -> Connection | None:
        """The kept connection, taken out without waiting (None when none is kept or another use has it): for a
        caller that cannot block (one on an event loop). Give it back with ``give_back``."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._kept.pop() if self._kept else None
        finally:
            self._lock.release()

    def give_back(self, conn: Connection, *, failed: bool) -> None:
        """A connection from ``take_nowait``: kept again, or given back to the pool after a failed use (as ``use``)."""
        if failed or conn.invalidated:
            if not conn.invalidated and _mid_statement(conn):  # left half-way (its steps were closed): unusable
                conn.invalidate()
            conn.close()
            return
        with self._lock:
            self._kept.append(conn)

    def close(self, *, disposed: bool = False) -> None:
        """Give the kept connection back for good; ``disposed``: its engine was disposed, whose pool would keep it
        open, so its driver connection is closed now (invalidated)."""
        with self._lock:
            while self._kept:
                conn = self._kept.pop()
                if disposed:
                    conn.invalidate()
                conn.close()


_T = TypeVar("_T")


class StepsWait(IntEnum):
    """The steps' protocol, psycopg's (``psycopg.waiting.Wait``, the same values): each step yields what to wait for
    on the socket. Named here for the runtime, which drives the steps with trio and talks no SQL library itself, and
    defined here so that nothing imports psycopg before a PostgreSQL log is used (a test holds them to psycopg's)."""

    R = 1
    W = 2
    RW = 3


class StepsReady(IntEnum):
    """What is ready on the socket, sent to a step (``psycopg.waiting.Ready``, the same values)."""

    NONE = 0
    R = 1
    W = 2
    RW = 3


Steps: TypeAlias = Generator[int, int, _T]  # yields a StepsWait, is sent StepsReady flags (psycopg's PQGen)


class ServerAppendSteps(NamedTuple):
    """A PostgreSQL append without its I/O (``EventLog.server_append_steps``): drive ``steps`` as psycopg drives
    its own generators (each ``Wait`` yielded is answered with what is ``Ready`` on ``fileno``, the connection's
    socket) to its return value, the ``AppendResult``, or None when the function refused the batch."""

    fileno: int
    steps: PQGen[AppendResult | None]


class ServerAppendMismatch(RuntimeError):
    """The PostgreSQL append function stored a link this process does not compute: a bug, never expected."""


class EventLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._server_append = self._postgres  # until the function says it cannot (see _append_on_server)
        self.server_appends = 0  # appends done by the PostgreSQL function (the rest went the client's way)
        # PostgreSQL, the client's way (large batches): the dedup lookup is ~2.4 of the server's ~14 us a row (500-row
        # batches), and nearly always finds nothing. After a lookup that found nothing the next batch goes without:
        # the unique index refuses a stored key all the same (the whole transaction, nothing kept), and the batch is
        # then appended again with the lookup, which sorts duplicates from conflicts as always. A lookup that finds a
        # stored key (a replay, a reconnect's overlap) keeps the lookups on until one finds nothing again.
        self._look_first = True
        self.unlooked_retries = 0  # batches appended again with the lookup after the unique index refused them
        self._held = _HeldConnection(engine.execution_options(isolation_level="AUTOCOMMIT"))
        # The client's appends on one kept connection too (SQLite: BEGIN IMMEDIATE on it, as ``writer`` says): a
        # checkout, a new Connection and the check-in were a sixth of a one-row SQLite append's Python (the pool's
        # events, the reset on return); on PostgreSQL (large batches, conflicts) the checkout's pre-ping was a round
        # trip before every batch.
        self._held_writer = _HeldConnection(self._writer)
        for held in (self._held, self._held_writer):
            weakref.finalize(self, held.close)
            # ``engine.dispose()`` closes what the pool holds, not what is checked out: the kept connections go then
            # too (a SQLite file is whole, its WAL checkpointed, once the last connection closes).
            event.listen(engine, "engine_disposed", partial(_close_held, weakref.ref(held)))
        self._insert_sql, self._stamp = _fast_insert(engine.dialect)
        self._records = DriverQuery(_RECORDS_AFTER, engine.dialect)
        self._received = _received_reader(engine.dialect)

    # -- append --------------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[NewEntry], quarantine: Sequence[QuarantineItem] = ()) -> AppendResult:
        """Append ``entries`` (and store ``quarantine`` items) in one transaction.

        An entry whose ``dedup_key`` is stored already, or appeared earlier in the batch, is a duplicate when its
        payload is equal (skipped) and a conflict when it differs (kept in the quarantine with both payloads).
        """
        if not entries and not quarantine:
            return AppendResult((), 0, 0, 0, self.head_anchor())
        q_rows = [_quarantine_row(item) for item in quarantine]
        if any(map(_maybe_unfit, entries)):  # before any query: not even a lookup may carry them
            unfit = [(entry, _unfit(entry)) for entry in entries]
            q_rows += [_unfit_row(entry, reason) for entry, reason in unfit if reason is not None]
            entries = [entry for entry, reason in unfit if reason is None]
        look = not self._postgres or self._look_first
        if self._server_append and 0 < len(entries) <= SERVER_APPEND_MAX and not q_rows:
            done = self._append_on_server(entries)
            if done is not None:
                return done
            look = True  # the function refused a conflict: it is stored, and the lookup finds it at once
        if not look:
            try:
                return self._client_append(entries, q_rows, look=False)
            except exc.IntegrityError as error:
                if not _dedup_violation(error):
                    raise
                self.unlooked_retries += 1
        return self._client_append(entries, q_rows, look=True)

    def append_parts(self, parts: Sequence[Sequence[NewEntry]]) -> list[AppendResult]:
        """Several writers' batches appended as one (one transaction, one commit), each with its own result: what
        ``append`` of each in turn would have returned (the same rows, chain and quarantine; ``head`` is the combined
        append's). The client's way on both backends; every entry must fit (``entries_fit``). For the combined
        appends of several accounts in one process on SQLite (tracker/runtime/append_combiner.py)."""
        if any(map(_maybe_unfit, (entry for part in parts for entry in part))):
            raise ValueError("append_parts takes entries that fit the columns only (see entries_fit)")
        with self._write_transaction() as conn:
            keys = {entry.dedup_key for part in parts for entry in part}
            if self._postgres:
                head, prev, known = _pg_lock_and_look(conn, sorted(keys))
            else:
                head, prev, known = _sqlite_look(conn, keys)
            batch = _Batch(head, prev, known)
            marks: list[tuple[int, int, int, int]] = []  # each part's end: appended, duplicates, conflicts, clashes

            def rows() -> Iterator[tuple[Any, ...]]:
                for part in parts:
                    yield from batch.rows(part, self._stamp)
                    marks.append((len(batch.appended), batch.duplicates, batch.conflicts, len(batch.clashes)))

            self._insert(conn, rows())
            fresh = {id(row) for row in self._new_conflicts(conn, batch.clashes)} if batch.clashes else set()
            if fresh:
                stored = [row for row in batch.clashes if id(row) in fresh]
                conn.execute(_INSERT_QUARANTINE, [_fit(dict(row), self._postgres) for row in stored])
        anchor = Anchor(batch.head, batch.prev)
        results: list[AppendResult] = []
        before = (0, 0, 0, 0)
        for mark in marks:
            clashes = batch.clashes[before[3] : mark[3]]
            results.append(
                AppendResult(
                    tuple(batch.appended[before[0] : mark[0]]),
                    mark[1] - before[1],
                    mark[2] - before[2],
                    sum(id(row) in fresh for row in clashes),
                    anchor,
                )
            )
            before = mark
        return results

    @staticmethod
    def entries_fit(entries: Sequence[NewEntry]) -> bool:
        """Whether every entry fits the log's columns (else ``append`` quarantines it: ``append_parts`` refuses)."""
        return not any(map(_maybe_unfit, entries))

    def _client_append(self, entries: Sequence[NewEntry], q_rows: list[dict[str, Any]], *, look: bool) -> AppendResult:
        """The client's way: the append in one transaction on the kept connection. ``look`` False (PostgreSQL) skips
        the dedup lookup: see ``_look_first``."""
        with self._write_transaction() as conn:
            keys = {entry.dedup_key for entry in entries}
            if self._postgres:
                head, prev, known = _pg_lock_and_look(conn, sorted(keys) if look else [])
                self._look_first = bool(known)
            else:
                head, prev, known = _sqlite_look(conn, keys)
            batch = _Batch(head, prev, known)
            self._insert(conn, batch.rows(entries, self._stamp))
            head, prev, clashes = batch.head, batch.prev, batch.clashes
            if clashes:
                q_rows = q_rows + self._new_conflicts(conn, clashes)
            if q_rows:
                conn.execute(_INSERT_QUARANTINE, [_fit(dict(row), self._postgres) for row in q_rows])
        return AppendResult(tuple(batch.appended), batch.duplicates, batch.conflicts, len(q_rows), Anchor(head, prev))

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self._held_writer.use() as conn, conn.begin():
            yield conn

    def _append_on_server(self, entries: Sequence[NewEntry]) -> AppendResult | None:
        """PostgreSQL: the whole append in one statement, in autocommit (``tracker_append``, migration 0008): one round
        trip, and the write lock is taken and released (at the commit) inside the server. None when the function
        refused the batch (a conflict: the caller appends it the client's way, which quarantines it) or cannot run
        here at all (then never tried again by this process). Blocking; ``server_append_steps`` is the same append
        for a caller on an event loop."""
        with self._held.use() as conn:
            driver = _driver_connection(conn)
            return driver.wait(self._server_steps(conn, entries))

    def server_append_steps(self, entries: Sequence[NewEntry]) -> ServerAppendSteps | None:
        """``append(entries)`` as steps that never block, when it can go that way at once: on PostgreSQL with the
        append function, a batch the function takes (1 to ``SERVER_APPEND_MAX`` entries that fit the columns) and
        the kept connection free. Else None: call ``append`` (in a thread). Driven to its end, the steps return the
        ``AppendResult``, or None when the function refused the batch (a conflict): then call ``append`` too, which
        quarantines it. A failure raises what ``append`` would raise; the connection is given back either way."""
        if not self.server_append_fits(entries):
            return None
        conn = self._held.take_nowait()
        if conn is None:
            return None
        return ServerAppendSteps(_driver_connection(conn).pgconn.socket, self._held_steps(conn, entries))

    def server_append_fits(self, entries: Sequence[NewEntry]) -> bool:
        """Whether ``entries`` can go the server's way at all (``server_append_steps`` also needs the kept connection
        free, which ``hold_connection`` makes sure of)."""
        return self._server_append and 0 < len(entries) <= SERVER_APPEND_MAX and not any(map(_maybe_unfit, entries))

    def hold_connection(self) -> None:
        """Check the kept connection out now if none is kept (blocking: a pool checkout and its ping), so that
        ``server_append_steps`` finds it. Raises what a checkout raises (the database is down)."""
        with self._held.use():
            pass

    def _held_steps(self, conn: Connection, entries: Sequence[NewEntry]) -> PQGen[AppendResult | None]:
        failed = True
        try:
            result = yield from self._server_steps(conn, entries)
            failed = False
        finally:
            self._held.give_back(conn, failed=failed)
        return result

    def _server_steps(self, conn: Connection, entries: Sequence[NewEntry]) -> PQGen[AppendResult | None]:
        """The server append on ``conn`` (autocommit), as non-blocking steps. The server's links are checked: from the
        hash the new rows were linked onto, this process recomputes the chain over the rows the server numbered (its
        own hashing of the same text) and must reach the head hash the server stored. They agree unless something is
        badly wrong, which stops the writer loudly (the rows are committed; ``tracker verify`` names the first one
        whose hash does not hold)."""
        tails = [canonical_tail(entry) for entry in entries]
        columns: list[list[Any]] = list(map(list, zip(*map(_PG_APPEND_FIELDS, entries), strict=True)))
        columns[_RECEIVED_AT] = list(map(_aware, columns[_RECEIVED_AT]))
        columns.append(tails)
        try:
            row = yield from _pg_call(conn, _PG_APPEND, _PG_APPEND_SQL, columns, _PG_APPEND_TYPES)
        except exc.DBAPIError as error:
            code = getattr(error.orig, "sqlstate", None)
            if code == _PG_CONFLICT:
                return None
            if code in _PG_UNUSABLE:
                self._server_append = False
                return None
            raise
        if row is None:
            raise RuntimeError("tracker_append returned no row")
        appended, positions, duplicates, base, head, head_hash = row
        link = base
        for seq, position in zip(appended, positions, strict=True):
            link = tail_link(link, seq, tails[position - 1])
        if link != head_hash:
            raise ServerAppendMismatch(
                f"the PostgreSQL append function stored hashes this process does not compute (seqs {appended[0]}"
                f" to {head}): a bug; stop tracker and run `tracker verify`, then report it"
            )
        self.server_appends += 1
        return AppendResult(tuple(appended), duplicates, 0, 0, Anchor(head, head_hash), tuple(positions))

    def _insert(self, conn: Connection, rows: Iterator[tuple[Any, ...]]) -> None:
        """The hot path: plain tuples straight to the driver, no per-row SQLAlchemy processing.

        PostgreSQL: ``COPY ... FROM STDIN`` through psycopg's ``Cursor.copy()``. An ``executemany`` of INSERTs (even
        pipelined) makes the server parse, plan and execute one statement per row: 77 % of an append's time was the
        wait for the server (cProfile, batch 1000). COPY streams the rows into one executor pass, the same
        transaction, the same constraints (a duplicate ``dedup_key`` still aborts the append). The rows are made
        (hashed) while the COPY is open, so the server stores the first ones while this thread hashes the next.
        SQLite: ``executemany`` of one prepared INSERT is already one statement reused in-process."""
        if not self._postgres:
            if batch := list(rows):
                lite = _sqlite_cursor(conn)
                try:
                    with _translated(conn, self._insert_sql):
                        lite.executemany(self._insert_sql, batch)
                finally:
                    lite.close()
            return
        first = next(rows, None)
        if first is None:
            return
        with _translated(conn, _COPY_LOG), _driver_cursor(conn) as cursor, cursor.copy(_COPY_LOG) as copy:
            copy.set_types(_COPY_TYPES)
            copy.write_row(first)
            for row in rows:
                copy.write_row(row)

    def _head_of(self, conn: Connection) -> tuple[int, str]:
        row = conn.execute(select(event_log.c.seq, event_log.c.hash).order_by(event_log.c.seq.desc()).limit(1)).first()
        return (0, GENESIS) if row is None else (row.seq, row.hash)

    @staticmethod
    def _new_conflicts(conn: Connection, clashes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conflicts not quarantined yet: a replayed frame that conflicts again is counted, not stored twice."""
        keys = sorted({row["dedup_key"] for row in clashes})
        kept: set[tuple[str, str]] = set()
        for start in range(0, len(keys), _IN_CHUNK):
            query = select(quarantine.c.dedup_key, quarantine.c.raw).where(
                quarantine.c.kind == "conflict", quarantine.c.dedup_key.in_(keys[start : start + _IN_CHUNK])
            )
            kept.update((key, raw) for key, raw in conn.execute(query))
        fresh = []
        for row in clashes:
            if (row["dedup_key"], row["raw"]) not in kept:
                kept.add((row["dedup_key"], row["raw"]))
                fresh.append(row)
        return fresh

    # -- read ----------------------------------------------------------------------------------------------------

    def read_after(self, seq: int, limit: int = 1000, *, account: str | None = None) -> list[LogEntry]:
        """Up to ``limit`` entries with ``seq`` greater than the given one, in ``seq`` order."""
        query = select(*_LOG_COLUMNS).where(event_log.c.seq > seq).order_by(event_log.c.seq).limit(limit)
        if account is not None:
            query = query.where(event_log.c.account == account)
        with self.engine.connect() as conn:
            return [LogEntry(*row) for row in conn.execute(query)]

    def read_records_after(self, seq: int, limit: int = 1000) -> list[LogRecord]:
        """``read_after`` for the projector: the fields the parser reads (``LogRecord``), the same values.

        Through the driver's cursor: no per-row SQLAlchemy processing and no ``LogEntry``, about a third of
        ``read_after``'s CPU time (the rebuild reads every row of the log)."""
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self._records.sql, self._records.params(after=seq, limit=limit))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        received, new, record = self._received, tuple.__new__, LogRecord  # (a NamedTuple's own __new__ is Python)
        return [
            new(record, (seq, account, source, channel, event, payload, market, received(at), connection_id))
            for seq, account, source, channel, event, payload, market, at, connection_id in rows
        ]

    def read_records_of_markets(
        self, seq: int, limit: int, until: int, markets: Sequence[str], *, other_markets: bool = False
    ) -> list[tuple[LogRecord, str | None]]:
        """``read_records_after`` for a part of the log (``tracker rebuild`` in parallel): entries with ``seq`` in
        (``seq``, ``until``] whose market is one of ``markets`` (with ``other_markets``: is not one of them) or who
        have none, each with its ``position_id`` (an entry without a market goes with its position's)."""
        query = DriverQuery(_records_of_markets(markets, other_markets=other_markets), self.engine.dialect)
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(query.sql, query.params(after=seq, until=until, limit=limit))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        received, new, record = self._received, tuple.__new__, LogRecord
        return [
            (
                new(record, (seq, account, source, channel, event, payload, market, received(at), connection_id)),
                position,
            )
            for seq, account, source, channel, event, payload, market, at, connection_id, position in rows
        ]

    def iter_after(self, seq: int = 0, page: int = 1000) -> Iterator[list[LogEntry]]:
        """Pages of entries after ``seq`` until the head (as it moves), each page one short read transaction."""
        while batch := self.read_after(seq, page):
            yield batch
            seq = batch[-1].seq

    def head(self) -> int:
        """The newest seq, 0 for an empty log."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(event_log.c.seq), 0))).scalar_one())

    def head_anchor(self) -> Anchor:
        """The newest seq and its hash (``0:GENESIS`` for an empty log)."""
        with self.engine.connect() as conn:
            seq, hash_ = self._head_of(conn)
        return Anchor(seq, hash_)

    def head_hash(self) -> str:
        return self.head_anchor().hash

    def quarantined(self, after_id: int = 0, limit: int = 1000) -> list[QuarantineRow]:
        query = (
            select(*(quarantine.c[name] for name in _Q_FIELDS))
            .where(quarantine.c.id > after_id)
            .order_by(quarantine.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [QuarantineRow(*row) for row in conn.execute(query)]
