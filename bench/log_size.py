"""What the event log costs on disk per event, table and each index, against its payload bytes, on both backends.

    .venv/bin/python bench/log_size.py [--events 100000] [--db-url URL] [--no-pg]

Builds a log of ``--events`` private frames made by the fake exchange's model (orders, fills, self trades,
settlements, liquidations), appended through ``EventLog.append`` in batches of 50 as a live run commits them, with
what ``tracker run`` stores beside each frame (the account, a connection id per ~2,000 frames as
``ws-<uuid4 hex>``, receive times a few ms apart), into a fresh SQLite file and a throwaway PostgreSQL database;
or measures an existing log (``--db-url``, e.g. a demo database). Prints bytes per event of the table (with
PostgreSQL's TOAST) and of each index, their total, and the ratio to the payload (the frames' UTF-8 bytes).
Target (issue 16): table + indexes <= 1.6 x payload on both backends. Sizes are deterministic: no timing here.

SQLite sizes come from ``dbstat`` (pages in use, each page counted whole: the slack inside pages is part of the
cost), PostgreSQL's from ``pg_relation_size`` after ``VACUUM`` (the visibility map and free space map included).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.log import NewEntry
from tracker.fake.model import AccountModel
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
BATCH = 50


def entries(count: int) -> Iterator[NewEntry]:
    model = AccountModel(7, MARKETS)
    made = step = 0
    connection = f"ws-{uuid.uuid4().hex}"
    while made < count:
        for emission in model.step(1_790_000_000_000_000 + step * 250_000):
            if made % 2_000 == 0:
                connection = f"ws-{uuid.uuid4().hex}"
            at = T0 + timedelta(microseconds=made * 3_917)
            entry = entry_from_frame(emission.text, account="314159", received_at=at, connection_id=connection)
            if isinstance(entry, NewEntry):
                yield entry
                made += 1
                if made == count:
                    return
        step += 1


def fill(url: str, count: int) -> None:
    migrate.upgrade(url)
    engine = open_engine(url, sqlite_synchronous="OFF")
    try:
        log = EventLog(engine)
        batch: list[NewEntry] = []
        for entry in entries(count):
            batch.append(entry)
            if len(batch) == BATCH:
                log.append(batch)
                batch = []
        if batch:
            log.append(batch)
    finally:
        engine.dispose()


def sqlite_sizes(path: str) -> tuple[int, int, dict[str, int]]:
    """(events, payload bytes, bytes per object: the table and each of its indexes)."""
    with sqlite3.connect(path) as db:
        events, payload = db.execute("SELECT count(*), sum(length(CAST(payload AS BLOB))) FROM event_log").fetchone()
        names = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'event_log'")]
        page = db.execute("PRAGMA page_size").fetchone()[0]
        sizes = {}
        for name in names:
            pages = db.execute("SELECT count(*) FROM dbstat WHERE name = ?", (name,)).fetchone()[0]
            if pages:
                sizes[name] = pages * page
    return events, payload or 0, sizes


def pg_sizes(url: str) -> tuple[int, int, dict[str, int]]:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("VACUUM event_log")
        counted = db.execute("SELECT count(*), sum(octet_length(payload)) FROM event_log").fetchone()
        table = db.execute("SELECT pg_table_size('event_log'::regclass)").fetchone()  # heap, TOAST, maps
        if counted is None or table is None:
            raise RuntimeError("no answer from PostgreSQL")
        events, payload = counted
        sizes = {"event_log (with TOAST)": int(table[0])}
        for name, size in db.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
            " WHERE indrelid = 'event_log'::regclass"
        ):
            sizes[name] = size
    return events, int(payload or 0), sizes


def report(backend: str, events: int, payload: int, sizes: dict[str, int]) -> None:
    total = sum(sizes.values())
    print(f"\n{backend}: {events:,} events, payload {payload / events:.0f} B/event")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"  {name:<40} {size / events:>8.0f} B/event")
    print(f"  {'table + indexes':<40} {total / events:>8.0f} B/event  = {total / payload:.2f} x payload")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--db-url", help="measure this existing log instead of building one")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    if args.db_url:
        given = make_url(args.db_url)
        if given.get_backend_name() == "sqlite":
            report("sqlite", *sqlite_sizes(str(given.database)))
        else:
            report("postgresql", *pg_sizes(args.db_url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        fill(f"sqlite:///{path}", args.events)
        report("sqlite", *sqlite_sizes(str(path)))
    if args.no_pg:
        return
    import psycopg

    name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        print(f"(PostgreSQL not reachable at {PG_ADMIN}: {error}; skipped)", file=sys.stderr)
        return
    try:
        url = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + "/" + name
        fill(url, args.events)
        report("postgresql", *pg_sizes(url))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
