"""Append throughput of the event log (hash chain and dedup on) against raw driver baselines of the same rows.

    .venv/bin/python bench/append.py [--events N] [--pg-url URL] [--no-pg]

For batches of 1, 100 and 1000 it appends fresh events through ``EventLog.append`` into SQLite (WAL, with
``synchronous`` FULL, tracker's default, and NORMAL) and PostgreSQL, and inserts the same rows with plain ``sqlite3``
``executemany`` (one transaction per batch, same schema, same pragmas, values prepared in advance: no hashing, no dedup
lookup, no SQLAlchemy) in the same run, interleaved, best of ``--repeat`` runs each (disks are noisy). ``ratio`` is
tracker / raw. Target: >= 50 % at batch 1000 with synchronous=FULL.

PostgreSQL's baselines insert the same rows into the same schema with plain psycopg, one transaction per batch:
``raw COPY`` (``cursor.copy()`` in binary, what tracker uses) and ``raw execmany`` (``executemany`` of INSERTs).
Target: tracker >= 50 % of raw COPY at batch 1000.

PostgreSQL: ``--pg-url`` or ``TRACKER_BENCH_PG_URL`` names an existing database to use (each measurement gets a
throwaway schema, dropped at the end); by default a throwaway database is created on
postgresql://postgres@127.0.0.1:5432 and dropped.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tracker.domain.log import NewEntry
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

BATCHES = (1, 100, 1000)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
COLUMNS = (
    "seq, account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id, "
    "exchange_ts_us, received_at, connection_id, payload, dedup_key, prev_hash, hash"
)
RAW_INSERT = "INSERT INTO event_log (" + COLUMNS + ") VALUES (" + ", ".join("?" * 18) + ")"
PG_INSERT = "INSERT INTO event_log (" + COLUMNS + ") VALUES (" + ", ".join(["%s"] * 18) + ")"
PG_COPY = "COPY event_log (" + COLUMNS + ") FROM STDIN (FORMAT BINARY)"
PG_COPY_TYPES = ["bigint"] + ["text"] * 10 + ["bigint", "timestamptz"] + ["text"] * 5  # COLUMNS' types


def make_entries(count: int, run: str) -> list[NewEntry]:
    """Realistic private frames: an order event of ~330 bytes with ids, exchange time and a connection."""
    entries = []
    for i in range(count):
        oid, ts = 1_800_000_000 + i, 1_764_417_600_000_000 + i
        payload = (
            f'{{"data":{{"id":{oid},"id_str":"{oid}","order_type":1,"datetime":"1764417600","microtimestamp":"{ts}",'
            '"amount":0.01,"amount_str":"0.01000000","amount_traded":"0","amount_at_create":"0.01000000",'
            '"price":95000,"price_str":"95000","client_order_id":""},"channel":"private-my_orders_btcusd-1001",'
            '"event":"order_created"}'
        )
        entries.append(
            NewEntry(
                account="1001",
                source="ws",
                channel="private-my_orders_btcusd-1001",
                event="order_created",
                payload=payload,
                dedup_key=f"{run}:ws:order_created:{1_800_000_000 + i}",
                received_at=T0 + timedelta(microseconds=i),
                market="btcusd",
                order_id=str(1_800_000_000 + i),
                event_id=f"ev-{run}-{i}",
                exchange_ts_us=1_764_417_600_000_000 + i,
                connection_id="bench-conn",
            )
        )
    return entries


def raw_rows(entries: Sequence[NewEntry]) -> list[tuple[object, ...]]:
    """The same rows as plain tuples, prepared before timing (the baseline does no per-row work at all)."""
    return [
        (
            seq,
            e.account,
            e.source,
            e.channel,
            e.event,
            e.market,
            e.order_id,
            e.trade_id,
            e.position_id,
            e.event_id,
            e.pre_event_id,
            e.exchange_ts_us,
            e.received_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            e.connection_id,
            e.payload,
            e.dedup_key,
            "0" * 64,
            "f" * 64,
        )
        for seq, e in enumerate(entries, start=1)
    ]


def chunks(items: Sequence[object], size: int) -> list[Sequence[object]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def timed(run: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def events_for(batch: int, events: int) -> int:
    return min(events, 300) if batch == 1 else events  # batch 1 is one fsync per event: keep it short


def bench_tracker(url: str, batch: int, count: int, *, synchronous: str = "FULL") -> float:
    migrate.upgrade(url)
    engine = open_engine(url, sqlite_synchronous=synchronous)
    try:
        log = EventLog(engine)
        pages = chunks(make_entries(count, uuid.uuid4().hex[:8]), batch)

        def run() -> None:
            for page in pages:
                log.append(page)  # type: ignore[arg-type]

        return timed(run, count)
    finally:
        engine.dispose()


def bench_raw_sqlite(path: Path, batch: int, count: int, *, synchronous: str) -> float:
    migrate.upgrade(f"sqlite:///{path}")  # the same schema, indexes and triggers
    pages = chunks(raw_rows(make_entries(count, "raw")), batch)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=" + synchronous)

        def run() -> None:
            for page in pages:
                conn.execute("BEGIN")
                conn.executemany(RAW_INSERT, page)
                conn.execute("COMMIT")

        return timed(run, count)
    finally:
        conn.close()


def bench_raw_postgres(url: str, batch: int, count: int, *, method: str) -> float:
    """The same rows (aware ``received_at``, hex hashes) with plain psycopg: ``executemany`` of INSERTs or ``COPY``,
    one transaction per batch, no hashing, no dedup lookup, no lock, no SQLAlchemy."""
    import psycopg

    migrate.upgrade(url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    entries = make_entries(count, "raw")
    rows = [(*row[:12], entry.received_at, *row[13:]) for row, entry in zip(raw_rows(entries), entries, strict=True)]
    pages = chunks(rows, batch)
    with psycopg.connect(plain) as conn:

        def run() -> None:
            for page in pages:
                with conn.transaction(), conn.cursor() as cursor:
                    if method == "copy":
                        with cursor.copy(PG_COPY) as copy:
                            copy.set_types(PG_COPY_TYPES)
                            for row in page:
                                copy.write_row(row)
                    else:
                        cursor.executemany(PG_INSERT, page)

        return timed(run, count)


@contextmanager
def postgres_database(given: str | None) -> Iterator[str]:
    """The bench database's URL: ``given``, or a throwaway database created here and dropped afterwards."""
    import psycopg

    if given:
        yield given
        return
    name = f"tracker_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def schemas(database_url: str) -> Iterator[Callable[[], str]]:
    """A factory of URLs, each for a new empty schema in the bench database; all dropped at the end."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(database_url).set(drivername="postgresql", query={})
    plain = base.render_as_string(hide_password=False)
    made: list[str] = []

    def fresh() -> str:
        schema = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        made.append(schema)
        return base.set(query={"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)

    try:
        yield fresh
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            for schema in made:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement (batch 1: at most 300)")
    parser.add_argument("--pg-url", default=os.environ.get("TRACKER_BENCH_PG_URL"), help="existing PostgreSQL db")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is shown (default 3)")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, int, int, float, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        for synchronous in () if args.no_sqlite else ("FULL", "NORMAL"):
            for batch in BATCHES:
                count = events_for(batch, args.events)
                ours: list[float] = []
                raw: list[float] = []
                for attempt in range(args.repeat):  # interleaved, each on a fresh file; the best of each is kept
                    tag = f"{synchronous}-{batch}-{attempt}"
                    db = Path(tmp) / f"{tag}.db"
                    ours.append(bench_tracker(f"sqlite:///{db}", batch, count, synchronous=synchronous))
                    raw.append(bench_raw_sqlite(Path(tmp) / f"{tag}-raw.db", batch, count, synchronous=synchronous))
                rows.append(("sqlite WAL", f"sync={synchronous}", batch, count, max(ours), max(raw)))
    if not args.no_pg:
        try:
            with postgres_database(args.pg_url) as database, schemas(database) as fresh:
                for batch in BATCHES:
                    count = events_for(batch, args.events)
                    ours, copy, many = [], [], []
                    for _ in range(args.repeat):  # interleaved, each in a fresh schema; the best of each is kept
                        ours.append(bench_tracker(fresh(), batch, count))
                        copy.append(bench_raw_postgres(fresh(), batch, count, method="copy"))
                        many.append(bench_raw_postgres(fresh(), batch, count, method="executemany"))
                    rows.append(("postgresql", "raw COPY", batch, count, max(ours), max(copy)))
                    rows.append(("postgresql", "raw execmany", batch, count, max(ours), max(many)))
        except Exception as exc:  # report and carry on: the SQLite figures are still worth printing
            print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)

    print(
        f"{'backend':<12} {'setting':<12} {'batch':>5} {'events':>7} {'tracker ev/s':>13} {'raw ev/s':>10} {'ratio':>6}"
    )
    for backend, setting, batch, count, ours, raw in rows:
        raw_text = f"{raw:10,.0f}" if raw else f"{'-':>10}"
        ratio = f"{ours / raw:6.0%}" if raw else f"{'-':>6}"
        print(f"{backend:<12} {setting:<12} {batch:>5} {count:>7} {ours:13,.0f} {raw_text} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
