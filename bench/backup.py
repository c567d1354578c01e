"""``tracker db backup`` of a SQLite database: how long, against SQLite's own backup API in the same process, and what
it does to a live run's receive→commit latency.

    .venv/bin/python bench/backup.py [--events 300000] [--keep DIR] [--rate 1000] [--duration 10]

1. The database: ``--events`` model events (``bench/rebuild.py``'s generator; ``--keep DIR`` reuses them), the
   projections rebuilt, as a real database has them.
2. The backup alone, best of 3: ``online_backup.back_up`` (the copy, the chain walk of the copy, the head compared
   with the database's row, one self-contained file) against the baseline, SQLite's backup API into a file (the copy
   alone, what ``sqlite3 db ".backup f"`` does). Ratio = tracker / baseline.
3. Beside a live run: ``bench/ingest.py``'s tracker pipeline (``run_tracker`` in a child process; the fake exchange in
   this one) offered ``--rate`` frames/s for ``--duration`` s, into a copy of that database, twice: without a backup,
   then with ``tracker db backup`` run one after another the whole time, each a process of its own as a user runs
   it (a backup in a thread of this process would take the GIL from the fake exchange serving the run). p50/p99
   receive→commit of each, and how many backups were taken.
4. With ``--pg-url ADMIN_URL``: the same log copied into a throwaway PostgreSQL database (``bench/rebuild.py``'s
   ``pg_throwaway``, dropped afterwards), its projections rebuilt, then step 3 against it: the live run appending to
   the server while ``tracker db backup`` copies the log out into a SQLite file, checks it and rebuilds its
   projections there. Each live measurement is a new account of the fake exchange: the database keeps the last
   one's entries, and the same account's frames again would be duplicates and conflicts (the fake stamps a frame
   with its send time), which take the slow path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import trio

from tracker.store.engine import open_engine
from tracker.store.online_backup import back_up
from tracker.store.rebuild import rebuild

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fmt_ms, measure  # bench/ is not a package: the sibling scripts' helpers
from rebuild import copy_log_to_pg, made, model_frames, pg_throwaway


def database(keep: Path | None, events: int, tmp: Path) -> Path:
    """The model log of ``events`` events with its projections (made once with ``--keep``)."""
    folder = keep or tmp
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"backup-model-{events}.db"
    fresh = not path.exists()
    made(path, lambda: model_frames(events), "model")
    if fresh or _checkpoint(path) is None:
        engine = open_engine(f"sqlite:///{path}")
        try:
            rebuild(engine)
        finally:
            engine.dispose()
    return path


def _checkpoint(path: Path) -> int | None:
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT seq FROM projector_checkpoint").fetchone()
    return None if row is None else int(row[0])


def time_tracker(source: Path | str, out: Path) -> float:
    """``tracker db backup`` of ``source`` (a SQLite file, or a database URL) into ``out``, timed; ``out`` removed."""
    engine = open_engine(source if isinstance(source, str) else f"sqlite:///{source}")
    try:
        started = time.perf_counter()
        back_up(engine, out)
        return time.perf_counter() - started
    finally:
        engine.dispose()
        out.unlink(missing_ok=True)


def time_baseline(source: Path, out: Path) -> float:
    started = time.perf_counter()
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader, closing(sqlite3.connect(out)) as copy:
        reader.backup(copy)
    elapsed = time.perf_counter() - started
    out.unlink(missing_ok=True)
    return elapsed


async def live(path: Path, tmp: Path, rate: float, duration: float, *, backups: bool) -> tuple[dict[str, Any], int]:
    """The tracker pipeline into a copy of ``path`` at ``rate`` for ``duration`` s, with or without backups beside it;
    (its result, the backups taken)."""
    copy = tmp / f"live-{'with' if backups else 'without'}.db"
    shutil.copyfile(path, copy)
    # On disk before the run: else the run's first WAL checkpoint, whose fsync flushes the whole file the copy left
    # dirty in the page cache, is a ~150 ms stall of the bench's own making (a live database has no such backlog).
    with copy.open("rb+") as written:
        os.fsync(written.fileno())
    try:
        return await beside_backups(f"sqlite:///{copy}", tmp, rate, duration, backups=backups)
    finally:
        copy.unlink()


async def beside_backups(
    url: str, tmp: Path, rate: float, duration: float, *, backups: bool, seed: int = 11
) -> tuple[dict[str, Any], int]:
    """The tracker pipeline into ``url`` at ``rate`` for ``duration`` s (the fake account ``seed``), with or without
    ``tracker db backup`` of it run back to back meanwhile, each in a process of its own; (its result, the backups
    started). The backup under way when the measurement ends is killed (its partial file removed)."""
    taken = 0
    out = tmp / "live-backup.db"

    async def keep_backing_up() -> None:
        nonlocal taken
        while True:
            _remove_backups(tmp)
            taken += 1
            await trio.run_process(
                [sys.executable, "-m", "tracker", "db", "backup", str(out), "--db-url", url],
                capture_stdout=True,
                capture_stderr=True,
            )

    async with trio.open_nursery() as nursery:
        if backups:
            nursery.start_soon(keep_backing_up)
        result = await measure("tracker", url, rate, duration, seed=seed)
        nursery.cancel_scope.cancel()
    _remove_backups(tmp)
    return result, taken


def _remove_backups(tmp: Path) -> None:
    """The last backup, and what a killed one left (``.partial``, its journal)."""
    for leftover in tmp.glob("live-backup.db*"):
        leftover.unlink()


def print_live(label: str, result: dict[str, Any], taken: int) -> None:
    print(f"{label:<28} {result['ws']:>7} {fmt_ms(result['p50']):>7} {fmt_ms(result['p99']):>7} {taken:>8}")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = database(args.keep, args.events, tmp)
        size = path.stat().st_size
        print(f"database: {args.events:,} model events with their projections, {size / 1e6:,.0f} MB")
        baseline = min(time_baseline(path, tmp / "b.db") for _ in range(3))
        tracker = min(time_tracker(path, tmp / "t.db") for _ in range(3))
        print(f"{'step':<48} {'wall s':>7} {'MB/s':>7} {'ratio':>6}")
        print(f"{'baseline: sqlite3 backup API (the copy alone)':<48} {baseline:>7.2f} {size / 1e6 / baseline:>7.0f}"
              f" {1.0:>6.2f}")  # fmt: skip
        print(f"{'tracker db backup (copy, chain walk, check)':<48} {tracker:>7.2f} {size / 1e6 / tracker:>7.0f}"
              f" {tracker / baseline:>6.2f}")  # fmt: skip
        print(f"\nlive run at {args.rate:.0f} frames/s for {args.duration:.0f} s into a copy of it:")
        print(f"{'':<28} {'frames':>7} {'p50 ms':>7} {'p99 ms':>7} {'backups':>8} (started)")
        for backups in (False, True, False, True):
            result, taken = await live(path, tmp, args.rate, args.duration, backups=backups)
            print_live("with backups beside it" if backups else "alone", result, taken)
        if args.pg_url:
            await postgresql(args, path, tmp)


async def postgresql(args: argparse.Namespace, path: Path, tmp: Path) -> None:
    """Step 4: the log in a throwaway PostgreSQL database, a live run appending to it, with and without backups."""
    with pg_throwaway(args.pg_url) as plain:
        url = plain.replace("postgresql://", "postgresql+psycopg://", 1)
        copy_log_to_pg(path, plain)
        engine = open_engine(url)
        try:
            rebuild(engine)
        finally:
            engine.dispose()
        alone = time_tracker(url, tmp / "pg.db")
        # What a server that has been running is like: the copied rows' hint bits set and the dirty pages written out
        # (else the first measurement waits behind autovacuum and the checkpoint of the copy: p99 85 ms once).
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
        print(f"\nPostgreSQL: tracker db backup of that log alone: {alone:.2f} s (copy, chain walk, check, rebuild)")
        print(f"live run at {args.rate:.0f} frames/s for {args.duration:.0f} s into that database:")
        print(f"{'':<28} {'frames':>7} {'p50 ms':>7} {'p99 ms':>7} {'backups':>8} (started)")
        for seed, backups in enumerate((False, True, False, True), start=101):
            result, taken = await beside_backups(url, tmp, args.rate, args.duration, backups=backups, seed=seed)
            print_live("with backups beside it" if backups else "alone", result, taken)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--keep", type=Path, help="keep the model database here and reuse it")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s offered to the live run")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load per live measurement")
    parser.add_argument(
        "--pg-url",
        metavar="ADMIN_URL",
        help="also on PostgreSQL: a throwaway database made through this admin URL (e.g."
        " postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards",
    )
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
