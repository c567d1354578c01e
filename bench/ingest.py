"""Live ingest throughput and latency: fake exchange → tracker's ingest pipeline → SQLite / PostgreSQL, beside a
minimal baseline on the same stack, in the same run.

    .venv/bin/python bench/ingest.py [--duration 4] [--rates 1000,2000,5000,10000,max] [--no-pg] [--pg-url URL]

For each offered rate (frames/s; ``max`` = unpaced, as fast as delivery allows) the fake exchange runs in this process
and each pipeline runs as a child process of its own (so the fake's CPU is not the pipeline's):

- ``tracker``: ``run_tracker`` exactly as ``tracker run`` wires it (ingest with classification and lifecycle
  entries, the single writer, ``EventLog.append`` with the hash chain, dedup and durable commits: SQLite WAL with
  synchronous=FULL; PostgreSQL default fsync) and SIGINT to stop (the lossless close).
- ``baseline``: a trio-websocket client that subscribes the same channels, does ``json.loads`` on every frame and a
  raw ``sqlite3`` ``executemany`` + commit per batch (same pragmas: WAL, synchronous=FULL), or on PostgreSQL a raw
  psycopg ``COPY`` + commit per batch (same server, default fsync), group commit from one thread, no hashing, no
  dedup, no SQLAlchemy. Each tracker row's ratio is to the baseline of its own backend.

Sustained events/s = frames committed / (last data commit - first data receive), wall clock. Latency = receive
(monotonic, when the frame left the websocket) → its batch committed, p50/p99. ``ratio`` = tracker sustained /
baseline sustained at the same offered rate. ``CPU us/ev``: the pipeline process's CPU time (all its threads) from
its first data frame to its last commit, per frame: unlike wall-clock figures, it hardly moves when others load the
machine. ``server us/ev`` (PostgreSQL): the CPU time of the database's backends over the offered load and the tail
(from ``/proc``, so for a server on this machine), per frame: on a 2-core machine the server's CPU is taken from the
same cores as the pipeline's. Targets: ≥ 70 % of the baseline unpaced; p99 ≤ 20 ms at 1,000
events/s offered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
TICK = os.sysconf("SC_CLK_TCK")
MAX_RATE = 25_000  # frames made in advance per second of an unpaced measurement (more than any pipeline takes)


# ---------------------------------------------------------------------------------------------------- children


def _percentiles(latencies: list[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def child_tracker(db_url: str) -> dict[str, Any]:
    from tracker.config import load_settings
    from tracker.runtime.service import run_tracker
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog

    settings = load_settings(flags={"db_url": db_url})
    if os.environ.get("BENCH_SWITCH"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))
    pauses: list[tuple[int, float]] = []
    if os.environ.get("BENCH_DEBUG"):
        import gc

        started: list[float] = []

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                pauses.append((info["generation"], time.perf_counter() - started.pop()))

        gc.callbacks.append(on_gc)
    engine = open_engine(settings.db_url)
    log = EventLog(engine)
    span: dict[str, float] = {}
    # (getattr: the same bench also runs an older tracker, for before/after figures, whose log has no such method)
    real_append, real_steps = log.append, getattr(log, "server_append_steps", None)

    def committed(entries: Any) -> None:
        # Wall-clock span of the data frames only (lifecycle entries before and after the load are not throughput).
        ws = [e for e in entries if e.source == "ws"]
        if ws:
            span.setdefault("first", ws[0].received_at.timestamp())
            span.setdefault("cpu_first", time.process_time())
            span["last"] = time.time()
            span["cpu_last"] = time.process_time()

    def append(entries: Any, quarantine: Any = ()) -> Any:
        result = real_append(entries, quarantine)
        committed(entries)
        return result

    def server_append_steps(entries: Any) -> Any:
        # The writer's appends on the event loop (PostgreSQL, tracker/runtime/loop_append.py) bypass ``append``.
        start = real_steps(entries)
        if start is None:
            return None

        def steps() -> Any:
            result = yield from start.steps
            if result is not None:
                committed(entries)
            return result

        return start._replace(steps=steps())

    log.append = append  # type: ignore[method-assign]
    if real_steps is not None:
        log.server_append_steps = server_append_steps  # type: ignore[method-assign]
    try:
        services = await run_tracker(settings, log)
    finally:
        engine.dispose()
    stats = services.writer_stats
    p50, p99 = _percentiles(list(stats.latency_sample))
    if os.environ.get("BENCH_DEBUG"):
        sample = list(stats.latency_sample)
        slow = [(i, round(v * 1000, 1)) for i, v in enumerate(sample) if v > 0.02]
        print(f"{len(sample)} samples; slow (index, ms): {slow[:60]}", file=sys.stderr)
        long = sorted((round(d * 1000, 1), g) for g, d in pauses if d > 0.002)
        print(f"gc: {len(pauses)} collections, over 2 ms (ms, generation): {long[-20:]}", file=sys.stderr)
    return {
        "items": stats.items,
        "ws": services.ingest_stats.data_frames,
        "duplicates": stats.duplicates,
        "batches": stats.batches,
        "span": span.get("last", 0.0) - span.get("first", 0.0),
        "cpu": span.get("cpu_last", 0.0) - span.get("cpu_first", 0.0),  # every thread of the process
        "first": span.get("first"),  # wall clock: bench/accounts.py spans several children
        "last": span.get("last"),
        "p50": p50,
        "p99": p99,
    }


async def child_group(db_url: str, envs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Several accounts in this one process (``bench/accounts.py --per-process K``): ``run_accounts`` exactly as
    ``tracker run`` runs the config file's ``[[accounts]]`` (``envs``: each account's environment), but without the
    companions (projector, backfill, reconciliation), as ``child_tracker`` runs ``run_tracker`` without them. SIGINT
    stops them all (the lossless close). The span hooks wrap the appends at class level: the accounts' event logs and
    the combiner are made inside ``run_accounts``."""
    import tracker.runtime.app as app
    from tracker.config import load_settings
    from tracker.runtime.append_combiner import AppendCombiner
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog

    settings = [load_settings(flags={"db_url": db_url}, env=env) for env in envs]
    spans: dict[str, dict[str, float]] = {}
    process: dict[str, float] = {}  # this process's CPU at its first and last data commit

    def committed(entries: Any) -> None:
        for e in entries:
            if e.source == "ws":
                span = spans.setdefault(e.account, {})
                span.setdefault("first", e.received_at.timestamp())
                span["last"] = time.time()
                process.setdefault("cpu_first", time.process_time())
                process["cpu_last"] = time.process_time()

    real_append, real_combined = EventLog.append, AppendCombiner.append

    def append(self: Any, entries: Any, quarantine: Any = ()) -> Any:
        result = real_append(self, entries, quarantine)
        committed(entries)
        return result

    async def combined(self: Any, entries: Any) -> Any:
        if os.environ.get("BENCH_NO_COMBINE"):  # each writer appends alone (how much the combining saves)
            return None
        result = await real_combined(self, entries)
        if result is not None:
            committed(entries)
        return result

    EventLog.append = append  # type: ignore[method-assign]
    AppendCombiner.append = combined  # type: ignore[method-assign]
    engine = open_engine(settings[0].db_url, accounts=len(settings))
    try:
        states = await app.run_accounts(settings, engine, companions=False)
        services = [state.services for state in states if state.services is not None]
    finally:
        engine.dispose()
    results: list[dict[str, Any]] = []
    for one in services:
        stats = one.writer_stats
        p50, p99 = _percentiles(list(stats.latency_sample))
        span = spans.get(one.account or "", {})
        results.append(
            {
                "items": stats.items,
                "ws": one.ingest_stats.data_frames,
                "duplicates": stats.duplicates,
                "batches": stats.batches,
                "span": span.get("last", 0.0) - span.get("first", 0.0),
                "cpu": 0.0,
                "first": span.get("first"),
                "last": span.get("last"),
                "p50": p50,
                "p99": p99,
            }
        )
    # The process's CPU (every thread) from its first data commit to its last, shared among its accounts.
    for r in results:
        r["cpu"] = (process.get("cpu_last", 0.0) - process.get("cpu_first", 0.0)) / len(results)
    return results


Rows = list[tuple[str, str, str, float]]


def baseline_writer(db: str) -> tuple[Callable[[Rows], None], Callable[[], None]]:
    """(write a batch in one durable transaction, close): raw ``sqlite3`` ``executemany`` (WAL, synchronous=FULL) for
    a file path, raw psycopg ``COPY`` (default fsync) for a ``postgresql://`` URL. One table, no constraints."""
    if db.startswith("postgresql"):
        import psycopg

        pg = psycopg.connect(db, autocommit=True)
        table = f"events_{os.getpid()}"  # a table each: bench/accounts.py runs 20 of these side by side
        pg.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, channel text, event text, payload text)")

        def write_pg(rows: Rows) -> None:
            copy_sql = f"COPY {table} (channel, event, payload) FROM STDIN"
            with pg.transaction(), pg.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row[:3])

        return write_pg, pg.close
    lite = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    lite.execute("PRAGMA journal_mode=WAL")
    lite.execute("PRAGMA synchronous=FULL")
    lite.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, channel TEXT, event TEXT, payload TEXT)")

    def write_sqlite(rows: Rows) -> None:
        lite.execute("BEGIN")
        lite.executemany("INSERT INTO events (channel, event, payload) VALUES (?, ?, ?)", [r[:3] for r in rows])
        lite.execute("COMMIT")

    return write_sqlite, lite.close


async def child_baseline(db_path: str) -> dict[str, Any]:
    from trio_websocket import ConnectionClosed, open_websocket_url

    from tracker.bitstamp.channels import channels_for
    from tracker.exchange.rest import BitstampClient

    env = os.environ
    async with BitstampClient(env["BITSTAMP_API_URL"], env["BITSTAMP_API_KEY"], env["BITSTAMP_API_SECRET"]) as client:
        token = await client.websockets_token()
    write, close = baseline_writer(db_path)
    limiter = trio.CapacityLimiter(1)
    pending: list[tuple[str, str, str, float]] = []
    wake = trio.Event()
    latencies: list[float] = []
    counters: dict[str, Any] = {"items": 0, "batches": 0, "first": None, "last": None}
    stop = trio.Event()

    async def writer() -> None:
        nonlocal pending, wake
        while True:
            await wake.wait()
            wake = trio.Event()
            batch, pending = pending, []
            if not batch:
                if stop.is_set():
                    return
                continue
            await trio.to_thread.run_sync(write, batch, limiter=limiter)
            now = trio.current_time()
            latencies.extend(now - r[3] for r in batch)
            counters["items"] += len(batch)
            counters["batches"] += 1
            counters["last"] = time.time()
            counters["cpu_last"] = time.process_time()
            if stop.is_set():  # the stop's wake-up may have been taken by this batch: look once more, then end
                wake.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_websocket_url(env["BITSTAMP_WS_URL"]) as ws:
                for channel in channels_for(MARKETS, token.user_id, extras=True):
                    frame = {"event": "bts:subscribe", "data": {"channel": channel, "auth": token.token}}
                    await ws.send_message(json.dumps(frame))

                async def receive() -> None:
                    try:
                        while True:
                            message = await ws.get_message()
                            received = trio.current_time()
                            obj = json.loads(message)
                            if obj["event"].startswith("bts:"):
                                continue
                            if counters["first"] is None:
                                counters["first"] = time.time()
                                counters["cpu_first"] = time.process_time()
                            pending.append((obj["channel"], obj["event"], str(message), received))
                            wake.set()
                    except ConnectionClosed:
                        pass

                async with trio.open_nursery() as inner:
                    inner.start_soon(receive)
                    async for _ in signals:
                        inner.cancel_scope.cancel()
                        break
        stop.set()
        wake.set()
    close()
    p50, p99 = _percentiles(latencies)
    first, last = counters["first"], counters["last"]
    return {
        "items": counters["items"],
        "ws": counters["items"],
        "duplicates": 0,
        "batches": counters["batches"],
        "span": (last or 0) - (first or 0),
        "cpu": (counters.get("cpu_last") or 0) - (counters.get("cpu_first") or 0),
        "first": first,  # wall clock: bench/accounts.py spans several children
        "last": last,
        "p50": p50,
        "p99": p99,
    }


# ---------------------------------------------------------------------------------------------------- parent


async def measure(kind: str, db_url: str, rate: float, duration: float, *, seed: int = 11) -> dict[str, Any]:
    """``seed``: the fake account's; a second measurement into the same database needs another, or its frames carry
    the first one's ids again: duplicates, and conflicts where the fake's send time differs, which take the slow
    path (docs/storage.md, "Backups beside a live run")."""
    from tracker.fake.server import open_fake_exchange

    async with open_fake_exchange(seed=seed, markets=MARKETS) as fx:
        env = fx.tracker_env(os.environ)
        target = db_url if kind == "tracker" else db_url.removeprefix("sqlite:///").replace("+psycopg", "", 1)
        # Made before the child starts: the making blocks this process, which serves the child's token request.
        frames = prerender(fx, int(duration * (MAX_RATE if math.isinf(rate) else rate)) + 100)
        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--child", kind, "--db", target],
            env=env,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(30):
                await fx.wait_subscribed(fx.private_channels())
            pg = "postgresql" in db_url
            server0 = backend_cpu(db_url) if pg else {}
            offered = await offer(fx, rate, duration, frames)
            await trio.sleep(0.5)  # let the pipeline commit the tail before the stop
            server1 = backend_cpu(db_url) if pg else {}
            server = sum(cpu - server0.get(pid, 0.0) for pid, cpu in server1.items())
            process.send_signal(signal.SIGINT)
            assert process.stdout is not None
            out = b""
            with trio.fail_after(60):
                async for chunk in process.stdout:
                    out += chunk
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["delivered"] = offered
        result["server_cpu"] = server
        return result


def backend_cpu(db_url: str) -> dict[int, float]:
    """CPU seconds (user + system) of each PostgreSQL backend connected to ``db_url``'s database, by pid (from
    ``/proc``: only for a server on this machine). Other databases' work (another bench, a test run) is not counted;
    the WAL writer's and checkpointer's is not either (they serve every database)."""
    import psycopg

    database = db_url.split("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        pids = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    cpu: dict[int, float] = {}
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a backend that ended between the query and the read
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return cpu


def prerender(fx: Any, frames: int) -> list[Any]:
    """At least ``frames`` frames made by the fake's model now, before the measured window, not delivered: the
    offered load then costs only their delivery. The model (order book, ledger, JSON text) is most of the fake's CPU,
    and the fake shares this 2-core machine with the pipeline it measures; made during the window it took a core
    the pipeline needed (bench/fake_throughput.py: ~6,600 frames/s per CPU second). The frames' exchange times are
    those of the making; latency is measured from the pipeline's own receive."""
    clock = int(fx.clock() * 1_000_000)
    out: list[Any] = []
    while len(out) < frames:
        out.extend(fx.model.step(clock))
        clock += 1_000
    return out


async def offer(fx: Any, rate: float, duration: float, frames: list[Any]) -> int:
    """Deliver ``frames`` at ``rate``/s for ``duration`` s (catching up every couple of ms: trio's sleep granularity
    is about 1 ms, so a sleep per frame caps near 1,000 frames/s), or as fast as delivery allows for ``inf``, until
    the duration or the frames run out. Returns how many were delivered."""
    start = trio.current_time()
    sent = 0
    while (now := trio.current_time()) - start < duration and sent < len(frames):
        if math.isinf(rate):
            await fx.hub.deliver(frames[sent : sent + 20])
            sent += 20
            await trio.lowlevel.checkpoint()
            continue
        due = int((now - start) * rate) - sent
        if due > 0:
            await fx.hub.deliver(frames[sent : sent + due])
            sent += due
        else:
            await trio.sleep(0.002)
    return min(sent, len(frames))


def fresh_db(kind: str, backend: str, tmp: Path, pg_url: str | None, made: list[str] | None = None) -> str:
    """A new migrated database for one measurement: a SQLite file in ``tmp``, or a schema ``bench_*`` in ``pg_url``'s
    database (its name appended to ``made``, for ``drop_schemas`` at the end)."""
    from tracker.store import migrate

    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'{kind}-{uuid.uuid4().hex[:6]}.db'}"
        if kind == "tracker":
            migrate.upgrade(url)
        return url
    assert pg_url is not None
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    if made is not None:
        made.append(schema)
    base = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    migrate.upgrade(url)
    return url


def drop_schemas(pg_url: str, schemas: list[str]) -> None:
    """The measurements' schemas dropped (a database named with ``--pg-url`` is the user's: it is left as it was)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_database(explicit: str | None) -> tuple[str | None, str | None]:
    """(url of a database to use, name of a throwaway database to drop at the end)."""
    if explicit:
        return explicit, None
    try:
        import psycopg

        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name
    except Exception as exc:
        print(f"(PostgreSQL not reachable at {PG_ADMIN}: {exc}; skipping it)")
        return None, None


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


async def parent(args: argparse.Namespace) -> None:
    rates = [math.inf if r == "max" else float(r) for r in args.rates.split(",")]
    explicit_pg = args.pg_url or os.environ.get("TRACKER_BENCH_PG_URL")
    pg_url, throwaway = (None, None) if args.no_pg else pg_database(explicit_pg)
    targets = [("baseline", "sqlite"), ("tracker", "sqlite")]
    targets += [("baseline", "postgresql"), ("tracker", "postgresql")] if pg_url else []
    header = f"{'offered':>8} {'pipeline':<20} {'sustained/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'batches':>8}"
    print(header + f" {'ratio':>6} {'CPU us/ev':>9} {'server us/ev':>12}")
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rate in rates:
                base_rate: float | None = None
                for kind, backend in targets:
                    db_url = fresh_db(kind, backend, Path(tmp), pg_url, made)
                    r = await measure(kind, db_url, rate, args.duration)
                    sustained = r["ws"] / r["span"] if r["span"] > 0 else 0.0
                    if kind == "baseline":
                        base_rate = sustained
                    ratio = f"{sustained / base_rate:.0%}" if base_rate and kind != "baseline" else ""
                    offered = "max" if math.isinf(rate) else f"{rate:.0f}"
                    cpu_us = f"{r['cpu'] / r['ws'] * 1e6:.0f}" if r["ws"] else "-"
                    server_us = f"{r['server_cpu'] / r['ws'] * 1e6:.0f}" if r["ws"] and backend != "sqlite" else ""
                    print(
                        f"{offered:>8} {kind + '/' + backend:<20} {sustained:>12.0f} {fmt_ms(r['p50']):>8} "
                        f"{fmt_ms(r['p99']):>8} {r['batches']:>8} {ratio:>6} {cpu_us:>9} {server_us:>12}",
                        flush=True,
                    )
    finally:
        if pg_url and not throwaway:
            drop_schemas(pg_url, made)
        if throwaway:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{throwaway}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of offered load per measurement")
    parser.add_argument("--rates", default="1000,2000,5000,10000,max", help="offered frames/s; max = unpaced")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg-url", help="an existing PostgreSQL database to use (or TRACKER_BENCH_PG_URL)")
    parser.add_argument("--child", choices=("tracker", "baseline", "group"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--envs", help=argparse.SUPPRESS)  # --child group: a JSON file of the accounts' environments
    args = parser.parse_args()
    if args.child == "tracker":
        print(json.dumps(trio.run(child_tracker, args.db)), flush=True)
    elif args.child == "group":
        envs_file = Path(args.envs)  # written by bench/accounts.py for this child: read and removed
        envs = json.loads(envs_file.read_text(encoding="utf-8"))
        envs_file.unlink()
        print(json.dumps(trio.run(child_group, args.db, envs)), flush=True)
    elif args.child == "baseline":
        print(json.dumps(trio.run(child_baseline, args.db)), flush=True)
    else:
        trio.run(parent, args)


if __name__ == "__main__":
    main()
