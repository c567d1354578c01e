"""Crash recovery: ``kill -9`` of ``tracker run`` (and of ``tracker rebuild``) at random moments, 20+ times in one
test, against one fake exchange that outlives every tracker; then the views equal the fake's ground truth, no
half-written batch exists, and ``tracker verify`` passes.

The fake runs in this test's trio loop (so its ``truth()`` is at hand at the end) with paced activity the whole time;
each tracker is a real ``python -m tracker run`` child on the same database file. Each cycle starts a tracker, waits
for a chosen phase by polling the database (another process writes it: there is no event to wait on; every wait has a
deadline), adds a random delay within the phase, and sends SIGKILL:

- ``batch``: frames are flowing and being committed (writer batches and projector batches in flight);
- ``backfill``: the start-up backfill of the window the previous kill left is running (a ``gap_detected`` of this run
  without its ``backfill_completed``);
- ``rebuild``: a ``tracker rebuild`` child is half-way (its shadow checkpoint exists, the swap has not happened); it is
  killed, then the tracker beside it.

Randomness: one ``random.Random(seed)``, seed ``CRASH_SEED`` (env ``TRACKER_CRASH_SEED``, printed on failure), picks
the order of phases, how far into each phase to kill, and the rebuild batch size. Wall-clock timing still varies.

Self trades are switched off: no REST endpoint reports self-trade-prevention offsets, so a ``self_trade`` frame that
died with a killed process cannot be backfilled (the known limit in test_backfill_e2e.py).

Rules: loopback only, port 0, absolute timeouts, no sleep as synchronisation (cross-process waits poll the database
under a deadline).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from ledger_truth import assert_balances_equal_fake
from sqlalchemy import Engine, func, select, text
from test_backfill_e2e import assert_equals_truth, no_self_trades

from tracker.domain.money import format_decimal
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.store.engine import open_engine, sqlite_path
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projection_schema import PROJECTION_TABLES
from tracker.store.projections import ProjectionStore
from tracker.store.rebuild import SCRATCH_SUFFIX

# A bound against a hang only (every wait inside has its own deadline): 29 kills of real processes took 141 s with
# three pytest workers on this 2-core machine, 135 s with a CPU hog beside them; 240 s left a loaded CI less than 2x.
pytestmark = pytest.mark.timeout(480)

CRASH_SEED = int(os.environ.get("TRACKER_CRASH_SEED", "20261129"))
MARKETS = ("btcusd", "ethusd", "btcusd-perp")
# v_fees_daily summed over trade accounts (a fill only REST returned has none: its own row), exactly on both backends
# (tracker's SQLite connections sum decimal text exactly).
FEE_DAYS = (
    "SELECT day, market, sum(fills), sum(volume), sum(fees), sum(base_volume) FROM v_fees_daily GROUP BY day, market"
)
RATE = 400  # frames/s from the fake, the whole time
PHASES = ["batch"] * 8 + ["backfill"] * 7 + ["rebuild"] * 7  # 22 kills of tracker run, 7 more of tracker rebuild
PHASE_TIMEOUT = 60.0  # a bound for a failure only: a backfill after a kill took over 30 s on a loaded machine
T = TypeVar("T")


# --- the database, seen from outside ---------------------------------------------------------------------------------


class Probe:
    """Read-only queries on the tracker's database from this process (in a worker thread)."""

    def __init__(self, engine: Engine, temporary: Path) -> None:
        self.engine = engine
        self.temporary = temporary  # the children's TMPDIR: a rebuild on PostgreSQL makes its scratch file there

    def _scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def head(self) -> int:
        return int(self._scalar("SELECT coalesce(max(seq), 0) FROM event_log"))

    def ws_after(self, seq: int) -> int:
        return int(self._scalar("SELECT count(*) FROM event_log WHERE seq > :s AND source = 'ws'", s=seq))

    def checkpoint(self, name: str = "projector") -> int | None:
        value = self._scalar("SELECT seq FROM projector_checkpoint WHERE name = :n", n=name)
        return None if value is None else int(value)

    def rebuilding_since(self, started: datetime) -> bool:
        """A rebuild begun at or after ``started`` has folded a batch and not swapped yet: its shadow checkpoint row
        exists, written since ``started`` (not a row a rebuild killed earlier left behind). The shadow is a scratch
        file, removed after the swap: beside a SQLite database, or in a directory of the children's TMPDIR for
        PostgreSQL (one a killed rebuild left there is removed by the next rebuild)."""
        database = sqlite_path(self.engine.url)
        if database is not None:
            return self._rebuilding_in(database.with_name(database.name + SCRATCH_SUFFIX), started)
        return any(self._rebuilding_in(path, started) for path in self.temporary.glob("tracker-rebuild-*/shadow.db"))

    @staticmethod
    def _rebuilding_in(path: Path, started: datetime) -> bool:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError:  # not there (yet, or any more)
            return False
        try:
            row = conn.execute("SELECT updated_at FROM projector_checkpoint WHERE name = 'rebuild'").fetchone()
        except sqlite3.DatabaseError:  # being made, or half-made by a killed rebuild (locked, or even "malformed":
            return False  # the scratch file has no journal on disk, by design; the next rebuild replaces it)
        finally:
            conn.close()
        if row is None:
            return False
        stamp = datetime.fromisoformat(row[0])
        return stamp.replace(tzinfo=UTC) >= started if stamp.tzinfo is None else stamp >= started

    def gaps_after(self, seq: int) -> tuple[set[str], set[str]]:
        """(gap ids detected, gap ids completed) in entries after ``seq``."""
        detected: set[str] = set()
        completed: set[str] = set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT event, payload FROM event_log WHERE seq > :s AND source = 'tracker'"
                    " AND event IN ('gap_detected', 'backfill_completed')"
                ),
                {"s": seq},
            )
            for event, payload in rows:
                data = json.loads(payload)["data"]
                if event == "gap_detected":
                    detected.add(data["gap_id"])
                else:
                    completed.update(data["gap_ids"])
        return detected, completed

    def open_gaps_after(self, seq: int) -> set[str]:
        detected, completed = self.gaps_after(seq)
        return detected - completed


async def poll(
    what: str,
    check: Callable[[], T | None],
    *,
    within: float = PHASE_TIMEOUT,
    proc: Any = None,
    exited_ok: bool = False,
) -> T | None:
    """Poll ``check`` (a blocking database read, run in a thread) until it returns a value that is not None/False.
    Another process writes the database: there is no event to wait on, so this is a bounded poll. With ``exited_ok``,
    a child that finished cleanly first ends the poll with None (it was too quick to be caught)."""
    with trio.move_on_after(within):
        while True:
            value = await trio.to_thread.run_sync(check)
            if value:
                return value
            if proc is not None and proc.returncode is not None:
                if exited_ok and proc.returncode == 0:
                    return None
                raise AssertionError(f"{what}: the child exited with {proc.returncode} first")
            await trio.sleep(0.005)  # cross-process: no event to wait on
    raise AssertionError(f"{what}: not reached within {within} s")


# --- children --------------------------------------------------------------------------------------------------------


@dataclass
class Children:
    fx: FakeExchange
    db_url: str
    log_path: Path
    temporary: Path  # the children's TMPDIR
    kills: dict[str, int] = field(default_factory=dict)
    mid: dict[str, int] = field(default_factory=dict)  # kills that provably landed inside the phase
    finished: dict[str, int] = field(default_factory=dict)  # children that finished before the kill arrived

    def env(self) -> dict[str, str]:
        # no periodic reconciliation in the way
        return self.fx.tracker_env(
            os.environ, TRACKER_DB_URL=self.db_url, TRACKER_RECONCILE_INTERVAL="3600", TMPDIR=str(self.temporary)
        )

    async def start(self, *args: str) -> trio.Process:
        with self.log_path.open("ab") as out:
            out.write(f"\n=== tracker {' '.join(args)}\n".encode())
            out.flush()
            return await trio.lowlevel.open_process(
                [sys.executable, "-m", "tracker", *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )

    async def kill(self, proc: trio.Process, phase: str, *, finished_ok: bool = False) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            code = await proc.wait()
        if finished_ok and code == 0:
            self.finished[phase] = self.finished.get(phase, 0) + 1
            return
        assert code == -signal.SIGKILL, f"{phase}: the child exited with {code} before the kill\n{self.tail()}"
        self.kills[phase] = self.kills.get(phase, 0) + 1

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def cycle(ch: Children, probe: Probe, rng: random.Random, phase: str) -> None:
    head0 = await trio.to_thread.run_sync(probe.head)
    run = await ch.start("run")
    try:
        if phase == "batch":
            # frames of this run committed, then a little later: the writer and the projector are mid-stream
            want = rng.randint(20, 600)
            await poll("frames flowing", lambda: probe.ws_after(head0) >= want, proc=run)
            await trio.sleep(rng.uniform(0, 0.2))  # the random moment (not synchronisation)
            await ch.kill(run, phase)
        elif phase == "backfill":
            gaps = await poll("a start-up gap detected", lambda: probe.open_gaps_after(head0), proc=run)
            await trio.sleep(rng.uniform(0, 0.03))  # the random moment
            await ch.kill(run, phase)
            if gaps & await trio.to_thread.run_sync(probe.open_gaps_after, head0):
                ch.mid[phase] = ch.mid.get(phase, 0) + 1
        else:
            await poll("frames flowing", lambda: probe.ws_after(head0) >= 20, proc=run)
            # Small batches keep the rebuild of this small log long enough to be caught half-way (it got fast).
            began = datetime.now(UTC)
            rebuild = await ch.start("rebuild", "--batch", str(rng.choice([10, 20, 50])))
            try:
                # the shadow checkpoint row exists from the shadow's first batch until the swap commits
                started = await poll(
                    "rebuild started", lambda: probe.rebuilding_since(began), proc=rebuild, exited_ok=True
                )
                if started:
                    await trio.sleep(rng.uniform(0, 0.05))  # the random moment
                # A rebuild that already finished is a kill that came too late: counted, not a failure.
                await ch.kill(rebuild, phase, finished_ok=True)
                if await trio.to_thread.run_sync(probe.rebuilding_since, began):
                    ch.mid[phase] = ch.mid.get(phase, 0) + 1
            finally:
                if rebuild.returncode is None:
                    rebuild.kill()
                    await rebuild.wait()
            await trio.sleep(rng.uniform(0, 0.1))
            await ch.kill(run, "run-after-rebuild")
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()


# --- the end state ---------------------------------------------------------------------------------------------------


def _d(value: Any) -> str | None:
    return None if value is None else format_decimal(Decimal(str(value)))


def assert_views_equal_truth(engine: Engine, truth: dict[str, Any]) -> None:
    """v_fills, v_orders and v_fees_daily (the public views) against the fake's truth; assert_equals_truth compares
    every column of the tables behind them."""
    with engine.connect() as conn:
        fills = {r[0]: r[1:] for r in conn.execute(text("SELECT trade_id, amount, price, fee FROM v_fills"))}
        orders = {r[0]: r[1:] for r in conn.execute(text("SELECT order_id, status, amount_remaining FROM v_orders"))}
        days = sorted((str(r[0]), r[1], int(r[2]), _d(r[3]), _d(r[4]), _d(r[5])) for r in conn.execute(text(FEE_DAYS)))
    assert {k: tuple(_d(v) for v in vs) for k, vs in fills.items()} == {
        f["trade_id"]: (_d(f["amount"]), _d(f["price"]), _d(f["fee"])) for f in truth["fills"]
    }
    assert {k: (s, _d(r)) for k, (s, r) in orders.items()} == {
        o["order_id"]: (o["status"], _d(o["amount_remaining"])) for o in truth["orders"]
    }
    assert days == sorted(
        (d["day"], d["market"], d["fills"], _d(d["volume"]), _d(d["fees"]), _d(d["base_volume"]))
        for d in truth["fees_daily"]
    )


def assert_no_half_written_batch(engine: Engine) -> set[str]:
    """The log is whole (gapless seq, each dedup key and each websocket frame once) and the projection never runs
    ahead of its checkpoint nor the checkpoint ahead of the log. Returns the checkpoint names stored."""
    entries = [e for page in EventLog(engine).iter_after(0, 5000) for e in page]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), "seq is not gapless"
    keys = [e.dedup_key for e in entries]
    assert len(keys) == len(set(keys)), "a dedup key is stored twice"
    ws = [e.payload for e in entries if e.source == "ws"]
    assert len(ws) == len(set(ws)), "a websocket frame is stored twice"
    head = entries[-1].seq
    checkpoint = ProjectionStore(engine).load_checkpoint()
    assert 0 < checkpoint <= head
    newest = {"fills": "seq", "orders": "last_seq", "self_trades": "seq", "settlements": "seq", "liquidations": "seq"}
    with engine.connect() as conn:
        for name, column in newest.items():
            top = conn.execute(select(func.coalesce(func.max(PROJECTION_TABLES[name].c[column]), 0))).scalar_one()
            assert top <= checkpoint, f"proj_{name} holds seq {top}, past the checkpoint {checkpoint}"
        names = {row[0] for row in conn.execute(text("SELECT name FROM projector_checkpoint"))}
    return names


def dump_projection(engine: Engine) -> dict[str, list[Any]]:
    return ProjectionStore(engine).all_rows()


async def run_cli(ch: Children, *args: str) -> tuple[int, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "tracker", *args],
        env=ch.env(),
        capture_stdout=True,
        stderr=subprocess.STDOUT,
        check=False,
    )
    return result.returncode, result.stdout.decode()


# --- the test --------------------------------------------------------------------------------------------------------


async def test_kill_9_at_random_moments_then_views_equal_truth(db_url: str, tmp_path: Path) -> None:
    await crash_and_check(db_url, tmp_path)


async def crash_and_check(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    rng = random.Random(CRASH_SEED)
    phases = list(PHASES)
    rng.shuffle(phases)
    engine = open_engine(db_url)
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    probe = Probe(engine, temporary)
    try:
        async with open_fake_exchange(seed=CRASH_SEED % 1000, markets=MARKETS) as fx:
            ch = Children(fx, db_url, tmp_path / "children.log", temporary)
            with no_self_trades(fx):
                fx.set_rate(RATE)
                for i, phase in enumerate(phases):
                    try:
                        await cycle(ch, probe, rng, phase)
                    except BaseException as exc:
                        exc.add_note(f"cycle {i} ({phase}), seed {CRASH_SEED}\n{ch.tail()}")
                        raise
                fx.set_rate(None)
                # The last start: everything the dead runs missed is backfilled, the live frames land, the projector
                # reaches the head; then SIGINT and a clean exit.
                head0 = await trio.to_thread.run_sync(probe.head)
                run = await ch.start("run")
                try:
                    await fx.wait_subscribed(fx.private_channels())
                    await poll("start-up backfill", lambda: probe.gaps_after(head0)[0], proc=run)
                    await poll("every gap closed", lambda: not probe.open_gaps_after(head0), proc=run)
                    live = {e.text for e in await fx.generate(100)}
                    await poll("live frames logged", lambda: live <= ws_payloads(engine), proc=run)
                    await poll("projector at the head", lambda: probe.checkpoint() == probe.head(), proc=run)
                    run.send_signal(signal.SIGINT)
                    with trio.fail_after(30):
                        code = await run.wait()
                    assert code == 0, ch.tail()
                finally:
                    if run.returncode is None:
                        run.kill()
                        await run.wait()
            # A reconciliation takes a balance snapshot of every trade account (after a walk to the ledger's head).
            code, out = await run_cli(ch, "reconcile")
            assert code in (0, 1), out  # 1: discrepancies found (fills-before-tracking and the like), not an error
            truth = fx.truth()
        print(
            f"\nkill -9 (seed {CRASH_SEED}): {ch.kills}; provably inside the phase: {ch.mid}; done first: {ch.finished}"
        )
        assert sum(ch.kills.values()) >= 20
        assert ch.mid.get("rebuild", 0) >= 1 and ch.mid.get("backfill", 0) >= 1, ch.mid

        ProjectionStore(engine).catch_up(EventLog(engine))  # the reconcile's snapshots
        assert_views_equal_truth(engine, truth)
        assert_balances_equal_fake(engine, truth)
        assert_equals_truth(fx, db_url)
        names = assert_no_half_written_batch(engine)
        assert "projector" in names
        code, out = await run_cli(ch, "verify")
        assert code == 0, out
        # Whatever a killed rebuild left behind, a full rebuild still equals the incremental projection.
        before = dump_projection(engine)
        code, out = await run_cli(ch, "rebuild")
        assert code == 0, out
        assert dump_projection(engine) == before
        assert "rebuild" not in assert_no_half_written_batch(engine)
        # The killed rebuilds' scratch directories too (PostgreSQL). Not SQLite's own temporary files (``etilqs_*``,
        # a sort's or a statement journal's): SQLite unlinks each right after creating it, so a kill -9 between the
        # two (microseconds, seen once in a CI run) leaves one, as it would of any program using SQLite; not ours.
        assert [path for path in temporary.iterdir() if not path.name.startswith("etilqs_")] == []
    finally:
        engine.dispose()


def ws_payloads(engine: Engine) -> set[str]:
    return {e.payload for page in EventLog(engine).iter_after(0, 5000) for e in page if e.source == "ws"}


# --- what the crash test found ---------------------------------------------------------------------------------------


def test_late_order_replaced_still_marks_the_original_replaced() -> None:
    """Found by the crash test: a restart hears the replacement's later events live, then the start-up backfill brings
    its older ``order_replaced`` (stale by event id). The original order must still end ``replaced``, not ``open``."""
    from pipeline import Log, order_frame

    from tracker.domain.projection import fold

    def eid(n: int) -> str:
        return f"00000000-0000-0000-0000-{n:012d}"

    log = Log()
    log.ws(order_frame("order_created", "1", event_id=eid(1)))
    log.ws(order_frame("order_deleted", "2", amount="0", event_id=eid(3)))  # the replacement's later event, live
    log.ws(order_frame("order_replaced", "2", event_id=eid(2), orig_order_id=1))  # its order_replaced, late
    state = fold(log.events())
    assert state.orders[("acc", "1")].status == "replaced"
    assert state.orders[("acc", "2")].status == "filled"
