"""Rebuild throughput and the fee query, against a raw ``sqlite3`` read-and-``json.loads`` baseline.

    .venv/bin/python bench/rebuild.py [--events N] [--fills N] [--dir DIR]

1. Generates a log of ``--events`` (default 1,000,000) private frames from the fake exchange's model (orders, fills,
   self trades, settlements, liquidations: every case) into a fresh SQLite database (through ``EventLog.append``, so
   the hash chain is real), and a second log of ``--fills`` (default 1,000,000) fills (``my_trades`` frames over
   4 markets and ~2 years of days).
2. In a child process each (so peak RSS is the measured step's own): ``tracker rebuild``'s logic
   (``tracker.store.rebuild.rebuild``) over the first log, as ``tracker rebuild`` runs it (two worker processes
   when the log allows, see ``rebuild_parallel.py``) and in one process (``parallel=False``), and the baseline that
   only reads ``payload`` in ``seq`` order with raw ``sqlite3`` and ``json.loads`` it. Each reports wall and CPU
   seconds (all its processes' CPU; on a shared machine the wall time includes waiting for a core) and the peak
   RSS of its largest process.
3. Rebuilds the fills log (also timed) and times ``SELECT * FROM v_fees_daily`` through tracker's engine (best of 5),
   beside ``SELECT day, market, SUM(fee) ... FROM v_fills GROUP BY ...`` (the exact ``sum`` over 1M rows) for scale.

Targets: rebuild of 1M events <= 20 s, peak RSS <= 300 MB, the fee query <= 1 s on SQLite.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.log import NewEntry
from tracker.fake.model import AccountModel
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import VIEWS
from tracker.store.rebuild import rebuild
from tracker.store.rebuild_parallel import peak_rss_mb  # VmHWM: ru_maxrss carries over a parent's peak

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


# -- child steps (one process each) -----------------------------------------------------------------------------


def step_rebuild(path: Path, parallel: bool | None = None) -> dict[str, float]:
    engine = open_engine(f"sqlite:///{path}")
    cpu = time.process_time()
    try:
        result = rebuild(engine, parallel=parallel)
    finally:
        engine.dispose()
    return {
        "events": result.events,
        "seconds": result.seconds,
        "cpu": time.process_time() - cpu + result.worker_cpu_seconds,  # the workers' too (parallel rebuild)
        "rss_mb": max(peak_rss_mb(), result.worker_peak_rss_mb),  # the largest process's
        "workers": result.workers,
    }


def step_baseline(path: Path) -> dict[str, float]:
    started, cpu = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(path)
    rows = last = 0
    while True:
        page = conn.execute(
            "SELECT seq, payload FROM event_log WHERE seq > ? ORDER BY seq LIMIT 5000", (last,)
        ).fetchall()
        if not page:
            break
        for seq, payload in page:
            json.loads(payload)
            last = seq
        rows += len(page)
    conn.close()
    return {"events": rows, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "rss_mb": peak_rss_mb()}  # fmt: skip


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
    return step_rebuild(path, parallel=False)


STEPS = {"rebuild": step_rebuild, "rebuild-one": step_rebuild_one, "baseline": step_baseline, "fees": step_fees}


def child(step: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, str(path)], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where to put the databases (default: a temporary directory)")
    parser.add_argument("--step", nargs=2, metavar=("STEP", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(STEPS[args.step[0]](Path(args.step[1]))))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        mixed, fills = Path(tmp) / "mixed.db", Path(tmp) / "fills.db"
        started = time.perf_counter()
        n = generate(mixed, model_frames(args.events))
        print(f"generated {n:,} model events in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        m = generate(fills, fill_frames(args.fills))
        print(f"generated {m:,} fill events in {time.perf_counter() - started:.1f} s", flush=True)
        base = child("baseline", mixed)
        built_one = child("rebuild-one", mixed)
        built = child("rebuild", mixed)
        built_fills = child("rebuild", fills)
        fees = child("fees", fills)
        size = mixed.stat().st_size / 2**20
    rows = [
        ("baseline: sqlite3 read + json.loads", base),
        ("tracker rebuild, one process (model log)", built_one),
        ("tracker rebuild (model log)", built),
        ("tracker rebuild (fills log)", built_fills),
    ]
    print(f"\nlog: {n:,} events, {size:,.0f} MiB on disk (SQLite)")
    # Wall seconds are what the target is about; CPU seconds (this process only) say how much of the wall time
    # was the machine being busy with something else.
    # CPU: all the step's processes (the parallel rebuild's workers too); peak RSS: its largest process.
    print(
        f"{'step':40} {'events':>10} {'wall s':>8} {'CPU s':>7} {'events/s':>10} {'ratio':>6} {'peak RSS':>9}"
        f" {'processes':>9}"
    )
    for label, r in rows:
        rate = r["events"] / r["seconds"]
        ratio = rate / (base["events"] / base["seconds"])
        print(
            f"{label:40} {r['events']:>10,.0f} {r['seconds']:>8.1f} {r['cpu']:>7.1f} {rate:>10,.0f} {ratio:>6.2f}"
            f" {r['rss_mb']:>7.0f}MB {r.get('workers', 1):>9.0f}"
        )
    print(
        f"\nv_fees_daily over {fees['fills']:,.0f} fills: {fees['rows']:,.0f} rows in {fees['seconds'] * 1000:.1f} ms"
        f" (target <= 1 s); SUM(fee) GROUP BY day, market over v_fills (exact sum): {fees['sum_seconds']:.2f} s"
    )
    targets = [
        ("rebuild of 1M-scale log <= 20 s (scaled)", built["seconds"] * 1_000_000 / max(built["events"], 1) <= 20),
        ("peak RSS <= 300 MB", built["rss_mb"] <= 300 and built_fills["rss_mb"] <= 300),
        ("fee query <= 1 s", fees["seconds"] <= 1),
    ]
    for label, ok in targets:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
