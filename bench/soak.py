"""Soak: ``tracker run`` (a real child process) against the fake exchange at a high event rate for a long time, with
a random fault every ~10 s; at the end, zero lost and zero doubled against the fake's ground truth, and the tracker's
memory flat.

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 1000] [--fault-every 10] [--seed 1] [--db-url URL]
                                   [--modes all | --modes unsigned,error-200,refuse-channel=my_trades_btcusd ...]
                                   [--kill-every 20] [--term-every 20]
                                   [--pg-outage-every 30 | --sqlite-lock-every 30]

The fake runs in this process (its ground truth is at hand at the end); the tracker is ``python -m tracker run`` on a
fresh database (a SQLite file in a temporary directory by default), so its RSS (``/proc/PID/status``: VmRSS, and
VmHWM for the peak) is the tracker's alone. Faults, drawn from one seeded ``random.Random``, every
``fault_every * U(0.5, 1.5)`` seconds:

    reconnect  bts:request_reconnect (tokens invalidated, sockets closed 3 s later)
    drop       abrupt TCP drop of every connection
    stall      connections go silent for 2-6 s (frames reach REST only)
    pause      delivery withheld for 2-6 s (REST only)
    duplicate  the next 1-20 frames delivered twice
    malformed  an invalid-JSON frame on every connection
    unknown    a frame with an unknown event name
    token      every websocket token invalidated (the next connection must fetch a new one)
    reject     the next 1-5 HTTP requests answered 429 (rate limited)

``--modes`` switches the fake's behaviour modes on (tracker/fake/modes.py, docs/fake.md; ``all``: every one at once,
the refused channel being ``my_token_settlements``). A refused channel is left out of the subscriptions waited for and
of the final burst (its frames can reach the tracker only over REST). At the end the REST requests the tracker made
are printed per endpoint, with the share of the exchange's budget of 10,000 requests per 10 minutes they used: in the
busiest 10 minutes of the run, and at the run's mean rate (the one that matters for a run shorter than 10 minutes).

``--kill-every S``: besides the faults, the tracker itself is killed with SIGKILL (kill -9) every ``S * U(0.5, 1.5)``
seconds, at whatever it is doing (appending a batch, projecting, backfilling, reconciling, mid-way through a
reconnect), and the same command is started again on the same database after ``U(0, 2)`` seconds (the exchange's
activity goes on meanwhile: the restart must backfill it). The kill moments come from their own ``random.Random`` (the
seed's fault sequence is the same with and without kills). The end is the same: the last tracker catches up, exits
on SIGINT, and the views equal the truth. The RSS figures are then those of several processes (the growth means
nothing); tests/test_crash_recovery.py kills at chosen phases without faults, this mixes both.

``--term-every S``: the same with SIGTERM or SIGINT (drawn at random) instead of kill -9: the tracker must exit 0
within 60 s (everything it received committed), else the soak fails; then it is started again.
``--pg-outage-every S``: the database is a private PostgreSQL server (tests/pg_server.py: initdb in a temporary
directory on a free port, never the shared one), stopped (``pg_ctl -m fast``: clients disconnected) for U(1, 8) s every
``S * U(0.5, 1.5)`` seconds (its own ``random.Random``; counted as the fault ``db-outage``). A ``--term-every`` stop
that falls in an outage must still exit 0: the outages are shorter than the stop's 10 s grace, in which the writer
keeps what it received and commits it once the server is back (a longer one would end the run with exit 2 and the
frames not committed counted, runtime/writer.py). A restart
that falls in one is refused (exit 2, "cannot connect to the database"): started again after 1 s, as systemd's
``Restart=on-failure`` would.
``--sqlite-lock-every S``: on SQLite, the same outages as another connection's ``BEGIN EXCLUSIVE`` on the file. They
are shorter than the tracker's 30 s ``busy_timeout``: its writer waits inside SQLite (back-pressure), it never meets
"database is locked" (tests/test_db_faults.py takes that path, with a short timeout).

Self trades are switched off: no REST endpoint reports self-trade-prevention offsets, so a ``self_trade`` frame
withheld by a fault cannot be recovered by any tracker (see tests/test_backfill_e2e.py). Periodic reconciliation runs
every ``--reconcile-every`` seconds (default 60), as it would in production (every 300 s by default there).

At the end: activity stops, one last live burst continues every order stream, the tracker catches up (every gap it
recorded closed, its projector at the log's head), SIGINT (exit 0 expected), then the views are compared with the
truth. With the mode ``market-wide-chain`` (in ``all``) a chain break is no gap, so what a last pause withheld with the
connection up is found by the periodic reconciliation only: the end then also waits for one that began after the
burst (two ``reconciled`` entries), as a user's tracker finds them at its next one. "Lost": a fill, order,
settlement (or insurance fund premium) or position of the truth missing from the views.
"Doubled": a websocket frame or dedup key twice in the log, a fill counted twice in ``v_fees_daily``, a settlement
twice in ``v_settlements``, or a projected fill, order, settlement or position the truth does not have. "Wrong":
present once with other values (a position's side, size, status, entry price, fees or realised PnL; a balance).
Liquidation alerts (``my_liquidations``) are not compared: like self trades no REST endpoint reports them, so one a
fault withheld is gone for any tracker (the liquidation's fills and settlement are compared). Two known limits are
printed ("known limit"), not counted: an insurance fund premium whose ``my_settlements`` frame was withheld (REST has
it only as a ``user_transactions`` row of type 60: its balance is right, its ``v_settlements`` row missing), and a
position left ``closed`` instead of ``liquidated`` because its ``liquidation_concluded`` alert was withheld. With the
mode ``derivatives-refused`` (in ``all``) every derivatives endpoint is refused while the fake's websocket still trades
perps: a withheld settlement has no REST source and a fill learned from ``user_transactions`` no position, so missing
settlements and positions and differing positions are printed as known limits too. After the tracker's exit, what
it committed after its stop is projected here (as its next run would) before the views are read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import trio
from sqlalchemy import Engine, func, select, text

from tracker.domain.money import format_decimal
from tracker.fake.modes import Modes
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projection_schema import CHECKPOINT_NAME, projector_checkpoint
from tracker.store.projections import ProjectionStore
from tracker.store.schema import event_log

MARKETS = ("btcusd", "ethusd", "btcusd-perp")
# v_fees_daily summed over trade accounts (a fill only REST returned has none: its own row), exactly on both backends
# (tracker's SQLite connections sum decimal text exactly).
FEE_DAYS = (
    "SELECT day, market, sum(fills), sum(volume), sum(fees), sum(base_volume) FROM v_fees_daily GROUP BY day, market"
)
FAULTS = ("reconnect", "drop", "stall", "pause", "duplicate", "malformed", "unknown", "token", "reject")
REST_BUDGET = 10_000  # requests per 10 minutes per account (docs/bitstamp.md §5.8)
REST_WINDOW_S = 600.0


@dataclass
class SoakReport:
    seconds: float = 0.0
    rate: float = 0.0
    frames_generated: int = 0
    log_entries: int = 0
    ws_entries: int = 0
    quarantined: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    kills: int = 0  # kill -9 of the tracker, each followed by a restart (--kill-every)
    terms: int = 0  # SIGTERM/SIGINT of the tracker, each exiting 0, then a restart (--term-every)
    refused_starts: int = 0  # restarts that fell in a database outage: refused (exit 2), started again
    rss_first_mb: float = 0.0  # right after subscribing, before load
    rss_start_mb: float = 0.0  # after the warm-up (caches and buffers filled)
    rss_end_mb: float = 0.0  # at the end, from a settled tracker (see SETTLED_S)
    rss_peak_mb: float = 0.0  # VmHWM, the highest of every tracker sampled (with kills, several processes)
    rss_samples_mb: list[float] = field(default_factory=list)
    fills: int = 0
    orders: int = 0
    settlements: int = 0  # and insurance fund premiums (v_settlements)
    positions: int = 0
    lost: int = 0
    doubled: int = 0
    wrong: int = 0  # present once but with different values
    problems: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)  # known limits (the module docstring): shown, not counted
    modes: list[str] = field(default_factory=list)
    rest_requests: dict[str, int] = field(default_factory=dict)  # per endpoint, from the tracker's start to its exit
    rest_seconds: float = 0.0  # how long the tracker ran (the span of rest_requests)
    rest_busiest_window: int = 0  # the most requests in any REST_WINDOW_S

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb

    @property
    def rest_total(self) -> int:
        return sum(self.rest_requests.values())

    @property
    def rest_budget_at_mean_rate(self) -> float:
        """The share of the 10-minute budget the run's mean request rate would use in 10 minutes."""
        return self.rest_total / self.rest_seconds * REST_WINDOW_S / REST_BUDGET if self.rest_seconds else 0.0

    def rest_summary(self) -> list[str]:
        lines = [
            f"REST: {self.rest_total:,} requests in {self.rest_seconds:.0f} s "
            f"({self.rest_total / max(self.rest_seconds, 1e-9) * 60:.1f}/min); budget {REST_BUDGET:,} per 10 min: "
            f"{self.rest_budget_at_mean_rate:.2%} at the mean rate, busiest 10 min {self.rest_busiest_window:,} "
            f"({self.rest_busiest_window / REST_BUDGET:.2%})"
        ]
        width = max((len(k) for k in self.rest_requests), default=0)
        lines += [f"  {k:<{width}} {v:>7,}" for k, v in sorted(self.rest_requests.items(), key=lambda kv: -kv[1])]
        return lines

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        return (
            f"soak: {self.seconds / 60:.1f} min at {self.rate:.0f} frames/s: "
            f"{self.frames_generated:,} frames generated, "
            f"{self.log_entries:,} log entries ({self.ws_entries:,} ws), {self.quarantined} quarantined; "
            f"{sum(self.faults.values())} faults ({faults}); {self.kills} kill -9; {self.terms} SIGTERM; "
            f"{self.refused_starts} starts refused by the database; "
            f"truth: {self.fills:,} fills, {self.orders:,} orders, {self.settlements:,} settlements, "
            f"{self.positions:,} positions; "
            f"lost {self.lost}, doubled {self.doubled}, wrong {self.wrong}; "
            + ("tracker RSS" if not self.kills + self.terms else "tracker RSS (several processes, see --kill-every)")
            + f": {self.rss_first_mb:.1f} MB idle, "
            f"{self.rss_start_mb:.1f} MB after warm-up, {self.rss_end_mb:.1f} MB at the end "
            f"({self.rss_growth_mb:+.1f} MB), peak {self.rss_peak_mb:.1f} MB; exit code {self.exit_code}"
            + (f"; modes: {', '.join(self.modes)}" if self.modes else "")
        )


# --- the tracker child -----------------------------------------------------------------------------------------------


def child_env(fx: FakeExchange, db_url: str, reconcile_every: float) -> dict[str, str]:
    return fx.tracker_env(os.environ, TRACKER_DB_URL=db_url, TRACKER_RECONCILE_INTERVAL=str(reconcile_every))


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


# --- faults ----------------------------------------------------------------------------------------------------------


async def apply_fault(fx: FakeExchange, kind: str, rng: random.Random) -> None:
    if kind == "reconnect":
        await fx.request_reconnect(close_after=3.0)
    elif kind == "drop":
        await fx.drop_connections()
    elif kind == "stall":
        fx.stall()
        try:
            await trio.sleep(rng.uniform(2, 6))
        finally:
            fx.unstall()
    elif kind == "pause":
        fx.pause_delivery()
        try:
            await trio.sleep(rng.uniform(2, 6))
        finally:
            fx.resume_delivery()
    elif kind == "duplicate":
        fx.duplicate_next(rng.randint(1, 20))
    elif kind == "malformed":
        await fx.send_malformed()
    elif kind == "unknown":
        await fx.send_unknown_event()
    elif kind == "token":
        fx.invalidate_tokens()
    elif kind == "reject":
        fx.reject_next_requests(rng.randint(1, 5))
    else:
        raise ValueError(kind)


async def run_faults(fx: FakeExchange, rng: random.Random, every: float, counts: Counter[str]) -> None:
    while True:
        await trio.sleep(every * rng.uniform(0.5, 1.5))
        kind = rng.choice(FAULTS)
        counts[kind] += 1
        await apply_fault(fx, kind, rng)


# --- kill -9 ----------------------------------------------------------------------------------------------------------


async def catching_stop_signals(proc: trio.Process, within: float = 10.0) -> None:
    """Wait until ``proc`` catches SIGTERM (``SigCgt`` in ``/proc/PID/status``; ``tracker.cli.main`` installs the
    handler first thing). Before that the interpreter itself is starting, and no program can handle a signal then:
    it takes its default action (exit -15), which is not what the soak tests (a stop at any moment of the tracker's
    own start-up, tests/test_stop_signals.py)."""
    with trio.move_on_after(within):
        while proc.returncode is None:
            try:
                status = await trio.Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
            if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
                return
            await trio.sleep(0.005)  # another process starting: nothing to wait on


SETTLED_S = 10.0  # a restarted tracker's age before its RSS counts as the warm-up or end sample (start-up, backfill)


@dataclass
class Child:
    """The tracker child of the moment: ``--kill-every`` replaces it (kill -9, then the same command again)."""

    env: dict[str, str]
    log_path: Path
    proc: trio.Process | None = None
    restarting: bool = False  # between the kill and the new process: not a failure, no RSS to sample
    started_at: float = 0.0  # trio time of the current process's start
    kills: int = 0
    terms: int = 0
    refused: int = 0  # starts refused because the database was out of reach (restart_if_db_refused)
    # One replacement at a time: --kill-every and --term-every run as two tasks, and a SIGTERM sent while a kill -9's
    # restart was under way found the killed process (exit -9) and failed the soak.
    replacing: trio.Lock = field(default_factory=trio.Lock)

    @property
    def current(self) -> trio.Process:
        assert self.proc is not None, "the tracker was never started"
        return self.proc

    async def start(self, banner: str = "") -> trio.Process:
        with self.log_path.open("ab") as out:
            if banner:
                out.write(f"\n=== {banner}\n".encode())
                out.flush()
            self.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tracker", "run"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.started_at = trio.current_time()
        return self.proc

    def died(self) -> int | None:
        """The exit code of a tracker that ended on its own (None while it runs, or while being restarted)."""
        return None if self.restarting else self.current.returncode

    async def running(self, before: str) -> trio.Process:
        """The tracker of the moment, running: one whose restart was refused meanwhile (a database outage) is started
        again, as the main loop does; one that ended otherwise fails the soak (``before``: what was to be sent).
        Called under ``replacing``."""
        while (code := self.current.returncode) is not None:
            if not await self.restart_if_db_refused(code):
                raise RuntimeError(f"tracker exited with {code} before {before}")
        return self.current

    async def kill_and_restart(self, rng: random.Random) -> None:
        """kill -9, then the same command again. Shielded: the end of the soak never finds a tracker half-replaced."""
        proc = await self.running("kill -9")
        self.restarting = True
        with trio.CancelScope(shield=True):
            proc.send_signal(signal.SIGKILL)
            with trio.fail_after(10):
                await proc.wait()
            self.kills += 1
            await trio.sleep(rng.uniform(0, 2))  # the exchange goes on meanwhile: a window to backfill
            await self.start(f"restart after kill -9 #{self.kills}")
        self.restarting = False

    async def term_and_restart(self, rng: random.Random, within: float = 60) -> None:
        """SIGTERM (or SIGINT), an exit code 0 within ``within`` seconds (everything received committed), then the same
        command again. Shielded like ``kill_and_restart``."""
        proc = await self.running("SIGTERM")
        self.restarting = True
        with trio.CancelScope(shield=True):
            await catching_stop_signals(proc)
            proc.send_signal(rng.choice((signal.SIGTERM, signal.SIGINT)))
            with trio.fail_after(within):
                code = await proc.wait()
            if code != 0:
                raise RuntimeError(f"tracker exited with {code} on SIGTERM/SIGINT #{self.terms + 1}")
            self.terms += 1
            await trio.sleep(rng.uniform(0, 2))
            await self.start(f"restart after SIGTERM/SIGINT #{self.terms}")
        self.restarting = False

    async def restart_if_db_refused(self, code: int) -> bool:
        """A restart that fell in a database outage: ``tracker run`` refuses to start (exit 2, "cannot connect to the
        database"), and its supervisor (systemd's ``Restart=on-failure``) starts it again: so does the soak, after
        1 s. Nothing was received by that process, so nothing is lost; anything else is a failure (False)."""
        if code != 2 or "cannot connect to the database" not in self.log_path.read_text(errors="replace")[-2000:]:
            return False
        self.restarting = True
        with trio.CancelScope(shield=True):
            self.refused += 1
            await trio.sleep(1)
            await self.start(f"restart after a start-up refused by the database #{self.refused}")
        self.restarting = False
        return True


async def run_kills(child: Child, rng: random.Random, every: float, *, term: bool = False) -> None:
    while True:
        await trio.sleep(every * rng.uniform(0.5, 1.5))
        async with child.replacing:  # not while the other task replaces it
            if term:
                await child.term_and_restart(rng)
            else:
                await child.kill_and_restart(rng)


async def run_db_outages(
    stop: Callable[[], None], start: Callable[[], None], rng: random.Random, every: float, counts: Counter[str]
) -> None:
    """The database out of reach (``stop``: the server stopped, or the SQLite file locked) for U(1, 8) s every
    ``every * U(0.5, 1.5)`` s."""
    while True:
        await trio.sleep(every * rng.uniform(0.5, 1.5))
        with trio.CancelScope(shield=True):  # never leave the server down
            await trio.to_thread.run_sync(stop)
            counts["db-outage"] += 1
            await trio.sleep(rng.uniform(1, 8))
            await trio.to_thread.run_sync(start)


@dataclass
class SqliteLocker:
    """``--sqlite-lock-every``: another connection takes the file's exclusive lock (``BEGIN EXCLUSIVE``: no other
    writer until it ends; WAL readers go on), what a backup tool or a careless ``sqlite3`` shell does."""

    path: Path
    conn: sqlite3.Connection | None = None

    def lock(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def unlock(self) -> None:
        assert self.conn is not None
        self.conn.rollback()
        self.conn.close()
        self.conn = None


# --- REST requests ---------------------------------------------------------------------------------------------------


@dataclass
class RestCounter:
    """Every HTTP request the fake receives (the tracker is its only client), by endpoint, with its trio time."""

    times: list[float] = field(default_factory=list)
    endpoints: Counter[str] = field(default_factory=Counter)

    def __call__(self, method: str, path: str) -> None:
        self.times.append(trio.current_time())
        self.endpoints[path.removeprefix("/api/v2/").split("/", 1)[0] or path] += 1

    def busiest(self, window: float) -> int:
        """The most requests within any ``window`` seconds (two pointers over the sorted times)."""
        best = start = 0
        for end, t in enumerate(self.times):
            while t - self.times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best


# --- the database, from outside --------------------------------------------------------------------------------------


class Probe:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def head(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(event_log.c.seq), 0))).scalar_one())

    def checkpoint(self) -> int:
        query = select(projector_checkpoint.c.seq).where(projector_checkpoint.c.name == CHECKPOINT_NAME)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one_or_none() or 0)

    def reconciled(self) -> int:
        """The periodic reconciliations the tracker logged so far (``reconciled`` entries)."""
        query = select(func.count()).where(event_log.c.source == "tracker", event_log.c.event == "reconciled")
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def caught_up(self, wanted: set[str]) -> bool:
        """Every gap recorded is closed, the given frames are logged, and the projector is at the head."""
        detected: set[str] = set()
        completed: set[str] = set()
        query = select(event_log.c.event, event_log.c.payload).where(
            event_log.c.source == "tracker", event_log.c.event.in_(("gap_detected", "backfill_completed"))
        )
        with self.engine.connect() as conn:
            for event, payload in conn.execute(query):
                data = json.loads(payload)["data"]
                if event == "gap_detected":
                    detected.add(data["gap_id"])
                else:
                    completed.update(data["gap_ids"])
            if detected - completed:
                return False
            if wanted:
                found = conn.execute(
                    select(func.count()).select_from(event_log).where(event_log.c.payload.in_(sorted(wanted)))
                ).scalar_one()
                if found < len(wanted):
                    return False
        return self.checkpoint() == self.head()


async def poll(what: str, check: Callable[[], bool], *, within: float, proc: trio.Process) -> None:
    """Another process writes the database: a bounded poll (no event crosses processes)."""
    with trio.move_on_after(within):
        while not await trio.to_thread.run_sync(check):
            if proc.returncode is not None:
                raise RuntimeError(f"{what}: tracker exited with {proc.returncode}")
            await trio.sleep(0.2)
        return
    raise RuntimeError(f"{what}: not reached within {within} s")


# --- comparison with the truth ---------------------------------------------------------------------------------------


def _d(value: Any) -> str | None:
    return None if value is None else format_decimal(Decimal(str(value)))


def fake_balances(truth: dict[str, Any]) -> dict[tuple[str, str], Decimal]:
    """The fake's balance of every trade account and currency (its books: the truth's ``accounts``)."""
    return {
        (str(tai), str(currency)): Decimal(str(amount))
        for tai, account in truth["accounts"].items()
        for currency, amount in account["balances"].items()
    }


def balance_gaps(engine: Engine, books: dict[tuple[str, str], Decimal]) -> dict[tuple[str, str], Any]:
    """``{(trade account, currency): (v_balances, the fake's)}`` where they differ (a missing balance counts as 0)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT trade_account_id, currency, balance FROM v_balances")).all()
    mine = {(str(t), str(c)): Decimal(str(b)) for t, c, b in rows}
    zero = Decimal(0)
    return {
        k: (mine.get(k, zero), books.get(k, zero))
        for k in set(mine) | set(books)
        if mine.get(k, zero) != books.get(k, zero)
    }


# A fill takes its order's trade account when its source names none (REST): docs/semantics.md, Fees per day.
FILLS_WITHOUT_THEIR_ORDERS_ACCOUNT = (
    "SELECT f.trade_id FROM v_fills f JOIN v_orders o ON o.account = f.account AND o.order_id = f.order_id"
    " WHERE f.trade_account_id IS NULL AND o.trade_account_id IS NOT NULL"
)
# and the other way (``--modes orders-without-trade-account``: every order's account comes from its fills)
ORDERS_WITHOUT_THEIR_FILLS_ACCOUNT = (
    "SELECT DISTINCT o.order_id FROM v_orders o JOIN v_fills f ON f.account = o.account AND f.order_id = o.order_id"
    " WHERE o.trade_account_id IS NULL AND f.trade_account_id IS NOT NULL"
)


def compare_with_truth(engine: Engine, truth: dict[str, Any], report: SoakReport) -> None:
    with engine.connect() as conn:
        fills = {
            r[0]: tuple(_d(v) for v in r[1:])
            for r in conn.execute(text("SELECT trade_id, amount, price, fee FROM v_fills"))
        }
        orders = {
            r[0]: (r[1], _d(r[2]))
            for r in conn.execute(text("SELECT order_id, status, amount_remaining FROM v_orders"))
        }
        days = {(str(r[0]), r[1]): (int(r[2]), _d(r[3]), _d(r[4]), _d(r[5])) for r in conn.execute(text(FEE_DAYS))}
        settlements = {
            str(r[0]): (r[1], _d(r[2]))
            for r in conn.execute(text("SELECT transaction_id, kind, amount FROM v_settlements"))
        }
        settlement_rows = int(conn.execute(text("SELECT count(*) FROM v_settlements")).scalar_one())
        positions = {
            str(r[0]): (r[1], _d(r[2]), r[3], _d(r[4]), _d(r[5]), _d(r[6]))
            for r in conn.execute(
                text("SELECT position_id, side, size, status, entry_price, fees, realised_pnl FROM v_positions")
            )
        }
        total, keys = conn.execute(
            select(func.count(), func.count(event_log.c.dedup_key.distinct())).select_from(event_log)
        ).one()
        ws_total, ws_distinct = conn.execute(
            select(func.count(), func.count(event_log.c.payload.distinct())).where(event_log.c.source == "ws")
        ).one()
        checks = conn.execute(
            text("SELECT trade_account_id, currency, snapshot_seq, difference FROM v_balance_checks")
        ).all()
        unchecked = conn.execute(text("SELECT count(*) FROM v_balance_checks WHERE status = 'agrees'")).scalar_one()
        report.quarantined = int(conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one())
        unknown_accounts = [str(r[0]) for r in conn.execute(text(FILLS_WITHOUT_THEIR_ORDERS_ACCOUNT))]
        untaught_orders = [str(r[0]) for r in conn.execute(text(ORDERS_WITHOUT_THEIR_FILLS_ACCOUNT))]
    report.log_entries, report.ws_entries = int(total), int(ws_total)
    want_fills = {f["trade_id"]: (_d(f["amount"]), _d(f["price"]), _d(f["fee"])) for f in truth["fills"]}
    want_orders = {o["order_id"]: (o["status"], _d(o["amount_remaining"])) for o in truth["orders"]}
    want_days = {
        (d["day"], d["market"]): (d["fills"], _d(d["volume"]), _d(d["fees"]), _d(d["base_volume"]))
        for d in truth["fees_daily"]
    }
    want_settlements = {str(x["transaction_id"]): (x["kind"], _d(x["amount"])) for x in truth["settlements"]}
    want_positions = {
        str(x["position_id"]): (
            x["side"],
            _d(x["size"]),
            x["status"],
            _d(x["entry_price"]),
            _d(x["fees"]),
            _d(x["realised_pnl"]),
        )
        for x in truth["positions"]
    }
    report.fills, report.orders = len(want_fills), len(want_orders)
    report.settlements, report.positions = len(want_settlements), len(want_positions)

    def problem(kind: str, items: Any) -> int:
        items = sorted(items, key=str)
        if items:
            report.problems.append(f"{kind}: {len(items)}, e.g. {items[:3]}")
        return len(items)

    def limit(kind: str, items: Any) -> None:
        """A known limit (the module docstring): shown, not counted."""
        items = sorted(items, key=str)
        if items:
            report.limits.append(f"{kind}: {len(items)}, e.g. {items[:3]}")

    missing_settlements = want_settlements.keys() - settlements.keys()
    premiums = {k for k in missing_settlements if want_settlements[k][0] == "insurance_fund_premium"}
    limit("insurance fund premiums withheld (REST has them only as user_transactions type 60)", premiums)
    # derivatives-refused: every derivatives endpoint refused (a spot-only account's answer) while the fake's
    # websocket still trades perps, so a settlement frame withheld has no REST source, nor a perp fill's position
    # (user_transactions rows carry none): the positions cannot be compared. Shown, not counted.
    perp_blind = "derivatives-refused" in report.modes
    blind_settlements = missing_settlements - premiums if perp_blind else set()
    limit("settlements withheld while derivatives endpoints are refused (no REST source)", blind_settlements)
    blind_positions = want_positions.keys() - positions.keys() if perp_blind else set()
    limit("positions missing while derivatives endpoints are refused (no REST source)", blind_positions)
    report.lost = (
        problem("fills lost", want_fills.keys() - fills.keys())
        + problem("orders lost", want_orders.keys() - orders.keys())
        + problem("settlements lost", missing_settlements - premiums - blind_settlements)
        + problem("positions lost", want_positions.keys() - positions.keys() - blind_positions)
    )
    # A position is "liquidated" only by its liquidation_concluded alert: one withheld leaves it "closed". Differences
    # in that field alone are shown, not counted. (A position's entry price and flat side follow the exchange's order
    # of its fills since migration 0012: a difference there is counted.)
    unliquidated: set[str] = set()
    blind: set[str] = set()
    for k in positions.keys() & want_positions.keys():
        mine, want = positions[k], want_positions[k]
        differ = {i for i in range(len(mine)) if mine[i] != want[i]}
        if (mine[2], want[2]) == ("closed", "liquidated"):
            differ.discard(2)
            unliquidated.add(k)
        if differ and perp_blind:
            blind.add(k)
        if differ:
            unliquidated.discard(k)  # counted as wrong below (or, perps blind, shown as such)
    limit("positions closed, not liquidated (their liquidation_concluded alert withheld)", unliquidated)
    limit("positions that differ while derivatives endpoints are refused (no REST source)", blind)
    known = unliquidated | blind
    doubled_days = [k for k, v in days.items() if k in want_days and v[0] > want_days[k][0]]
    report.doubled = (
        problem("dedup keys twice in the log", range(int(total) - int(keys)))
        + problem("websocket frames twice in the log", range(int(ws_total) - int(ws_distinct)))
        + problem("fills not in the truth", fills.keys() - want_fills.keys())
        + problem("orders not in the truth", orders.keys() - want_orders.keys())
        + problem("v_fees_daily days with more fills than the truth", doubled_days)
        + problem("settlements twice in v_settlements", range(settlement_rows - len(settlements)))
        + problem("settlements not in the truth", settlements.keys() - want_settlements.keys())
        + problem("positions not in the truth", positions.keys() - want_positions.keys())
    )
    report.wrong = (
        problem("fills with other values", [k for k in fills.keys() & want_fills.keys() if fills[k] != want_fills[k]])
        + problem(
            "orders with another status/remaining",
            [(k, orders[k], want_orders[k]) for k in orders.keys() & want_orders.keys() if orders[k] != want_orders[k]],
        )
        + problem(
            "v_fees_daily rows that differ",
            [
                (k, days.get(k), want_days.get(k))
                for k in days.keys() | want_days.keys()
                if days.get(k) != want_days.get(k)
            ],
        )
        + problem(
            "settlements with another kind/amount",
            [k for k in settlements.keys() & want_settlements.keys() if settlements[k] != want_settlements[k]],
        )
        + problem(
            "positions that differ (side, size, status, entry price, fees, realised PnL)",
            [
                (k, positions[k], want_positions[k])
                for k in positions.keys() & want_positions.keys()
                if positions[k] != want_positions[k] and k not in known
            ],
        )
        + problem("balances that differ from the fake's", sorted(balance_gaps(engine, fake_balances(truth)).items()))
        + problem("balance snapshots that differ from the ledger", [c for c in checks if Decimal(str(c[3])) != 0])
        + problem("no balance snapshot agreed", [] if unchecked else ["v_balance_checks"])
        + problem("fills without the trade account their order names", unknown_accounts)
        + problem("orders without the trade account their fills name", untaught_orders)
    )


# --- the soak --------------------------------------------------------------------------------------------------------


async def soak(
    *,
    minutes: float,
    rate: float = 1000,
    fault_every: float = 10.0,
    seed: int = 1,
    db_url: str,
    workdir: Path,
    reconcile_every: float = 60,
    sample_every: float = 5.0,
    warm_up: float | None = None,
    say: Callable[[str], None] = print,
    modes: Modes | None = None,
    kill_every: float | None = None,
    term_every: float | None = None,
    db_outage: tuple[Callable[[], None], Callable[[], None], float] | None = None,
) -> SoakReport:
    """Run the soak (see the module docstring). ``warm_up``: seconds before the "start" RSS sample; by default past
    the first reconciliation (it walks the whole history once: a one-time peak) and at most half the run.
    ``kill_every``: mean seconds between two kill -9 of the tracker (each followed by a restart); None: never."""
    upgrade(db_url)
    engine = open_engine(db_url)
    modes = modes if modes is not None else Modes()
    report = SoakReport(rate=rate, modes=modes.names())
    rest = RestCounter()
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    duration = minutes * 60
    warm_up = min(reconcile_every + 15, duration / 2) if warm_up is None else warm_up
    log_path = workdir / "tracker.log"
    try:
        async with open_fake_exchange(seed=seed, markets=MARKETS, modes=modes) as fx:
            # see the module docstring: no self trades (no REST source); patching the fake's own generator is the point
            fx.model._self_trade = lambda: False  # type: ignore[method-assign]  # noqa: SLF001
            fx.http.faults.on_request.append(rest)
            # A refused channel is never subscribed: not waited for, and its frames reach the tracker over REST only.
            channels = [c for c in fx.private_channels() if not modes.refuses(c)]
            frames = [0]
            deliver = fx.hub.deliver

            async def counting(emissions: Any) -> Any:
                emissions = list(emissions)
                frames[0] += len(emissions)
                return await deliver(emissions)

            fx.hub.deliver = counting  # type: ignore[method-assign]
            proc_started = trio.current_time()
            child = Child(child_env(fx, db_url, reconcile_every), log_path)
            proc = await child.start()
            try:
                with trio.fail_after(60):
                    await fx.wait_subscribed(channels)
                report.rss_first_mb, _ = rss_mb(proc.pid)
                started = trio.current_time()
                generated_before = len(fx.model.state.fills)
                fx.set_rate(rate)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_faults, fx, rng, fault_every, counts)
                    if kill_every:
                        # its own generator: the seed's faults are the same with and without kills
                        nursery.start_soon(run_kills, child, random.Random(f"kill-{seed}"), kill_every)
                    if term_every:
                        nursery.start_soon(
                            partial(run_kills, term=True), child, random.Random(f"term-{seed}"), term_every
                        )
                    if db_outage:
                        nursery.start_soon(
                            run_db_outages, *db_outage[:2], random.Random(f"db-{seed}"), db_outage[2], counts
                        )
                    next_sample = started + warm_up
                    settled_rss = 0.0  # the last sample of a tracker at least SETTLED_S old
                    while (now := trio.current_time()) < started + duration:
                        await trio.sleep_until(min(started + duration, now + sample_every))
                        if (code := child.died()) is not None and not await child.restart_if_db_refused(code):
                            raise RuntimeError(f"tracker exited with {code} during the soak")
                        if child.restarting:
                            continue
                        rss, peak = rss_mb(child.current.pid)
                        report.rss_samples_mb.append(round(rss, 1))
                        # (not from a process started a moment ago, after a kill: a PostgreSQL soak's warm-up
                        # sample once caught one still loading the interpreter, 1.2 MB)
                        now = trio.current_time()
                        report.rss_peak_mb = max(report.rss_peak_mb, peak)  # over every process sampled
                        if now - child.started_at >= SETTLED_S:
                            settled_rss = rss
                            if not report.rss_start_mb and now >= next_sample:
                                report.rss_start_mb = rss
                        say(
                            f"  {trio.current_time() - started:6.0f} s: RSS {rss:.1f} MB (peak {peak:.1f}), "
                            f"{len(fx.model.state.fills) - generated_before:,} fills so far, faults {dict(counts)}"
                            + (f", kill -9 {child.kills}" if kill_every else "")
                            + (f", SIGTERM {child.terms}" if term_every else "")
                        )
                    nursery.cancel_scope.cancel()
                proc = child.current
                report.kills, report.terms, report.refused_starts = child.kills, child.terms, child.refused
                fx.set_rate(None)
                fx.unstall()
                fx.resume_delivery()
                report.seconds = trio.current_time() - started
                report.faults = dict(counts)
                end_rss, end_peak = rss_mb(proc.pid)
                report.rss_peak_mb = max(report.rss_peak_mb, end_peak)
                # The end sample, like the warm-up's, from a tracker that has settled: one restarted a moment ago
                # (a kill near the end) is still loading, and its 1.5 MB once read as "-115.8 MB" of growth.
                settled = trio.current_time() - child.started_at >= SETTLED_S
                report.rss_end_mb = end_rss if settled or not settled_rss else settled_rss
                # One live burst after the faults: every order stream goes on, so a frame a fault withheld shows as
                # a chain break if nothing else noticed it; then wait for the tracker to settle.
                await fx.wait_subscribed(channels)
                burst = {e.text for e in await fx.generate_frames(200) if e.channel in channels}
                probe = Probe(engine)
                await poll("caught up", lambda: probe.caught_up(burst), within=180, proc=proc)
                if modes.market_wide_chain:
                    # Its breaks are not gaps (domain/gaps.py GapWatch), so the frames a last pause withheld with the
                    # connection up are found by the periodic reconciliation only: wait for one that began after the
                    # burst (the second to finish from now), as a user's tracker finds them at its next one.
                    runs = probe.reconciled()
                    await poll("reconciled after the burst", lambda: probe.reconciled() >= runs + 2,
                               within=2 * reconcile_every + 120, proc=proc)  # fmt: skip
                    await poll("caught up again", lambda: probe.caught_up(burst), within=180, proc=proc)
                # The ledger capture walks every few seconds (TRACKER_LEDGER_INTERVAL): wait for its last rows.
                books = fake_balances(fx.truth())
                await poll("balances caught up", lambda: balance_gaps(engine, books) == {}, within=60, proc=proc)
                proc.send_signal(signal.SIGINT)
                with trio.fail_after(60):
                    report.exit_code = await proc.wait()
                report.rest_seconds = trio.current_time() - proc_started
            finally:
                if child.current.returncode is None:
                    child.current.kill()
                    await child.current.wait()
            truth = fx.truth()
            report.frames_generated = frames[0]
            report.rest_requests = dict(rest.endpoints)
            report.rest_busiest_window = rest.busiest(REST_WINDOW_S)
        # What the tracker committed after its stop (a walk finishing meanwhile) is projected by its next run
        # (runtime/projector.py): project it here, as that run would, before the views are read.
        ProjectionStore(engine).catch_up(EventLog(engine))
        compare_with_truth(engine, truth, report)
    finally:
        engine.dispose()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s from the fake (default 1000)")
    parser.add_argument("--fault-every", type=float, default=10.0, help="mean seconds between faults (default 10)")
    parser.add_argument("--reconcile-every", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--workdir", type=Path, help="keep the database and tracker log here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    parser.add_argument(
        "--modes",
        action="append",
        default=[],
        metavar="NAMES",
        help="fake-exchange modes, comma-separated or repeated: all, or e.g. unsigned,error-200,settlement-ms,"
        "refuse-channel=my_trades_btcusd (tracker/fake/modes.py)",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        metavar="S",
        help="also kill -9 the tracker every ~S seconds and start it again (default: never)",
    )
    parser.add_argument(
        "--term-every",
        type=float,
        metavar="S",
        help="also stop the tracker with SIGTERM or SIGINT every ~S seconds (exit 0 expected) and start it again",
    )
    parser.add_argument(
        "--pg-outage-every",
        type=float,
        metavar="S",
        help="run a private PostgreSQL server (tests/pg_server.py) and stop it for 1-8 s every ~S seconds",
    )
    parser.add_argument(
        "--sqlite-lock-every",
        type=float,
        metavar="S",
        help="SQLite: hold the file's exclusive lock from another connection for 1-8 s every ~S seconds",
    )
    args = parser.parse_args(argv)
    try:
        modes = Modes.parse(args.modes)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="tracker-soak-") as temp, contextlib.ExitStack() as stack:
        tmp = args.workdir or Path(temp)
        tmp.mkdir(parents=True, exist_ok=True)
        db_url = args.db_url or f"sqlite:///{Path(tmp) / 'soak.db'}"
        db_outage = None
        if args.pg_outage_every:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from pg_server import pg_server

            server = stack.enter_context(pg_server())
            db_url = server.url
            db_outage = (server.stop, server.start, args.pg_outage_every)
        elif args.sqlite_lock_every:
            locker = SqliteLocker(Path(db_url.removeprefix("sqlite:///")))
            db_outage = (locker.lock, locker.unlock, args.sqlite_lock_every)
        t0 = time.perf_counter()
        report = trio.run(
            lambda: soak(
                minutes=args.minutes,
                rate=args.rate,
                fault_every=args.fault_every,
                seed=args.seed,
                db_url=db_url,
                workdir=Path(tmp),
                reconcile_every=args.reconcile_every,
                modes=modes,
                kill_every=args.kill_every,
                term_every=args.term_every,
                db_outage=db_outage,
            )
        )
        print(report.summary())
        print("\n".join(report.rest_summary()))
        for line in report.problems:
            print("  PROBLEM", line)
        for line in report.limits:
            print("  known limit", line)
        print(f"wall time {time.perf_counter() - t0:.0f} s")
        if args.json:
            extra = {"rss_growth_mb": report.rss_growth_mb, "rest_budget_at_mean_rate": report.rest_budget_at_mean_rate}
            print(json.dumps({**asdict(report), **extra}))
    ok = report.exit_code == 0 and not (report.lost or report.doubled or report.wrong)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
