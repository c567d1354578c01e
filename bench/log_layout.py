"""What the event log would cost on disk per event with a redesigned row layout, on both backends, against its payload.

    .venv/bin/python bench/log_layout.py [--events 50000] [--no-pg]

A design study: nothing in tracker uses this layout. Builds today's log exactly as ``bench/log_size.py`` does (its
``fill``) in a SQLite file and a throwaway PostgreSQL database and prints its size ("today"); then copies it, in seq
order and in batches of 50 with a commit each (as a live run appends, so index pages fill as they would), into a
compact table of the same name in a new SQLite file (page sizes 4096, 8192, 16384; WAL) or PostgreSQL database:

- ``seq`` the primary key (SQLite: the rowid; PostgreSQL: fillfactor 100); no prev_hash (the previous row's hash);
  hash as 32 raw bytes; received_at as integer UTC microseconds on SQLite (PostgreSQL: timestamptz, 8 bytes);
- account, source, channel, event, market, connection_id as integers into one dictionary ``names(id, text UNIQUE)``
  ('ws', 'rest', 'tracker' are ids 1 to 3: the tracker index's predicate is the constant ``source = 3``);
- order_id, trade_id, position_id, event_id, pre_event_id, exchange_ts_us, payload as today;
- dedup_key NULL where it is ``'ws:' || account || ':' || channel || ':ev:' || event_id`` (a view would derive it);
  the UNIQUE index on ``dedup_digest``, the first 16 bytes of sha256(dedup_key), instead of on the key's text;
- today's other indexes: (account, seq) (PostgreSQL fillfactor 100), trade_id and event_id partial IS NOT NULL,
  (event, account, channel, seq) WHERE source = tracker; no channel index.

Variant "+event_key": the event_id index on an 8-byte integer digest instead of the ~36-character text (SQLite: a
stored column, sha256(event_id)'s first 8 bytes, as SQLite indexes no hash expression; PostgreSQL: an expression
index on ``hashtextextended(event_id, 0)``, nothing in the row); a lookup compares the digest, then the text.

Sizes as ``log_size.py``'s ``sqlite_sizes``/``pg_sizes``/``report`` give them, plus the ``names`` table and its
indexes. Deterministic: no timing. Target (issue 16): table + indexes <= 1.6 x payload bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

from log_size import BATCH, PG_ADMIN, fill, pg_sizes, report, sqlite_sizes

from tracker.domain.chain import to_us

PAGE_SIZES = (4096, 8192, 16384)
SEEDED = {"ws": 1, "rest": 2, "tracker": 3}
# Today's columns as read from the log, in this order (no prev_hash: the compact row does not keep it).
READ = (
    "SELECT seq, account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id,"
    " exchange_ts_us, received_at, connection_id, payload, dedup_key, hash FROM event_log ORDER BY seq"
)
# The compact table, physical column order (PostgreSQL: 8-byte values first, then 4-byte, then variable length).
SQLITE_TABLE = """CREATE TABLE event_log (seq INTEGER PRIMARY KEY, exchange_ts_us INTEGER, received_at INTEGER NOT NULL,
  account INTEGER NOT NULL, source INTEGER NOT NULL, channel INTEGER NOT NULL, event INTEGER NOT NULL,
  market INTEGER, connection_id INTEGER, order_id TEXT, trade_id TEXT, position_id TEXT, event_id TEXT,
  pre_event_id TEXT, payload TEXT NOT NULL, dedup_key TEXT, dedup_digest BLOB NOT NULL, hash BLOB NOT NULL {extra})"""
PG_TABLE = """CREATE TABLE event_log (seq bigint NOT NULL, exchange_ts_us bigint, received_at timestamptz NOT NULL,
  account integer NOT NULL, source integer NOT NULL, channel integer NOT NULL, event integer NOT NULL,
  market integer, connection_id integer, order_id text, trade_id text, position_id text, event_id text,
  pre_event_id text, payload text NOT NULL, dedup_key text, dedup_digest bytea NOT NULL, hash bytea NOT NULL,
  CONSTRAINT pk_event_log PRIMARY KEY (seq) WITH (fillfactor = 100))"""
INDEXES = (
    "CREATE UNIQUE INDEX uq_event_log_dedup_digest ON event_log (dedup_digest)",
    "CREATE INDEX ix_event_log_account_seq ON event_log (account, seq) {fill}",
    "CREATE INDEX ix_event_log_trade_id ON event_log (trade_id) WHERE trade_id IS NOT NULL",
    "CREATE INDEX ix_event_log_tracker ON event_log (event, account, channel, seq) WHERE source = 3",
)
EVENT_ID_TEXT = "CREATE INDEX ix_event_log_event_id ON event_log (event_id) WHERE event_id IS NOT NULL"
EVENT_KEY = {
    "sqlite": "CREATE INDEX ix_event_log_event_key ON event_log (event_key) WHERE event_key IS NOT NULL",
    "postgresql": "CREATE INDEX ix_event_log_event_key ON event_log ((hashtextextended(event_id, 0)))"
    " WHERE event_id IS NOT NULL",
}
NAMES = "CREATE TABLE names (id integer PRIMARY KEY, text text NOT NULL UNIQUE)"
LAYOUTS = (("compact", False), ("compact+event_key", True))


class Db(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...


def ddl(backend: str, event_key: bool) -> list[str]:
    sqlite = backend == "sqlite"
    table = SQLITE_TABLE.format(extra=", event_key INTEGER" if event_key else "") if sqlite else PG_TABLE
    indexes = [text.format(fill="" if sqlite else "WITH (fillfactor = 100)") for text in INDEXES]
    return [NAMES, table, *indexes, EVENT_KEY[backend] if event_key else EVENT_ID_TEXT]


def copy_log(rows: Iterable[Sequence[Any]], db: Db, mark: str, store_event_key: bool) -> int:
    """Append ``rows`` (``READ``'s columns) to the compact table in batches of ``BATCH``, each with the names it is
    the first to use, one commit per batch. Returns how many rows' dedup_key is the derived one (stored as NULL)."""
    names = dict(SEEDED)
    insert_row = "INSERT INTO event_log VALUES (" + ", ".join([mark] * (18 + store_event_key)) + ")"
    insert_name = "INSERT INTO names (id, text) VALUES (" + mark + ", " + mark + ")"
    cursor = db.cursor()
    fresh = [(number, text) for text, number in SEEDED.items()]
    batch: list[tuple[Any, ...]] = []
    derived = 0

    def ident(text: str | None) -> int | None:
        if text is None:
            return None
        if text not in names:
            names[text] = len(names) + 1
            fresh.append((names[text], text))
        return names[text]

    def flush() -> None:
        cursor.executemany(insert_name, fresh)
        cursor.executemany(insert_row, batch)
        db.commit()
        fresh.clear()
        batch.clear()

    for row in rows:
        seq, account, source, channel, event, market, *ids, ts, received, connection, payload, key, hash_hex = row
        event_id = ids[3]
        is_derived = event_id is not None and key == f"ws:{account}:{channel}:ev:{event_id}"
        derived += is_derived
        ints = [ident(text) for text in (account, source, channel, event, market, connection)]
        digest = hashlib.sha256(key.encode()).digest()[:16]
        values = (seq, ts, received, *ints, *ids, payload, None if is_derived else key, digest, bytes.fromhex(hash_hex))
        if store_event_key:
            short = None if event_id is None else hashlib.sha256(event_id.encode()).digest()[:8]
            values += (None if short is None else int.from_bytes(short, "big", signed=True),)
        batch.append(values)
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    return derived


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    """Today's SQLite log as ``READ`` rows, received_at as integer UTC microseconds."""
    with sqlite3.connect(path) as db:
        rows = db.execute(READ).fetchall()
    return [(*row[:12], to_us(datetime.fromisoformat(row[12]).replace(tzinfo=UTC)), *row[13:]) for row in rows]


def sqlite_names_sizes(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        counted = db.execute(
            "SELECT m.name, count(*) FROM sqlite_master m JOIN dbstat d ON d.name = m.name"
            " WHERE m.tbl_name = 'names' GROUP BY m.name"
        ).fetchall()
    return {name: pages * page for name, pages in counted}


def pg_names_sizes(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("VACUUM names")
        found = db.execute(
            "SELECT 'names', pg_table_size('names'::regclass) UNION ALL SELECT indexrelid::regclass::text,"
            " pg_relation_size(indexrelid) FROM pg_index WHERE indrelid = 'names'::regclass"
        ).fetchall()
    return {name: int(size) for name, size in found}


Result = tuple[str, str, int, float, float]  # layout, backend, page size, B/event, x payload


def measured(layout: str, backend: str, page: int, sizes: tuple[int, int, dict[str, int]]) -> Result:
    events, payload, objects = sizes
    report(f"{backend} {layout} (page {page})", events, payload, objects)
    total = sum(objects.values())
    return layout, backend, page, total / events, total / payload


def run_sqlite(events: int, tmp: Path) -> list[Result]:
    today = tmp / "log.db"
    fill(f"sqlite:///{today}", events)
    results = [measured("today", "sqlite", 4096, sqlite_sizes(str(today)))]  # SQLite's default page size
    rows = sqlite_rows(today)
    for layout, event_key in LAYOUTS:
        for page in PAGE_SIZES:
            path = tmp / f"{layout}-{page}.db"
            with sqlite3.connect(path) as db:
                # page_size before the first table: it sets the new file's page size
                db.executescript(f"PRAGMA page_size = {page}; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF")
                for statement in ddl("sqlite", event_key):
                    db.execute(statement)
                derived = copy_log(rows, db, "?", store_event_key=event_key)
            count, payload, sizes = sqlite_sizes(str(path))
            sizes |= sqlite_names_sizes(path)
            results.append(measured(layout, "sqlite", page, (count, payload, sizes)))
    print_derived("sqlite", derived, len(rows))
    return results


@contextmanager
def throwaway_db(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards: its URL (``postgresql+psycopg://``)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_pg(events: int) -> list[Result]:
    import psycopg

    def dsn(url: str) -> str:
        return url.replace("postgresql+psycopg://", "postgresql://", 1)

    with throwaway_db("tracker_bench") as url:
        fill(url, events)
        results = [measured("today", "postgresql", 8192, pg_sizes(url))]
        with psycopg.connect(dsn(url)) as source:
            rows = source.execute(READ).fetchall()
    for layout, event_key in LAYOUTS:
        with throwaway_db("tracker_layout") as url:
            with psycopg.connect(dsn(url)) as db:
                db.execute("SET synchronous_commit = off")  # speed only: the pages written are the same
                for statement in ddl("postgresql", event_key):
                    db.execute(statement)
                db.commit()
                derived = copy_log(rows, db, "%s", store_event_key=False)
            count, payload, sizes = pg_sizes(url)
            sizes |= pg_names_sizes(dsn(url))
            results.append(measured(layout, "postgresql", 8192, (count, payload, sizes)))
    print_derived("postgresql", derived, len(rows))
    return results


def print_derived(backend: str, derived: int, rows: int) -> None:
    print(f"\n{backend}: dedup_key derived (stored as NULL) in {derived:,} of {rows:,} rows = {derived / rows:.1%}")


def print_summary(results: list[Result]) -> None:
    today = {backend: per_event for layout, backend, _, per_event, _ in results if layout == "today"}
    print(f"\n{'layout':<20} {'backend':<11} {'page':>6} {'B/event':>8} {'x payload':>10} {'vs today':>9}")
    for layout, backend, page, per_event, ratio in results:
        change = per_event / today[backend] - 1
        print(f"{layout:<20} {backend:<11} {page:>6} {per_event:>8.0f} {ratio:>10.2f} {change:>+9.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_sqlite(args.events, Path(tmp))
    if not args.no_pg:
        results += run_pg(args.events)
    print_summary(results)


if __name__ == "__main__":
    main()
