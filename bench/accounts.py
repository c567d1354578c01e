"""Many accounts on one PostgreSQL database: N tracker processes, one fake exchange (one account) each, one event log.

    .venv/bin/python bench/accounts.py [--accounts 20] [--rate 100] [--duration 5] [--pg-url URL]
                                       [--per-process K] [--only RUN,...]

Each account gets its own fake exchange (``open_fake_exchange(user_id=..., api_key=...)``, all in this process) and
its own child process running ``run_tracker`` exactly as ``tracker run`` wires it (``bench/ingest.py --child
tracker``: ingest, the single writer, ``EventLog.append`` with the hash chain and dedup, durable commits, the
account's lease). All children write into the same database and schema. Two loads, each on a fresh schema:

- paced: every fake offers ``--rate`` frames/s for ``--duration`` s (20 x 100 = 2,000 events/s aggregate);
- unpaced (``max``): every fake generates as fast as it can.

and the same two loads with 1 account alone, in the same run; then the paced load again with ``bench/ingest.py``'s
minimal pipeline in each child instead of tracker (``--child baseline``: trio-websocket, ``json.loads``, a raw
psycopg ``COPY`` + commit per batch into a table of its own in the same schema; ``--no-baseline`` skips it): what
the machine can do at that load with the least a pipeline must do, so a missed target can be told from a machine
too small for it. ``--per-process K`` adds the two loads with the accounts K to a process (``tracker/K``:
``run_accounts``, as ``tracker run`` runs a config file's ``[[accounts]]``: a service per account under one trio
loop, their live appends combined; bench/ingest.py's ``--child group``). ``--only`` makes only the named runs
(``tracker:20:100``, ``tracker:1:max``, ``tracker/20:20:100``, ``baseline:20:100``). ``--sqlite DIR``: into a SQLite
file instead (the grouped runs and single accounts only). ``BENCH_DEBUG=1`` shows the children's errors;
``BENCH_NO_COMBINE=1`` makes the grouped children's writers append alone. Printed: aggregate events/s (every child's
data frames / (last data commit of any child - first data receive of any child), wall clock), and receive→commit p50
/ p99 per account (the worst account's p99 and the median account's). Targets (issue 16): 20 accounts at 2,000
events/s with every account's p99 <= 20 ms; unpaced aggregate of 20 accounts >= that of 1 account alone.

The fakes run in this process and share its CPU with nothing else; the children and PostgreSQL share the machine.
The frames are made by the fakes' models before each measurement (``ingest.prerender``) and paced by one loop for
all fakes, so the load generator costs little more than delivery. Also printed: the children's CPU per frame (all
their threads, from their first data frame to their last commit), how busy the machine's cores were during the load
(/proc/stat), and what the PostgreSQL backends were doing (``pg_stat_activity`` sampled every 20 ms:
``Lock:relation`` is an append waiting for the log's lock).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import trio

from tracker.fake.server import FakeExchange, open_fake_exchange

sys.path.insert(0, str(Path(__file__).parent))
from ingest import offer, prerender  # bench/ is not a package: the sibling script's helpers

INGEST = Path(__file__).with_name("ingest.py")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
FIRST_USER = 700_000
UNPACED = 3_000  # frames made in advance per account and second of the unpaced load (at least)
UNPACED_TOTAL = 20_000  # ... and for all accounts together (more than one pipeline takes: bench/ingest.py)


async def run_child(
    fxs: list[FakeExchange], db_url: str, results: list[dict[str, Any]], *, stop: trio.Event, kind: str = "tracker"
) -> None:
    """One pipeline process for the accounts of ``fxs`` (``kind``: ``tracker`` or ``baseline``, bench/ingest.py's
    children; several accounts: ``tracker`` only, bench/ingest.py's ``--child group``): runs until ``stop``, then
    SIGINT (the lossless close)."""
    env = fxs[0].tracker_env(os.environ)
    target = db_url if kind == "tracker" else db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    command = [sys.executable, str(INGEST), "--child", kind, "--db", target]
    if len(fxs) > 1:
        if kind != "tracker":
            raise ValueError("several accounts per process: the tracker pipeline only")
        fd, envs = tempfile.mkstemp(prefix="bench-accounts-", suffix=".json")  # read and removed by the child
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([fx.tracker_env(os.environ) for fx in fxs], f)
        command = [sys.executable, str(INGEST), "--child", "group", "--db", target, "--envs", envs]
    process = await trio.lowlevel.open_process(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
    )
    try:
        await stop.wait()
        process.send_signal(signal.SIGINT)
        if process.stdout is None:
            raise RuntimeError("no stdout pipe")
        out = b""
        with trio.fail_after(120):
            async for chunk in process.stdout:
                out += chunk
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    result = json.loads(out.decode().strip().splitlines()[-1])
    results.extend(result if isinstance(result, list) else [result])


async def measure(
    accounts: int, rate: float, duration: float, db_url: str, kind: str = "tracker", per_process: int = 1
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    stop = trio.Event()
    async with AsyncExitStack() as stack:
        fakes = [
            await stack.enter_async_context(
                open_fake_exchange(seed=11 + i, markets=MARKETS, user_id=FIRST_USER + i, api_key=f"benchkey{i:04d}")
            )
            for i in range(accounts)
        ]
        # Made before the children start: the making blocks this process, which serves their tokens and websockets.
        per_s = max(UNPACED, UNPACED_TOTAL // accounts) if math.isinf(rate) else rate
        frames = [prerender(fx, int(duration * per_s) + 20) for fx in fakes]
        async with trio.open_nursery() as children:
            for first in range(0, len(fakes), per_process):
                group = fakes[first : first + per_process]
                children.start_soon(partial(run_child, group, db_url, results, stop=stop, kind=kind))
            with trio.fail_after(60 + accounts * 3):
                for fx in fakes:
                    await fx.wait_subscribed(fx.private_channels())
            waits: collections.Counter[str] = collections.Counter()
            busy_before = machine_busy()
            async with trio.open_nursery() as load:
                if math.isinf(rate):
                    for fx, made in zip(fakes, frames, strict=True):
                        load.start_soon(offer, fx, rate, duration, made)
                else:
                    load.start_soon(offer_paced, fakes, frames, rate, duration)
                if db_url.startswith("postgresql"):
                    load.start_soon(sample_waits, db_url, duration, waits)
            busy = machine_busy(busy_before)
            await trio.sleep(1.0)  # let every pipeline commit its tail before the stop
            stop.set()
    frames = sum(r["ws"] for r in results)
    first = min(r["first"] for r in results if r["first"])
    last = max(r["last"] for r in results if r["last"])
    p99s = sorted(r["p99"] for r in results if r["p99"] is not None)
    p50s = sorted(r["p50"] for r in results if r["p50"] is not None)
    return {
        "accounts": accounts,
        "frames": frames,
        "per_s": frames / (last - first) if last > first else 0.0,
        "span": last - first,
        "p50_median": statistics.median(p50s) if p50s else None,
        "p99_median": statistics.median(p99s) if p99s else None,
        "p99_worst": p99s[-1] if p99s else None,
        "batches": sum(r["batches"] for r in results),
        "waits": waits,
        "busy": busy,
        "cpu_us": sum(r["cpu"] for r in results) / frames * 1e6 if frames else 0.0,
    }


async def offer_paced(fakes: list[FakeExchange], frames: list[list[Any]], rate: float, duration: float) -> None:
    """Every fake delivers ``rate`` frames/s of its own for ``duration`` s, from one loop that wakes every 2 ms for
    all of them: a loop per fake woke the fakes' process 20 x 500 times a second, and that process shares the two
    cores with the pipelines it measures."""
    start = trio.current_time()
    sent = [0] * len(fakes)
    while (now := trio.current_time()) - start < duration:
        due = int((now - start) * rate)
        for i, fx in enumerate(fakes):
            if due > sent[i]:
                await fx.hub.deliver(frames[i][sent[i] : due])
                sent[i] = due
        await trio.sleep(0.002)


def machine_busy(before: tuple[float, float] | None = None) -> tuple[float, float]:
    """(busy, total) jiffies of every core from /proc/stat; with ``before``: (busy fraction since then, cores)."""
    with open("/proc/stat") as stat:
        fields = [float(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    now = (sum(fields) - idle, sum(fields))
    if before is None:
        return now
    return (now[0] - before[0]) / max(now[1] - before[1], 1.0), float(os.cpu_count() or 1)


async def sample_waits(db_url: str, duration: float, waits: collections.Counter[str]) -> None:
    """What the appenders' server processes are doing, every 20 ms of the load (``pg_stat_activity`` of this
    database, the sampling connection left out): ``Lock:relation`` is an append waiting for the log's lock,
    ``IO:WALSync`` a commit's fsync, ``Client:ClientRead`` a connection waiting for its client (idle between appends,
    or, inside a transaction, a lock holder waiting for its process), ``CPU`` running."""
    import psycopg

    dsn = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        end = trio.current_time() + duration
        while trio.current_time() < end:
            rows = conn.execute(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
            for state, kind, event in rows:
                key = f"{kind}:{event}" if kind else "CPU"
                waits[f"{key} ({state})" if state != "active" else key] += 1
            await trio.sleep(0.02)


def fresh_schema(database: str, made: list[str]) -> str:
    """A new migrated schema ``bench_*`` in ``database``, its name appended to ``made`` (dropped at the end when the
    database is one named with ``--pg-url``)."""
    import psycopg

    from tracker.store import migrate

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    made.append(schema)
    base = database.replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    migrate.upgrade(url)
    return url


def fresh_sqlite(directory: str) -> str:
    """A new migrated SQLite file in ``directory`` (``--sqlite``)."""
    from tracker.store import migrate

    url = f"sqlite:///{Path(directory) / f'bench_{uuid.uuid4().hex[:8]}.db'}"
    migrate.upgrade(url)
    return url


def _run_name(kind: str, rate: float, accounts: int, per_process: int) -> str:
    """A run's name for ``--only``: ``tracker:20:100``, ``tracker:20:max``, ``tracker/20:20:100``,
    ``baseline:20:100``."""
    label = kind if per_process == 1 else f"{kind}/{per_process}"
    return f"{label}:{accounts}:{'max' if math.isinf(rate) else f'{rate:.0f}'}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


async def parent(args: argparse.Namespace) -> None:
    import psycopg

    given = args.pg_url or os.environ.get("TRACKER_BENCH_PG_URL")
    name = None
    if given:
        database = given
    else:
        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        database = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    print(
        f"{'pipeline':<9}{'accounts':>8} {'offered/acct':>12} {'aggregate/s':>12} {'p50 med ms':>10} "
        f"{'p99 med ms':>10} {'p99 worst':>10} {'batches':>8} {'frames':>7} {'span s':>6} {'CPU us/ev':>9}"
    )
    made: list[str] = []
    try:
        runs = [("tracker", rate, accounts, 1) for rate in (args.rate, math.inf) for accounts in (1, args.accounts)]
        if args.per_process > 1:
            runs += [("tracker", rate, args.accounts, args.per_process) for rate in (args.rate, math.inf)]
        if not args.no_baseline:
            runs += [("baseline", args.rate, accounts, 1) for accounts in (1, args.accounts)]
        if args.only:
            wanted = set(args.only.split(","))
            runs = [run for run in runs if _run_name(*run) in wanted]
        for kind, rate, accounts, per_process in runs:
            target = fresh_sqlite(args.sqlite) if args.sqlite else fresh_schema(database, made)
            r = await measure(accounts, rate, args.duration, target, kind, per_process)
            label = kind if per_process == 1 else f"{kind}/{per_process}"
            offered = "max" if math.isinf(rate) else f"{rate:.0f}"
            print(
                f"{label:<9}{accounts:>8} {offered:>12} {r['per_s']:>12.0f} {fmt_ms(r['p50_median']):>10} "
                f"{fmt_ms(r['p99_median']):>10} {fmt_ms(r['p99_worst']):>10} {r['batches']:>8} {r['frames']:>7}"
                f" {r['span']:>6.2f} {r['cpu_us']:>9.0f}",
                flush=True,
            )
            total = sum(r["waits"].values()) or 1
            top = ", ".join(f"{name} {count / total:.0%}" for name, count in r["waits"].most_common(5))
            busy, cores = r["busy"]
            print(f"{'':>17} machine busy {busy:.0%} of {cores:.0f} cores; PostgreSQL backends: {top}", flush=True)
    finally:
        if given and made:  # the user's database: the measurements' schemas go, the rest stays as it was
            with psycopg.connect(database, autocommit=True) as conn:
                for schema in made:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="frames/s offered per account (paced load)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of offered load per measurement")
    parser.add_argument("--pg-url", help="an existing PostgreSQL database to use (or TRACKER_BENCH_PG_URL)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the minimal pipelines' paced run")
    parser.add_argument(
        "--sqlite",
        metavar="DIR",
        help="into a new SQLite file in DIR instead (only the grouped runs can: one process writes a SQLite file)",
    )
    parser.add_argument("--only", help="comma-separated runs to make, by name (tracker:20:max, tracker/20:20:100, ...)")
    parser.add_argument(
        "--per-process",
        type=int,
        default=1,
        help="also run the accounts K to a process (one run_tracker per account under one trio loop): tracker/K",
    )
    trio.run(parent, parser.parse_args())


if __name__ == "__main__":
    main()
