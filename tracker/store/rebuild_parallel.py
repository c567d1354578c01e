"""``tracker rebuild`` on two cores (SQLite and PostgreSQL): two worker processes fold two groups of markets apart,
when that is provably the same as folding the whole log in order.

Why: the fold is pure Python, ~35 µs of CPU per event end to end on one core; a 1M-event log is half a minute. A
second process is the only way to use the second core (threads share one interpreter lock). Events cannot be sent
between processes for less than it costs to parse them (encoding and decoding together cost about what parsing does:
``rebuild_reader.py``, which sends them all the same when the log cannot be split), so each worker reads and parses its
own part of the log.

1. Plan (``log_head``, then ``plan_until`` while the workers start): the head ``until``; entries per market
   (sampled on a long log: the counts only balance the loads); the
   markets in two groups of about equal size (group 1: ``Plan.markets``, group 0: every other market), markets that
   share a position id in one group. An entry without a market (a settlement, a liquidation alert, a tracker entry)
   goes with its position's group: group 1 if its position has entries in group 1's markets (``Plan.positions``),
   else group 0.
2. Each worker (``run_worker``, a child process) folds its group's entries up to ``until``, in seq order, into its
   own SQLite scratch file (``<db>.rebuild.<part>``, or for PostgreSQL ``part<part>.db`` in the rebuild's temporary
   directory) with a fresh ``ProjectionStore``, and reports after each batch the
   hashes of the row keys its fold read or wrote for the first time, per table.
3. The proof (``KeyLedger``, checked batch by batch as the reports come): the fold of an event reads and writes only
   rows it names by key, so when the two groups touched no common key in any table, folding them apart and putting
   the rows together is the same as folding the log in order. The exception is ``counters`` (kept out of the check):
   a counter's value is a count and its ``last_seq`` a maximum, so they merge by sum and max. Both workers hash
   with one ``PYTHONHASHSEED`` (chosen per rebuild), so equal keys have equal hashes; a collision of different keys
   can only make the check fail, never let a shared row through.
4. At the first shared key (say an order id that appears under two markets, which Bitstamp's data never has), the
   workers are stopped and the caller folds the log in one process. Otherwise ``rebuild.py`` swaps the two parts
   in, in one transaction.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import subprocess
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from sqlalchemy import text

from tracker.bitstamp.channels import parse_channel
from tracker.domain.rows import TABLES
from tracker.store import child_processes as children
from tracker.store.engine import open_engine, open_scratch, writer
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import projector_checkpoint, shadow_tables
from tracker.store.projections import BatchResult, ProjectionStore

PARALLEL_MIN_ENTRIES: Final = 100_000  # below this a second process costs more than it saves (~0.5 s to start)
SHADOW_PREFIX: Final = "rebuild_"
SHADOW_CHECKPOINT: Final = "rebuild"
MERGED: Final = "counters"  # the table whose rows the parts share: merged, not proven apart
# The rebuild allocates tens of millions of short-lived objects (events, rows, Decimals) and keeps few: with the
# default threshold (700) the collector runs ~100,000 times over a 1M-event log, ~10% of the CPU time.
GC_THRESHOLD: Final = 50_000
PLAN_SAMPLES: Final = 64  # runs of PLAN_SAMPLE_SPAN seqs that count a long log's markets (``_channel_counts``)
PLAN_SAMPLE_SPAN: Final = 1_000


@dataclass(frozen=True, slots=True)
class Plan:
    until: int  # the head when the plan was made: both parts fold the entries up to it
    markets: tuple[str, ...]  # group 1's markets; group 0 has the others
    positions: frozenset[str]  # positions with entries in group 1's markets: their market-less entries go there


def make_plan(engine: Any, *, min_entries: int = PARALLEL_MIN_ENTRIES) -> Plan | None:
    """How to split the log in two (``None``: not worth it, or it cannot be split)."""
    until = log_head(engine, min_entries=min_entries)
    return None if until is None else plan_until(engine, until)


def log_head(engine: Any, *, min_entries: int = PARALLEL_MIN_ENTRIES) -> int | None:
    """The head ``until`` the plan is made for (one lookup of the primary key), or ``None`` when the log has fewer
    than ``min_entries`` entries (seqs are gapless from 1). Quick enough to decide on it to start the workers, which
    then import while ``plan_until`` reads the log."""
    with engine.connect() as conn:
        until = int(conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM event_log").scalar_one())
    return until if until >= max(min_entries, 1) else None


def plan_until(engine: Any, until: int, *, samples: int = PLAN_SAMPLES, span: int = PLAN_SAMPLE_SPAN) -> Plan | None:
    """The plan for the entries up to ``until``: entries per market (``_channel_counts``: counted, or sampled on a
    large log), which markets share positions (they go in one group: a scan of the log, every entry, since a pair
    missed would make the parts share rows), the split, and group 1's positions. ``None`` when the log has fewer
    than two markets, or everything is one group."""
    with engine.connect() as conn:
        rows = _channel_counts(conn, until, samples, span)
        counts: dict[str, int] = {}
        for channel, n in rows:
            try:
                market = parse_channel(channel).market
            except ValueError:  # REST and tracker channels: their entries' markets are in the rows themselves
                continue
            if market:
                counts[market] = counts.get(market, 0) + int(n)
        if len(counts) < 2:
            return None
        pairs = conn.execute(
            text(
                "SELECT DISTINCT position_id, market FROM event_log"
                " WHERE seq <= :until AND position_id IS NOT NULL AND market IS NOT NULL AND market != ''"
            ),
            {"until": until},
        ).all()
    markets_of: dict[str, set[str]] = {}
    for position, market in pairs:
        markets_of.setdefault(str(position), set()).add(market)
    group_of = {market: market for market in counts}  # union-find: markets linked by a shared position

    def root(market: str) -> str:
        while group_of.setdefault(market, market) != market:
            market = group_of[market]
        return market

    for markets in markets_of.values():
        first, *rest = sorted(markets)
        for market in rest:
            group_of[root(market)] = root(first)
    linked: dict[str, int] = {}
    for market, n in counts.items():
        linked[root(market)] = linked.get(root(market), 0) + n
    roots = set(_split(linked))
    group1 = tuple(sorted(market for market in group_of if root(market) in roots))
    if not group1:
        return None
    chosen = set(group1)
    positions = frozenset(position for position, markets in markets_of.items() if markets & chosen)
    return Plan(until, group1, positions)


def _channel_counts(conn: Any, until: int, samples: int, span: int) -> list[tuple[str, int]]:
    """Entries per channel up to ``until``, or in proportion: what the split balances, nothing more.

    Counting every entry is a scan with a sort (no index on the channel since migration 0009): 0.7-1.4 s at 1M
    entries, while the workers wait for the plan. A log longer than ``4 * samples * span`` entries is counted in
    ``samples`` runs of ``span`` seqs spread evenly over it (the primary key serves each): ~0.05 s at 1M, and the
    shares of its markets within a per cent or so. The split only balances the workers' loads: a market the samples
    miss (a rare one) goes to group 0 (``Plan.markets`` lists group 1's), and what the parts may share is proven
    by ``KeyLedger`` whatever the counts were."""
    if until <= 4 * samples * span:
        return [
            (str(channel), int(n))
            for channel, n in conn.execute(
                text("SELECT channel, count(*) FROM event_log WHERE seq <= :until GROUP BY channel"), {"until": until}
            )
        ]
    totals: dict[str, int] = {}
    step = until // samples
    for first in range(1, samples * step, step):
        for channel, n in conn.execute(
            text("SELECT channel, count(*) FROM event_log WHERE seq BETWEEN :first AND :last GROUP BY channel"),
            {"first": first, "last": min(first + span - 1, until)},
        ):
            totals[str(channel)] = totals.get(str(channel), 0) + int(n)
    return list(totals.items())


def _split(counts: Mapping[str, int]) -> tuple[str, ...]:
    """Group 1 of a greedy split into two groups of about equal entries (largest market first); ``()`` for fewer
    than two markets."""
    if len(counts) < 2:
        return ()
    loads = [0, 0]
    group1: list[str] = []
    for market, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        part = 0 if loads[0] <= loads[1] else 1
        loads[part] += n
        if part == 1:
            group1.append(market)
    return tuple(sorted(group1))


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    part: int  # 0 or 1
    database: str  # the log's database URL, password included (the spec goes by the worker's stdin: see below)
    scratch: str  # the worker's own scratch file (made anew)
    plan: Plan
    batch: int


@dataclass(frozen=True, slots=True)
class PartResult:
    events: int
    rows_written: int
    cpu_seconds: float = 0.0  # the worker's CPU time
    peak_rss_mb: float = 0.0  # the worker's peak resident set (VmHWM)


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB (Linux ``VmHWM``; 0 where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_worker(spec: WorkerSpec, out: Connection) -> None:
    """A worker process's body: build the part, send ``("batch", events, rows, last_seq, new key hashes per
    table)`` per batch, then ``("done", PartResult)`` or ``("error", message)`` on ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    send = out.send

    try:
        result = _build_part(spec, send, os.getppid())
    except BaseException as error:  # every failure goes to the parent, which raises it
        send(("error", f"{type(error).__name__}: {error}"))
    else:
        send(("done", result))


def fold_part(spec: WorkerSpec) -> PartResult:
    """One part's fold in this process, as a worker does it, its batches' reports dropped (``bench/rebuild.py
    --contention`` times a part alone and beside the other)."""
    return _build_part(spec, lambda _: None, os.getppid())


def _build_part(spec: WorkerSpec, send: Callable[[tuple[Any, ...]], None], parent: int) -> PartResult:
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    log_engine = open_engine(spec.database, write=False)
    build = open_scratch(Path(spec.scratch))
    try:
        metadata, shadow = shadow_tables(SHADOW_PREFIX)
        with writer(build).begin() as conn:
            metadata.create_all(conn)
            projector_checkpoint.create(conn)
        touched: dict[str, set[int]] = {name: set() for name in TABLES if name != MERGED}
        store = ProjectionStore(build, tables=shadow, checkpoint_name=SHADOW_CHECKPOINT, fresh=True, touched=touched)
        log = EventLog(log_engine)
        plan, in_group1 = spec.plan, spec.part == 1
        last = events = rows = 0
        while last < plan.until:
            if os.getppid() != parent:
                raise RuntimeError("the rebuild that started this worker is gone")
            page = log.read_records_of_markets(last, spec.batch, plan.until, plan.markets, other_markets=not in_group1)
            if not page:
                break
            last = page[-1][0].seq
            kept = [record for record, position in page if record.market or (position in plan.positions) == in_group1]
            if kept:
                result = store.project(kept)
                if result is None:  # nothing else writes this file
                    raise RuntimeError("the scratch file's checkpoint moved")
                events += result.events
                rows += result.rows_written
                new = {name: array("q", hashes).tobytes() for name, hashes in store.new_touched.items() if hashes}
                send(("batch", result.events, result.rows_written, last, new))
        return PartResult(events, rows, time.process_time(), peak_rss_mb())
    finally:
        build.dispose()
        log_engine.dispose()


# What a worker is given no need of: the API credentials, and the database URL (it may hold a password), which its
# spec carries on its stdin instead, where no other user can read it (an environment is in /proc to its owner, and
# argv to everyone).
NOT_FOR_WORKERS: Final = ("BITSTAMP_API_KEY", "BITSTAMP_API_SECRET", "BITSTAMP_API_SECRET_FILE", "TRACKER_DB_URL")


def worker_environment(environ: Mapping[str, str], *, seed: int) -> dict[str, str]:
    """A worker's environment: ours without the secrets it has no use for, with the rebuild's hash seed."""
    env = {name: value for name, value in environ.items() if name not in NOT_FOR_WORKERS}
    env["PYTHONHASHSEED"] = str(seed)
    return env


class Workers:
    """Worker processes, started before their specs are known (they import while the caller finishes the plan).

    Workers are ``python -m tracker.store.rebuild_parallel`` children (``store/child_processes.py``). One
    ``PYTHONHASHSEED`` for all (see the module docstring). ``close()`` (or leaving the ``with`` block) kills any
    still running."""

    def __init__(self, count: int) -> None:
        env = worker_environment(os.environ, seed=secrets.randbelow(2**32))  # PYTHONHASHSEED's range
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pipes: list[Connection] = []
        try:
            for _ in range(count):
                process, pipe = children.spawn(__name__, env)
                self.processes.append(process)
                self.pipes.append(pipe)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(
        self,
        specs: Sequence[WorkerSpec],
        on_batch: Callable[[BatchResult], None] | None = None,
        ledger: KeyLedger | None = None,
    ) -> list[PartResult]:
        """Give each worker its spec and wait for all; their results in spec order. A worker's failure (or its
        death) raises ``StoreError``; ``ledger`` gets each batch's new key hashes as they come (and raises
        ``SharedRows`` as soon as two parts touched one row, which stops the work there)."""
        if len(specs) != len(self.processes):
            raise ValueError(f"{len(specs)} specs for {len(self.processes)} workers")
        for spec, process in zip(specs, self.processes, strict=True):
            children.send_spec(process, spec)

        def batch(index: int, message: tuple[Any, ...]) -> bool:
            if message[0] != "batch":
                return False
            _, events, rows, last, new = message
            if ledger is not None:
                ledger.add(index, new)
            if on_batch is not None:
                on_batch(BatchResult(events, last, rows, 0))
            return True

        return children.collect(
            self.processes,
            self.pipes,
            batch,
            died="a rebuild worker process died (exit code {code}): run `tracker rebuild` again",
            failed="a rebuild worker failed",
        )

    def close(self) -> None:
        children.stop(self.processes, self.pipes)


def build_parts(specs: Sequence[WorkerSpec], on_batch: Callable[[BatchResult], None] | None = None) -> list[PartResult]:
    """Run one worker process per spec to the end (see ``Workers``); on any exception (Ctrl-C included) every worker
    is stopped before it propagates."""
    with Workers(len(specs)) as workers:
        return workers.run(specs, on_batch)


class SharedRows(Exception):
    """Two parts touched a row with the same key: they cannot be folded apart."""


class KeyLedger:
    """The hashes of the row keys each part's fold touched so far, per table (but ``counters``), checked as they
    come: a hash that the other part has touched raises ``SharedRows`` at once, so a log that cannot be split costs
    only the batches folded until the first shared row, not a whole parallel rebuild."""

    def __init__(self, parts: int = 2) -> None:
        self.seen: list[dict[str, set[int]]] = [{} for _ in range(parts)]

    def add(self, part: int, new: Mapping[str, bytes]) -> None:
        for name, data in new.items():
            hashes = set(array("q", data))
            for other, seen in enumerate(self.seen):
                if other != part and not hashes.isdisjoint(seen.get(name, ())):
                    shared = len(hashes.intersection(seen[name]))
                    raise SharedRows(f"{shared} in {name}")
            self.seen[part].setdefault(name, set()).update(hashes)


def _main() -> None:
    """A worker process: its spec from stdin, its messages to stdout (see ``build_parts``)."""
    children.child_main(WorkerSpec, run_worker, "tracker.store.rebuild_parallel is started by `tracker rebuild`")


if __name__ == "__main__":
    # As the imported module, not as __main__: the spec was pickled as tracker.store.rebuild_parallel.WorkerSpec.
    from tracker.store.rebuild_parallel import _main as main

    main()
