"""Rebuild throughput and the fee query, against a raw read-and-``json.loads`` baseline (SQLite, and PostgreSQL).

    .venv/bin/python bench/rebuild.py [--events N] [--fills N] [--skip-fills] [--runs N] [--keep DIR] [--dir DIR]
                                      [--pg-url postgresql://postgres@127.0.0.1:5432/postgres] [--contention]

1. Generates a log of ``--events`` (default 1,000,000) private frames from the fake exchange's model (orders, fills,
   self trades, settlements, liquidations: every case) into a fresh SQLite database (through ``EventLog.append``, so
   the hash chain is real), and a second log of ``--fills`` (default 1,000,000) fills (``my_trades`` frames over
   4 markets and ~2 years of days). ``--keep DIR`` keeps them there and reuses them next time (1M events take
   ~4 minutes to generate).
2. In a child process each (so peak RSS is the measured step's own): ``tracker rebuild``'s logic
   (``tracker.store.rebuild.rebuild``) over the first log, as ``tracker rebuild`` runs it (two worker processes
   when the log allows, see ``rebuild_parallel.py``) and in one process (``parallel=False``), and the baseline that
   only reads ``payload`` in ``seq`` order with raw ``sqlite3`` and ``json.loads`` it. Each reports wall and CPU
   seconds (all its processes' CPU; on a shared machine the wall time includes waiting for a core) and the peak
   RSS of its largest process. ``--runs N``: each of these N times, the fastest kept.
3. Rebuilds the fills log (also timed) and times ``SELECT * FROM v_fees_daily`` through tracker's engine (best of 5),
   beside ``SELECT day, market, SUM(fee) ... FROM v_fills GROUP BY ...`` (the exact ``sum`` over 1M rows) for scale.
4. ``--pg-url`` (an admin URL): creates a throwaway database ``tracker_bench_<hex>``, copies the first log into it
   (``COPY``, row for row), times the same baseline over psycopg and ``tracker rebuild`` on it (two worker processes
   reading the log from the server, as on SQLite, and in one process), and drops the database.

5. ``--contention``: each half of the two-process rebuild's fold alone, then both at once (each in a process of its
   own), ``--runs`` rounds: each half's CPU seconds alone and beside the other, and their ratio. What the two
   workers cost each other on this machine bounds the two-process rebuild whatever its serial parts cost.

The ratio column is the step's wall time per event over its backend's baseline's, in the same run.
Targets (issue 16): rebuild <= 2.5 x the baseline with two processes, <= 4 x in one; peak RSS <= 300 MB; the fee
query <= 1 s on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import select, text

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.log import NewEntry
from tracker.fake.model import AccountModel
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import VIEWS
from tracker.store.projections import BATCH
from tracker.store.rebuild import rebuild
from tracker.store.rebuild_parallel import (
    WorkerSpec,
    fold_part,
    make_plan,
    peak_rss_mb,  # VmHWM: ru_maxrss carries over a parent's peak
)
from tracker.store.schema import event_log

MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
T0_US = 1_790_000_000_000_000
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
APPEND_BATCH = 20_000


def model_frames(count: int, seed: int = 1) -> Iterator[str]:
    model = AccountModel(seed, MARKETS)
    made = step = 0
    while made < count:
        for emission in model.step(T0_US + step * 250_000):
            yield emission.text
            made += 1
            if made == count:
                return
        step += 1


def fill_frames(count: int) -> Iterator[str]:
    """Fills only: 4 markets, ~1,400 fills a day (so ~700 days), exact decimal text. As on Bitstamp, an order and a
    position belong to one market: each order has 3 fills, each perp market its own 997 positions."""
    for i in range(count):
        market = MARKETS[i % 4]
        us = T0_US + i * 61_700_000
        position = f'"{1000 + (i % 997) * 4 + i % 4}"' if market.endswith("-perp") else "null"
        order = 20_000_000 + (i // 12) * 4 + i % 4
        yield (
            f'{{"event":"trade","channel":"private-my_trades_{market}-314159","data":{{"id":{10_000_000 + i},'
            f'"order_id":{order},"side":"{"buy" if i % 3 else "sell"}","amount":"0.{i % 9973:08d}",'
            f'"price":"{60000 + i % 5000}.{i % 100:02d}","fee":"0.{i % 7919:06d}","microtimestamp":"{us}",'
            f'"trade_account_id":0,"position_id":{position}}}}}'
        )


def generate(path: Path, frames: Iterator[str]) -> int:
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    engine = open_engine(url, sqlite_synchronous="OFF")
    log = EventLog(engine)
    batch: list[NewEntry] = []
    total = 0
    for frame in frames:
        entry = entry_from_frame(frame, account="acc", received_at=NOW, connection_id="bench")
        if not isinstance(entry, NewEntry):
            raise TypeError(f"generator made an unloggable frame: {entry}")
        batch.append(entry)
        if len(batch) == APPEND_BATCH:
            total += len(log.append(batch).appended)
            batch = []
    if batch:
        total += len(log.append(batch).appended)
    engine.dispose()
    return total


def made(path: Path, frames: Callable[[], Iterator[str]], what: str) -> int:
    """Generate ``path`` unless it is complete already (``--keep``: a log generated by an earlier run)."""
    if path.exists() and not path.with_name(path.name + ".partial").exists():
        with sqlite3.connect(path) as conn:
            n = int(conn.execute("SELECT count(*) FROM event_log").fetchone()[0])
        print(f"reusing {path} ({n:,} {what} events)", flush=True)
        return n
    path.with_name(path.name + ".partial").touch()
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    n = generate(path, frames())
    # Written with synchronous=OFF: the file's pages go to disk now, not while the first timed step runs.
    os.sync()
    path.with_name(path.name + ".partial").unlink()
    print(f"generated {n:,} {what} events in {time.perf_counter() - started:.1f} s", flush=True)
    return n


# -- child steps (one process each) -----------------------------------------------------------------------------


def timed_rebuild(url: str, parallel: bool | None = None, reader: bool | None = None) -> dict[str, float]:
    """One rebuild, ``parallel`` and ``reader`` as ``rebuild``'s (``reader``: the one-process fold's reading-and-parsing
    child; the "one process" steps turn it off, so that one process is one process)."""
    engine = open_engine(url)
    cpu = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = rebuild(engine, parallel=parallel, reader=reader)
    finally:
        engine.dispose()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the workers' CPU comes in the result (they may not be reaped yet); the reader's from its reaped process
    reader_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime if result.workers == 1 else 0.0
    return {
        "events": result.events,
        "seconds": result.seconds,
        "cpu": time.process_time() - cpu + result.worker_cpu_seconds + reader_cpu,
        "rss_mb": max(peak_rss_mb(), result.worker_peak_rss_mb),  # the largest process's
        "workers": result.workers + (1 if reader_cpu else 0),
    }


def step_rebuild(path: Path, parallel: bool | None = None) -> dict[str, float]:
    return timed_rebuild(f"sqlite:///{path}", parallel)


def read_baseline(connect: Callable[[], AbstractContextManager[Any]], query: str) -> dict[str, float]:
    """The baseline: ``payload`` in ``seq`` order, pages of 5,000 (``query``, its one parameter the last ``seq``),
    ``json.loads`` each. ``connect()`` opens a ``sqlite3`` or psycopg connection (both have ``execute(query, params)``)
    and closes it on exit; the time includes connecting and closing."""
    started, cpu = time.perf_counter(), time.process_time()
    rows = last = 0
    with connect() as conn:
        while page := conn.execute(query, (last,)).fetchall():
            for seq, payload in page:
                json.loads(payload)
                last = seq
            rows += len(page)
    return {"events": rows, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "rss_mb": peak_rss_mb()}  # fmt: skip


def step_baseline(path: Path) -> dict[str, float]:
    return read_baseline(
        lambda: closing(sqlite3.connect(path)),
        "SELECT seq, payload FROM event_log WHERE seq > ? ORDER BY seq LIMIT 5000",
    )


def step_fees(path: Path) -> dict[str, float]:
    engine = open_engine(f"sqlite:///{path}", write=False)
    view = VIEWS["v_fees_daily"]
    best = best_sum = float("inf")
    try:
        with engine.connect() as conn:
            fills = conn.execute(text("SELECT count(*) FROM v_fills")).scalar_one()
            for _ in range(5):
                started = time.perf_counter()
                days = conn.execute(select(view).order_by(view.c.day, view.c.market)).all()
                best = min(best, time.perf_counter() - started)
            for _ in range(2):
                started = time.perf_counter()
                summed = conn.execute(
                    text("SELECT substr(executed_at, 1, 10) AS day, market, count(*), SUM(fee) FROM v_fills"
                         " GROUP BY day, market")
                ).all()  # fmt: skip
                best_sum = min(best_sum, time.perf_counter() - started)
    finally:
        engine.dispose()
    return {"fills": fills, "rows": len(days), "seconds": best, "sum_rows": len(summed), "sum_seconds": best_sum,
            "rss_mb": peak_rss_mb()}  # fmt: skip


def step_rebuild_one(path: Path) -> dict[str, float]:
    return timed_rebuild(f"sqlite:///{path}", parallel=False, reader=False)


def step_rebuild_reader(path: Path) -> dict[str, float]:
    """The fold in one process, the log read and parsed by a child (``rebuild_reader.py``): a one-market log's."""
    return timed_rebuild(f"sqlite:///{path}", parallel=False, reader=True)


def step_half(path: Path, part: int) -> dict[str, float]:
    """One half of the two-process rebuild's fold (``rebuild_parallel.fold_part``: the worker's read, fold and
    scratch file) in this process; its plan is made first and not timed."""
    url = f"sqlite:///{path}"
    engine = open_engine(url)
    try:
        plan = make_plan(engine)
    finally:
        engine.dispose()
    if plan is None:
        raise SystemExit(f"{path}: the log cannot be split in two (too short, or one group of markets)")
    with tempfile.TemporaryDirectory() as scratch:
        started, cpu = time.perf_counter(), time.process_time()
        result = fold_part(WorkerSpec(part, url, str(Path(scratch) / "part.db"), plan, BATCH))
        return {"events": result.events, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                "rss_mb": peak_rss_mb()}  # fmt: skip


def halves_side_by_side(path: Path) -> list[dict[str, float]]:
    """Both halves at once, each in a process of its own (as the parallel rebuild runs its workers)."""
    running = [
        subprocess.Popen(
            [sys.executable, __file__, "--step", f"half-{part}", str(path)], stdout=subprocess.PIPE, text=True
        )
        for part in range(2)
    ]
    results = []
    for process in running:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a half's process failed (exit code {process.returncode})")
        results.append(dict(json.loads(out.strip().splitlines()[-1])))
    return results


def contention(path: Path, rounds: int) -> None:
    """Print each half's CPU seconds alone and beside the other, ``rounds`` times: what the two workers cost each
    other on this machine (shared caches, memory bandwidth, the host), the bound of the two-process rebuild that
    no change to its serial parts moves (docs/storage.md, stop 34)."""
    print("\ntwo halves of the fold (rebuild_parallel.fold_part), CPU s: alone -> side by side")
    for _ in range(rounds):
        alone = [child(f"half-{part}", path) for part in range(2)]
        together = halves_side_by_side(path)
        print(
            "  "
            + "; ".join(
                f"half {part}: {a['cpu']:.2f} -> {b['cpu']:.2f} ({b['cpu'] / a['cpu']:.2f} x)"
                for part, (a, b) in enumerate(zip(alone, together, strict=True))
            ),
            flush=True,
        )


# -- PostgreSQL (--pg-url): the same log copied into a throwaway database -----------------------------------------


def pg_database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def pg_throwaway(admin_url: str) -> Iterator[str]:
    """A fresh database ``tracker_bench_<hex>`` made through ``admin_url`` (its URL), dropped afterwards."""
    name = f"tracker_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_database_url(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def copy_log_to_pg(path: Path, url: str) -> int:
    """Migrate ``url`` and copy the SQLite log at ``path`` into it, row for row (the hash chain as it is)."""
    migrate.upgrade(url)
    columns = [column.name for column in event_log.columns]
    at = columns.index("received_at")
    copied = 0
    source = sqlite3.connect(path)
    try:
        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            statement = sql.SQL("COPY event_log ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cursor.copy(statement) as copy:
                rows = source.execute(f"SELECT {', '.join(columns)} FROM event_log ORDER BY seq")
                while page := rows.fetchmany(10_000):
                    for row in page:
                        values = list(row)
                        values[at] = datetime.fromisoformat(values[at]).replace(tzinfo=UTC)  # naive UTC text
                        copy.write_row(values)
                    copied += len(page)
            cursor.execute("ANALYZE event_log")
    finally:
        source.close()
    return copied


def step_pg_rebuild(url: str) -> dict[str, float]:
    return timed_rebuild(url)


def step_pg_rebuild_reader(url: str) -> dict[str, float]:
    return timed_rebuild(url, parallel=False, reader=True)


def step_pg_rebuild_one(url: str) -> dict[str, float]:
    return timed_rebuild(url, parallel=False, reader=False)


def step_pg_baseline(url: str) -> dict[str, float]:
    """The SQLite baseline over psycopg."""
    return read_baseline(
        lambda: psycopg.connect(url), "SELECT seq, payload FROM event_log WHERE seq > %s ORDER BY seq LIMIT 5000"
    )


STEPS: dict[str, Callable[[Path], dict[str, float]]] = {
    "rebuild": step_rebuild,
    "rebuild-one": step_rebuild_one,
    "rebuild-reader": step_rebuild_reader,
    "baseline": step_baseline,
    "fees": step_fees,
    "half-0": lambda path: step_half(path, 0),
    "half-1": lambda path: step_half(path, 1),
}
PG_STEPS: dict[str, Callable[[str], dict[str, float]]] = {
    "pg-rebuild": step_pg_rebuild,
    "pg-rebuild-one": step_pg_rebuild_one,
    "pg-rebuild-reader": step_pg_rebuild_reader,
    "pg-baseline": step_pg_baseline,
}


def child(step: str, target: Path | str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, str(target)], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def best_of(runs: int, step: str, target: Path | str) -> dict[str, float]:
    """The fastest of ``runs`` runs of a step (the machine is shared: the others waited for a core longer)."""
    return min((child(step, target) for _ in range(runs)), key=lambda r: r["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where to put the databases (default: a temporary directory)")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the generated databases in DIR and reuse them when they are there already (same --events and"
        " --fills: the counts are in the file names)",
    )
    parser.add_argument("--runs", type=int, default=1, help="run each timed step this many times, keep the best")
    parser.add_argument(
        "--pg-url",
        metavar="URL",
        help="also rebuild on PostgreSQL: a throwaway database tracker_bench_<hex> made through this admin URL"
        " (e.g. postgresql://postgres@127.0.0.1:5432/postgres), the model log copied into it, dropped afterwards",
    )
    parser.add_argument("--skip-fills", action="store_true", help="no fills log, no fee query")
    parser.add_argument(
        "--contention",
        action="store_true",
        help="also fold each half of the two-process rebuild alone, then both at once, --runs times: what the two"
        " workers cost each other on this machine",
    )
    parser.add_argument("--step", nargs=2, metavar=("STEP", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        step, target = args.step
        print(json.dumps(PG_STEPS[step](target) if step in PG_STEPS else STEPS[step](Path(target))))
        return 0
    with nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        mixed, fills = Path(tmp) / f"mixed-{args.events}.db", Path(tmp) / f"fills-{args.fills}.db"
        n = made(mixed, lambda: model_frames(args.events), "model")
        if not args.skip_fills:
            made(fills, lambda: fill_frames(args.fills), "fill")
        base = best_of(args.runs, "baseline", mixed)
        built_one = best_of(args.runs, "rebuild-one", mixed)
        built_reader = best_of(args.runs, "rebuild-reader", mixed)
        built = best_of(args.runs, "rebuild", mixed)
        rows = [
            ("baseline: sqlite3 read + json.loads", base, base),
            ("tracker rebuild, one process (model log)", built_one, base),
            ("tracker rebuild, one fold + reader", built_reader, base),
            ("tracker rebuild (model log)", built, base),
        ]
        fees: dict[str, float] | None = None
        if not args.skip_fills:
            rows.append(("tracker rebuild (fills log)", child("rebuild", fills), base))
            fees = child("fees", fills)
        if args.pg_url:
            with pg_throwaway(args.pg_url) as url:
                started = time.perf_counter()
                copied = copy_log_to_pg(mixed, url)
                print(f"copied {copied:,} events to PostgreSQL in {time.perf_counter() - started:.1f} s", flush=True)
                pg_base = best_of(args.runs, "pg-baseline", url)
                rows.append(("baseline: psycopg read + json.loads", pg_base, pg_base))
                rows.append(("tracker rebuild, PostgreSQL (model log)", best_of(args.runs, "pg-rebuild", url), pg_base))
                one = best_of(args.runs, "pg-rebuild-one", url)
                rows.append(("tracker rebuild, PostgreSQL, one process", one, pg_base))
                reading = best_of(args.runs, "pg-rebuild-reader", url)
                rows.append(("tracker rebuild, PostgreSQL, one fold + reader", reading, pg_base))
        if args.contention:
            contention(mixed, args.runs)
        size = mixed.stat().st_size / 2**20
    print(f"\nlog: {n:,} events, {size:,.0f} MiB on disk (SQLite)")
    # Wall seconds are what the target is about; CPU seconds (this process only) say how much of the wall time
    # was the machine being busy with something else.
    # CPU: all the step's processes (the parallel rebuild's workers too); peak RSS: its largest process.
    # ratio: wall seconds over its backend's baseline's (2.5: the rebuild takes 2.5 times as long as the baseline).
    print(
        f"{'step':40} {'events':>10} {'wall s':>8} {'CPU s':>7} {'events/s':>10} {'ratio':>6} {'peak RSS':>9}"
        f" {'processes':>9}"
    )
    for label, r, against in rows:
        rate = r["events"] / r["seconds"]
        times = (r["seconds"] / r["events"]) / (against["seconds"] / against["events"])
        print(
            f"{label:40} {r['events']:>10,.0f} {r['seconds']:>8.1f} {r['cpu']:>7.1f} {rate:>10,.0f} {times:>6.2f}"
            f" {r['rss_mb']:>7.0f}MB {r.get('workers', 1):>9.0f}"
        )
    if fees is not None:
        print(
            f"\nv_fees_daily over {fees['fills']:,.0f} fills: {fees['rows']:,.0f} rows in {fees['seconds'] * 1000:.1f}"
            f" ms (target <= 1 s); SUM(fee) GROUP BY day, market over v_fills (exact sum): {fees['sum_seconds']:.2f} s"
        )

    def ratio(r: dict[str, float]) -> float:
        return (r["seconds"] / r["events"]) / (base["seconds"] / base["events"])

    targets = [
        (f"rebuild (2 processes) <= 2.5 x the baseline: {ratio(built):.2f}", ratio(built) <= 2.5),
        (f"rebuild (one process) <= 4 x the baseline: {ratio(built_one):.2f}", ratio(built_one) <= 4),
        ("peak RSS <= 300 MB", all(r["rss_mb"] <= 300 for _, r, _ in rows)),
    ]
    if fees is not None:
        targets.append(("fee query <= 1 s", fees["seconds"] <= 1))
    for label, ok in targets:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
