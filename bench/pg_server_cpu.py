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
from pathlib import Path

import psycopg

from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

sys.path.insert(0, str(Path(__file__).parent))
from append import chunks, make_entries  # bench/ is not a package: the sibling script's events (~330-byte orders)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TICK = os.sysconf("SC_CLK_TCK")


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
                log.append(make_entries(args.log, "log"))
                print(f"{'what':<34} {'wall ms':>8} {'client CPU':>11} {'server user':>12} {'server sys':>11}")
                for batch in (int(b) for b in args.batches.split(",")):
                    count = max(args.appends // batch, 200)  # the kernel counts CPU in ticks of 10 ms
                    pages = chunks(make_entries(count * batch, f"batch{batch}"), batch)

                    def run(pages: list[Sequence[object]] = pages) -> None:
                        for page in pages:
                            log.append(page)  # type: ignore[arg-type]

                    wall, cpu, user, system = measure(admin, database, run, count)
                    what = f"append, {batch} row{'s' if batch > 1 else ''} (function: {log.server_appends > 0})"
                    print(f"{what:<34} {wall:8.3f} {cpu:11.3f} {user:12.3f} {system:11.3f}")
            finally:
                engine.dispose()
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as raw:
                raw.execute("CREATE TABLE plain (id bigserial PRIMARY KEY, payload text)")
                payload = make_entries(1, "plain")[0].payload

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
