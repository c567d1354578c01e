"""PostgreSQL: the server's CPU per append (what every other tracker on the same database waits for), beside a plain
INSERT of the same payload in the same database, in the same run.

    .venv/bin/python bench/pg_server_cpu.py [--appends 3000] [--log 20000] [--batches 1,10,100]

Creates a throwaway database on postgresql://postgres@127.0.0.1:5432, migrates it, appends ``--log`` events (one
batch), then for each batch size appends ``--appends`` events (in at least 200 appends) through ``EventLog.append``
(the live path: the ``tracker_append`` function for batches of up to 100) and reads the CPU time of every backend of
the database from ``/proc/PID/stat`` before and after (so it needs the server on this machine). Per append: wall ms,
this process's CPU ms, the server's user and system CPU ms. The baseline: one-row ``INSERT`` in autocommit of the
same payload into a plain table (``id bigserial``, ``payload text``) with psycopg, same connection settings, same
fsync.

With 20 trackers on 2 cores (``bench/accounts.py``) every append's CPU, the server's included, is time the others
wait for a core: this is the figure migration 0010 (docs/storage.md) cut.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tracker.domain.log import NewEntry
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TICK = os.sysconf("SC_CLK_TCK")


def entry(i: int) -> NewEntry:
    """An order event of ~330 bytes, as bench/append.py's."""
    oid, ts = 1_800_000_000 + i, 1_764_417_600_000_000 + i
    payload = (
        f'{{"data":{{"id":{oid},"id_str":"{oid}","order_type":1,"datetime":"1764417600","microtimestamp":"{ts}",'
        '"amount":0.01,"amount_str":"0.01000000","amount_traded":"0","amount_at_create":"0.01000000",'
        '"price":95000,"price_str":"95000","client_order_id":""},"channel":"private-my_orders_btcusd-1001",'
        '"event":"order_created"}'
    )
    return NewEntry(
        account="1001",
        source="ws",
        channel="private-my_orders_btcusd-1001",
        event="order_created",
        payload=payload,
        dedup_key=f"ws:1001:private-my_orders_btcusd-1001:ev:{i}",
        received_at=T0 + timedelta(microseconds=i),
        market="btcusd",
        order_id=str(oid),
        event_id=f"ev-{i}",
        exchange_ts_us=ts,
        connection_id="bench",
    )


def server_cpu(admin: psycopg.Connection, database: str) -> tuple[float, float]:
    """(user, system) CPU seconds of every backend connected to ``database`` but ``admin``'s own."""
    user = system = 0.0
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
    ).fetchall()
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a backend that ended between the query and the read
            continue
        user += int(fields[11]) / TICK
        system += int(fields[12]) / TICK
    return user, system


def measure(
    admin: psycopg.Connection, database: str, run: Callable[[], None], count: int
) -> tuple[float, float, float, float]:
    """(wall ms, client CPU ms, server user ms, server system ms) per one of ``count`` operations of ``run``."""
    user0, system0 = server_cpu(admin, database)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    user, system = server_cpu(admin, database)
    return tuple(1000 * x / count for x in (wall, cpu, user - user0, system - system0))  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appends", type=int, default=3000, help="events appended per batch size")
    parser.add_argument("--log", type=int, default=20_000, help="events in the log before the measurement")
    parser.add_argument("--batches", default="1,10,100", help="batch sizes (the function takes up to 100)")
    args = parser.parse_args(argv)

    database = f"tracker_bench_cpu_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
            migrate.upgrade(url)
            engine = open_engine(url)
            try:
                log = EventLog(engine)
                log.append([entry(i) for i in range(args.log)])
                print(f"{'what':<34} {'wall ms':>8} {'client CPU':>11} {'server user':>12} {'server sys':>11}")
                seq = args.log
                for batch in (int(b) for b in args.batches.split(",")):
                    count = max(args.appends // batch, 200)  # the kernel counts CPU in ticks of 10 ms
                    pages = [[entry(seq + k * batch + j) for j in range(batch)] for k in range(count)]
                    seq += count * batch

                    def run(pages: list[list[NewEntry]] = pages) -> None:
                        for page in pages:
                            log.append(page)

                    wall, cpu, user, system = measure(admin, database, run, count)
                    what = f"append, {batch} row{'s' if batch > 1 else ''} (function: {log.server_appends > 0})"
                    print(f"{what:<34} {wall:8.3f} {cpu:11.3f} {user:12.3f} {system:11.3f}")
            finally:
                engine.dispose()
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as raw:
                raw.execute("CREATE TABLE plain (id bigserial PRIMARY KEY, payload text)")
                payload = entry(0).payload

                def plain() -> None:
                    for _ in range(args.appends):
                        raw.execute("INSERT INTO plain (payload) VALUES (%s)", (payload,))

                wall, cpu, user, system = measure(admin, database, plain, args.appends)
                print(f"{'baseline: plain one-row INSERT':<34} {wall:8.3f} {cpu:11.3f} {user:12.3f} {system:11.3f}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
