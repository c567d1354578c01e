"""The two-process rebuild's swap alone, timed statement by statement from a kept state (SQLite).

    .venv/bin/python bench/swap.py --log PATH [--state DIR] [--runs N]

The swap (``tracker.store.rebuild._swap``) is the serial tail of a two-process rebuild: the live projection tables
emptied and filled again from the two workers' scratch files, in one write transaction, then committed. On a 1M-event
log it is ~2 s of a ~11-15 s rebuild, and a whole rebuild varies between runs by more than that (docs/storage.md), so
a change to the swap can only be judged on the swap alone, from the same starting state each time:

1. Unless ``--state DIR`` holds one already: runs ``rebuild(parallel=True)`` over ``--log`` (a SQLite log, e.g. the one
   ``bench/rebuild.py --keep DIR`` generates) up to the moment before its swap, and keeps a copy of the log's file
   and of the two scratch files there; the rebuild is then abandoned, so the log's projection is as it was.
2. ``--runs`` times: copies the kept state into a fresh directory, syncs the file system (the copy's ~1 GB of dirty
   pages would otherwise share the disk with the swap's fsync), and times ``_swap`` on it: every statement (through
   SQLAlchemy's cursor events), and the commit (from the ``commit`` event to the swap's return).

Printed: each run's total and commit; per statement, the median over the runs (statements under 5 ms together as
"the rest", which also holds attaching the files and Python's own time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tracker.store.engine import open_engine
from tracker.store.projection_schema import shadow_tables
from tracker.store.rebuild import _swap, rebuild
from tracker.store.rebuild_parallel import SHADOW_PREFIX

PARTS = 2
SHOWN_S = 0.005  # a statement shorter than this in every run counts among "the rest"


class _Kept(Exception):
    """Raised from ``before_swap`` once the state is copied: the rebuild stops there."""


def keep_state(log: Path, state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)

    def copy_aside() -> None:
        parts = [log.with_name(f"{log.name}.rebuild.{part}") for part in range(PARTS)]
        if not all(part.exists() for part in parts):  # the parts shared rows: the rebuild went back to one process
            raise SystemExit(f"{log}: the rebuild folded in one process, not two (see its warning); nothing kept")
        with closing(sqlite3.connect(log)) as conn:  # the log's WAL into its file, so that the file alone is the state
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(log, state / "log.db")
        for part, path in enumerate(parts):
            shutil.copy(path, state / f"part{part}.db")
        raise _Kept

    started = time.perf_counter()
    engine = open_engine(f"sqlite:///{log}")
    try:
        rebuild(engine, parallel=True, before_swap=copy_aside)
    except _Kept:
        pass
    else:
        raise SystemExit(f"{log}: the rebuild did not fold in two processes (too few markets?); nothing kept")
    finally:
        engine.dispose()
    print(f"kept the state before the swap in {state} ({time.perf_counter() - started:.1f} s)", flush=True)


def timed_swap(state: Path, work: Path) -> tuple[float, float, list[tuple[str, float]], int]:
    """(total s, commit s, [(statement, s)], rows) of one swap on a fresh copy of ``state`` in ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ["log.db", *(f"part{part}.db" for part in range(PARTS))]:
        shutil.copy(state / name, work / name)
    os.sync()
    with closing(sqlite3.connect(work / "log.db")) as conn:
        until = int(conn.execute("SELECT max(seq) FROM event_log").fetchone()[0])
    engine = open_engine(f"sqlite:///{work / 'log.db'}")
    _, shadow = shadow_tables(SHADOW_PREFIX)
    files = {f"rebuild_part{part}": work / f"part{part}.db" for part in range(PARTS)}
    statements: list[tuple[str, float]] = []
    commit_at: list[float] = []

    def before(conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append((" ".join(statement.split()), time.perf_counter() - conn.info["bench_started"]))

    def on_commit(_conn: Any) -> None:
        commit_at.append(time.perf_counter())

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("commit", on_commit),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        started = time.perf_counter()
        rows = _swap(engine, files, shadow, until)
        ended = time.perf_counter()
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
        engine.dispose()
    return ended - started, ended - commit_at[-1], statements, sum(rows.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="a SQLite log of two markets or more")
    parser.add_argument("--state", type=Path, help="where the state before the swap is kept (default: beside --log)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    state = args.state or args.log.with_name(args.log.name + ".swap-state")
    if not all((state / name).exists() for name in ["log.db", *(f"part{part}.db" for part in range(PARTS))]):
        keep_state(args.log, state)
    totals: list[float] = []
    commits: list[float] = []
    per_statement: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(dir=state.parent) as tmp:
        for run in range(args.runs):
            total, commit, statements, rows = timed_swap(state, Path(tmp) / "run")
            totals.append(total)
            commits.append(commit)
            rest = total - commit - sum(s for _, s in statements)
            seen: dict[str, float] = defaultdict(float)
            for statement, seconds in statements:
                seen[statement[:100]] += seconds
            for statement, took in seen.items():
                per_statement[statement].append(took)
            per_statement["(outside statements: attaching, Python)"].append(rest)
            print(f"run {run + 1}: swap {total:.3f} s, of which the commit {commit:.3f} s; {rows:,} rows", flush=True)
    print()
    print(f"swap: min {min(totals):.3f} s, median {statistics.median(totals):.3f} s over {args.runs} runs")
    print(f"{'median s':>9}  statement")
    small = 0.0
    for statement, runs in per_statement.items():
        if max(runs) < SHOWN_S:
            small += statistics.median(runs)
        else:
            print(f"{statistics.median(runs):9.3f}  {statement}")
    print(f"{small:9.3f}  the rest (each statement under {SHOWN_S * 1000:.0f} ms)")
    print(f"{statistics.median(commits):9.3f}  COMMIT (the WAL's pages written and fsynced, the checkpoint)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
