"""One writer per account: ``tracker run`` children against the fake exchange (loopback, port 0).

- SQLite: a second ``tracker run`` on the same file is refused at once with one line naming the holder's pid, and it
  never connects to the exchange.
- PostgreSQL, same account: the second run is a hot standby (it never connects to the exchange while the first one
  holds the lease); ``kill -9`` of the holder → the standby subscribes within 5 s (measured and printed), backfills the
  window, and the views equal the fake's truth; ``tracker verify`` passes.
- PostgreSQL, two accounts (two fakes, their own user ids and credentials) → two ``tracker run`` into one database at
  once: both logs whole, the views per account equal each fake's truth, ``tracker verify`` passes.
- Fencing (in-process): the holder's lease connection is terminated and another session takes the lock → the holder's
  writer is refused (``LeaseLost``); a terminated connection with nobody waiting → the lock is taken again.

Rules: loopback only, port 0, an absolute timeout on every test; waits across processes poll the database or the
child's log under a deadline (there is no event to wait on); no sleep as synchronisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from sqlalchemy import Engine, text
from store_helpers import PG_ADMIN_URL
from test_backfill_e2e import no_self_trades

from tracker.domain.money import format_decimal
from tracker.errors import StoreError
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.lease import WriteGate, hold_account_lease
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.lease import LeaseLost, PgLease, Writer, file_lock_for, file_writer, lease_key, lease_writers
from tracker.store.migrate import upgrade
from tracker.store.status import read_status

pytestmark = pytest.mark.timeout(120)

MARKETS = ("btcusd", "ethusd")
FAILOVER_LIMIT_S = 5.0
T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------------------------------


def run_env(fx: FakeExchange, db_url: str) -> dict[str, str]:
    return fx.tracker_env(os.environ, TRACKER_DB_URL=db_url, TRACKER_RECONCILE_INTERVAL="3600")


async def start_run(fx: FakeExchange, db_url: str, log_path: Path) -> trio.Process:
    with log_path.open("ab") as out:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "tracker", "run"], env=run_env(fx, db_url), stdout=out, stderr=subprocess.STDOUT
        )


async def stop_run(proc: trio.Process, log_path: Path) -> None:
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        code = await proc.wait()
    assert code == 0, text_of(log_path)


async def poll(what: str, check: Callable[[], T], *, within: float = 30.0, interval: float = 0.01) -> T:
    """Poll a cross-process condition (a blocking read, in a thread) under a deadline."""
    with trio.move_on_after(within):
        while True:
            value = await trio.to_thread.run_sync(check)
            if value:
                return value
            await trio.sleep(interval)  # another process writes: nothing to wait on
    raise AssertionError(f"{what}: not reached within {within} s")


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def subscribed_count(engine: Engine, account: str) -> int:
    return int(
        scalar(
            engine,
            "SELECT count(*) FROM event_log WHERE source = 'tracker' AND event = 'subscribed' AND account = :a",
            a=account,
        )
    )


def ws_payloads(engine: Engine, account: str) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT payload FROM event_log WHERE source = 'ws' AND account = :a"), {"a": account})
        return {row[0] for row in rows}


def _d(value: Any) -> str | None:
    return None if value is None else format_decimal(Decimal(str(value)))


def assert_account_views_equal_truth(engine: Engine, account: str, truth: dict[str, Any]) -> None:
    """v_fills, v_orders and v_fees_daily of one account against its fake's truth."""
    where = {"a": account}
    with engine.connect() as conn:
        fills = {
            r[0]: tuple(_d(v) for v in r[1:])
            for r in conn.execute(text("SELECT trade_id, amount, price, fee FROM v_fills WHERE account = :a"), where)
        }
        orders = {
            r[0]: (r[1], _d(r[2]))
            for r in conn.execute(
                text("SELECT order_id, status, amount_remaining FROM v_orders WHERE account = :a"), where
            )
        }
        days = sorted(
            (str(r[0]), r[1], int(r[2]), _d(r[3]), _d(r[4]))
            for r in conn.execute(
                text(
                    "SELECT day, market, sum(fills), sum(volume), sum(fees) FROM v_fees_daily WHERE account = :a"
                    " GROUP BY day, market"  # summed over trade accounts (a REST-only fill's is unknown)
                ),
                where,
            )
        )
    assert fills == {f["trade_id"]: (_d(f["amount"]), _d(f["price"]), _d(f["fee"])) for f in truth["fills"]}
    assert orders == {o["order_id"]: (o["status"], _d(o["amount_remaining"])) for o in truth["orders"]}
    assert days == sorted(
        (d["day"], d["market"], d["fills"], _d(d["volume"]), _d(d["fees"])) for d in truth["fees_daily"]
    )
    assert fills and orders


async def tracker_verify(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env["TRACKER_DB_URL"] = db_url
    result = await trio.run_process(
        [sys.executable, "-m", "tracker", "verify"], env=env, capture_stdout=True, stderr=subprocess.STDOUT, check=False
    )
    assert result.returncode == 0, result.stdout.decode()


async def projected_to_head(engine: Engine) -> None:
    await poll(
        "projector at the head",
        lambda: (
            scalar(engine, "SELECT seq FROM projector_checkpoint WHERE name = 'projector'")
            == scalar(engine, "SELECT max(seq) FROM event_log")
        ),
    )


# --- pure ------------------------------------------------------------------------------------------------------------


def test_lease_key_is_stable_signed_64_bit_and_per_account() -> None:
    assert lease_key("314159") == lease_key("314159")
    assert lease_key("314159") != lease_key("271828")
    assert all(-(2**63) <= lease_key(str(a)) < 2**63 for a in range(200))
    # A fixed value: the key must not change between versions, or two versions could both write one account.
    assert lease_key("314159") == int.from_bytes(
        __import__("hashlib").blake2b(b"tracker:314159", digest_size=8).digest(), "big", signed=True
    )


# --- SQLite: a second writer is refused ----------------------------------------------------------------------------


async def test_sqlite_second_tracker_run_is_refused_with_one_line(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    log_path = tmp_path / "first.log"
    async with open_fake_exchange(seed=5, markets=MARKETS) as fx:
        first = await start_run(fx, db_url, log_path)
        try:
            with trio.fail_after(30):
                await fx.wait_subscribed(fx.private_channels())
            connections = fx.hub.connections_total
            with trio.fail_after(30):
                second = await trio.run_process(
                    [sys.executable, "-m", "tracker", "run"],
                    env=run_env(fx, db_url),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            err = second.stderr.decode().strip().splitlines()
            assert second.returncode == 2, err
            assert err[-1] == (
                f"tracker: error: another tracker run is writing to tracker.db (pid {first.pid}): stop it first, "
                "or use PostgreSQL for a hot standby"
            )
            assert len(err) == 1, err  # one line, no traceback
            assert fx.hub.connections_total == connections, "the refused run connected to the exchange"
            await stop_run(first, log_path)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        # The lock went with the first process: a new run starts (and stops) normally.
        again = await start_run(fx, db_url, log_path)
        try:
            with trio.fail_after(30):
                await fx.wait_connections_total(connections + 1)
                await fx.wait_subscribed(fx.private_channels())
            await stop_run(again, log_path)
        finally:
            if again.returncode is None:
                again.kill()
                await again.wait()


# --- PostgreSQL: hot standby and failover ----------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_standby_takes_over_within_5_s_of_kill_9(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url)
    engine = open_engine(pg_url)
    log_a, log_b = tmp_path / "holder.log", tmp_path / "standby.log"
    try:
        async with open_fake_exchange(seed=11, markets=MARKETS) as fx:
            account = str(fx.user_id)
            with no_self_trades(fx):
                fx.set_rate(200)
                holder = await start_run(fx, pg_url, log_a)
                standby: trio.Process | None = None
                try:
                    with trio.fail_after(30):
                        await fx.wait_subscribed(fx.private_channels())
                    await poll("frames committed", lambda: len(ws_payloads(engine, account)) >= 50)
                    standby = await start_run(fx, pg_url, log_b)
                    await poll("standby message", lambda: "standby: account" in log_b.read_text())
                    line = next(x for x in log_b.read_text().splitlines() if "standby:" in x)
                    assert f"account {account} is tracked by another process" in line
                    assert f"tracker run pid {holder.pid}" in line, line  # names the holder
                    # `tracker status` names both: the holder of the account's lease, and the standby.
                    writer = writer_of(engine, account)
                    assert (writer.pid, writer.standbys) == (holder.pid, (standby.pid,)), writer
                    # The standby never connects to the exchange while the holder lives.
                    connections = fx.hub.connections_total
                    # A standby stopped while it waits exits cleanly at once.
                    log_c = tmp_path / "standby2.log"
                    other = await start_run(fx, pg_url, log_c)
                    try:
                        await poll("second standby message", lambda: "standby: account" in text_of(log_c))
                        await stop_run(other, log_c)
                    finally:
                        if other.returncode is None:
                            other.kill()
                            await other.wait()
                    before = subscribed_count(engine, account)
                    await poll("more frames", lambda: len(ws_payloads(engine, account)) >= 150)
                    assert fx.hub.connections_total == connections
                    assert standby.returncode is None

                    killed_at = time.monotonic()
                    holder.send_signal(signal.SIGKILL)
                    await poll("standby subscribed", lambda: subscribed_count(engine, account) > before, within=10)
                    failover = time.monotonic() - killed_at
                    print(
                        f"\nfailover (kill -9 of the holder -> the standby's 'subscribed' committed): {failover:.2f} s"
                    )
                    assert failover < FAILOVER_LIMIT_S
                    assert "took over account" in log_b.read_text()
                    writer = writer_of(engine, account)
                    assert (writer.pid, writer.standbys) == (standby.pid, ()), writer

                    # The window without a subscriber is backfilled; the live frames after it land too.
                    fx.set_rate(None)
                    live = {e.text for e in await fx.generate(40)}
                    await poll("live frames logged", lambda: live <= ws_payloads(engine, account))
                    await poll(
                        "start-up backfill done",
                        lambda: scalar(
                            engine,
                            "SELECT count(*) FROM event_log WHERE event = 'backfill_completed' AND seq > "
                            "(SELECT max(seq) FROM event_log WHERE event = 'subscribed')",
                        ),
                    )
                    await projected_to_head(engine)
                    await stop_run(standby, log_b)
                finally:
                    for proc in (holder, standby):
                        if proc is not None and proc.returncode is None:
                            proc.kill()
                            await proc.wait()
                truth = fx.truth()
        assert_account_views_equal_truth(engine, account, truth)
        await tracker_verify(pg_url)
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_postgres_two_accounts_into_one_database(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url)
    engine = open_engine(pg_url)
    try:
        async with (
            open_fake_exchange(
                seed=21, markets=MARKETS, user_id=1001, api_key="keyAAAA" + "a" * 26, api_secret="secAAAA" + "a" * 26
            ) as fx_a,
            open_fake_exchange(
                seed=22, markets=MARKETS, user_id=2002, api_key="keyBBBB" + "b" * 26, api_secret="secBBBB" + "b" * 26
            ) as fx_b,
        ):
            fakes = (fx_a, fx_b)
            with no_self_trades(fx_a), no_self_trades(fx_b):
                procs = [await start_run(fx, pg_url, tmp_path / f"{fx.user_id}.log") for fx in fakes]
                try:
                    with trio.fail_after(30):
                        for fx in fakes:
                            await fx.wait_subscribed(fx.private_channels())  # both write at once: two leases
                    for fx in fakes:
                        fx.set_rate(150)
                    await poll(
                        "both logging", lambda: all(len(ws_payloads(engine, str(f.user_id))) >= 100 for f in fakes)
                    )
                    live = {}
                    for fx in fakes:
                        fx.set_rate(None)
                        live[fx.user_id] = {e.text for e in await fx.generate(20)}
                    for fx in fakes:
                        await poll(
                            "live frames logged", lambda fx=fx: live[fx.user_id] <= ws_payloads(engine, str(fx.user_id))
                        )
                    await projected_to_head(engine)
                    for fx, proc in zip(fakes, procs, strict=True):
                        await stop_run(proc, tmp_path / f"{fx.user_id}.log")
                finally:
                    for proc in procs:
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()
            truths = {fx.user_id: fx.truth() for fx in fakes}
            secrets = [s for fx in fakes for s in (fx.api_key, fx.api_secret, *fx.tokens.tokens)]
        accounts = {row[0] for row in engine.connect().execute(text("SELECT DISTINCT account FROM event_log"))}
        assert accounts == {"1001", "2002"}
        for user_id, truth in truths.items():
            assert_account_views_equal_truth(engine, str(user_id), truth)
        await tracker_verify(pg_url)
        # No key, secret or websocket token in any table of the database (every row as text).
        dump = await trio.to_thread.run_sync(dump_schema, engine)
        assert len(secrets) > 4 and "1001" in dump
        for secret in secrets:
            assert secret not in dump
    finally:
        engine.dispose()


def dump_schema(engine: Engine) -> str:
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        ).scalars()
        return "\n".join(
            str(row[0]) for table in list(tables) for row in conn.execute(text(f'SELECT t::text FROM "{table}" t'))
        )


# --- PostgreSQL: fencing ---------------------------------------------------------------------------------------------


def _holder_pids(engine: Engine, key: int) -> list[int]:
    """Backend pids holding the advisory lock ``key``."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    with engine.connect() as conn:
        return [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                    " AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid)"
                ),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF},
            )
        ]


def _terminate_lease_session(engine: Engine, key: int) -> int:
    pids = _holder_pids(engine, key)
    with engine.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.commit()
    return len(pids)


@pytest.mark.postgres
async def test_lease_connection_lost_then_taken_again_or_fenced(pg_url: str) -> None:
    upgrade(pg_url)
    engine = open_engine(pg_url)
    other = PgLease(engine, "777")
    thief = PgLease(engine, "888")
    try:
        # 1. The lease connection is terminated, nobody else wants the account: taken again, the gate reopens.
        lease, gate, stop, done = PgLease(engine, "777"), WriteGate(open_=False), trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            acquired = await nursery.start(
                lambda task_status: hold_account_lease(
                    lease, gate, stop, done, poll_s=0.05, check_s=0.05, task_status=task_status
                )
            )
            assert acquired is not None and gate.is_open
            (old_pid,) = await trio.to_thread.run_sync(_holder_pids, engine, lease.key)
            assert await trio.to_thread.run_sync(_terminate_lease_session, engine, lease.key) == 1
            await poll(
                "the lease taken again on a new connection",
                lambda: _holder_pids(engine, lease.key) not in ([], [old_pid]) and lease.held and gate.is_open,
                within=10,
            )
            assert not await trio.to_thread.run_sync(other.try_acquire)  # held again, by the first lease
            stop.set()
            done.set()

        # 2. Terminated, and another session takes the lock first: the holder is fenced, its writer refused.
        lease, gate, stop, done = PgLease(engine, "888"), WriteGate(open_=False), trio.Event(), trio.Event()
        appended: list[Any] = []
        guarded = gate.guard(lambda entries, quarantine: appended.append(entries))
        with pytest.raises(BaseExceptionGroup) as raised:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: hold_account_lease(
                        lease, gate, stop, done, poll_s=0.05, check_s=0.3, task_status=task_status
                    )
                )
                await trio.to_thread.run_sync(guarded, [1], [])
                assert await trio.to_thread.run_sync(_terminate_lease_session, engine, lease.key) == 1
                await poll("another session takes the lock", thief.try_acquire, within=10)
                await poll("fenced at the holder's next check (within check_s)", lambda: gate.lost, within=10)
                with pytest.raises(LeaseLost, match="another tracker run took over account 888"):
                    await trio.to_thread.run_sync(guarded, [2], [])
        assert raised.group_contains(LeaseLost)
        assert appended == [[1]]
    finally:
        thief.release()
        other.release()
        engine.dispose()


def writer_of(engine: Engine, account: str) -> Writer:
    """The account's writer as ``tracker status`` reads it."""
    found = [a.writer for a in read_status(engine).accounts if a.account == account]
    assert len(found) == 1 and found[0] is not None, found
    return found[0]


def test_status_names_the_sqlite_files_writer_until_it_is_killed(sqlite_url: str) -> None:
    """The process holding the file's lock is named; after its ``kill -9`` nobody is, though its pid stays written in
    the lock file (the kernel dropped the lock: ``file_writer`` asks ``/proc/locks``, not the file)."""
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    lock = file_lock_for(engine)
    assert lock is not None
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert read_status(engine).writer == Writer(holder.pid)
        holder.kill()
        holder.wait(timeout=10)
        assert lock.lock_path.read_text().strip() == str(holder.pid)  # what a killed holder leaves behind
        assert read_status(engine).writer == Writer(None)
        lock.acquire()  # and the lock is free, as the status says
        try:
            assert read_status(engine).writer == Writer(os.getpid())
        finally:
            lock.release()
        assert read_status(engine).writer == Writer(None)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        engine.dispose()


def test_file_writer_reads_the_kernels_lock_table(tmp_path: Path) -> None:
    """The ``/proc/locks`` lines ``file_writer`` takes for the lock: a FLOCK on the lock file's inode, on its device,
    or on another device name (a stacked filesystem) when the pid is the one the holder wrote; not a waiter's line,
    not another inode, not a POSIX lock."""
    database = tmp_path / "t.db"
    lock_file = tmp_path / "t.db.lock"
    lock_file.write_text("4242\n")
    stat = lock_file.stat()
    here = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    elsewhere = f"00:99:{stat.st_ino}"
    table = tmp_path / "locks"

    def writer(*lines: str) -> Writer:
        table.write_text("".join(line + "\n" for line in lines))
        return file_writer(database, locks=table)

    assert writer(f"1: FLOCK  ADVISORY  WRITE 4242 {here} 0 EOF") == Writer(4242)
    assert writer(f"1: FLOCK  ADVISORY  WRITE 777 {here} 0 EOF") == Writer(777)  # the kernel's word over the file's
    assert writer(f"1: FLOCK  ADVISORY  WRITE 4242 {elsewhere} 0 EOF") == Writer(4242)
    assert writer(f"1: FLOCK  ADVISORY  WRITE 777 {elsewhere} 0 EOF") == Writer(None)
    assert writer(f"1: -> FLOCK  ADVISORY  WRITE 777 {here} 0 EOF") == Writer(None)
    assert writer(f"1: POSIX  ADVISORY  WRITE 4242 {here} 0 EOF") == Writer(None)
    assert writer(f"1: FLOCK  ADVISORY  WRITE 4242 {here[:-1]}9999 0 EOF") == Writer(None)
    assert writer() == Writer(None)  # killed: the pid stays in the file, the kernel holds no lock


_HOLD_LOCK = """
import sys
from pathlib import Path
from tracker.store.lease import SqliteFileLock
SqliteFileLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.postgres
def test_status_names_each_accounts_lease_holder_and_standbys(pg_url: str) -> None:
    """In-process leases: the holder's pid and backend, a standby (its lease connection open, the lock refused), and
    nobody once both let go (the released connection goes back to the pool unnamed: not a standby)."""
    upgrade(pg_url)
    engine = open_engine(pg_url)
    holder, standby, other = PgLease(engine, "4101"), PgLease(engine, "4101"), PgLease(engine, "4102")

    def writers(*accounts: str) -> dict[str, Writer]:
        with engine.connect() as conn:  # a transaction of its own: PostgreSQL reads its activity once per transaction
            return lease_writers(conn, accounts)

    try:
        assert writers("4101", "4102") == {"4101": Writer(None), "4102": Writer(None)}
        assert holder.try_acquire() and not standby.try_acquire() and other.try_acquire()
        found = writers("4101", "4102", "4103")
        mine = found["4101"]
        assert (mine.pid, mine.standbys) == (os.getpid(), (os.getpid(),)) and mine.backend_pid, mine
        assert found["4102"].pid == os.getpid() and found["4102"].backend_pid != mine.backend_pid
        assert found["4103"] == Writer(None)
        for lease in (holder, standby, other):
            lease.release()
        assert writers("4101", "4102") == {"4101": Writer(None), "4102": Writer(None)}
    finally:
        for lease in (holder, standby, other):
            lease.release()
        engine.dispose()


def test_a_lease_in_another_database_is_not_this_ones_writer(pg_url: str) -> None:
    """An advisory lock is one database's: a ``tracker run`` writing account 4201 into another database of the same
    server (holder and standby there) is neither the writer nor a standby of 4201 here; the lease here is still free.
    (``pg_locks`` and ``pg_stat_activity`` list the whole server.)"""
    upgrade(pg_url)
    engine = open_engine(pg_url)
    elsewhere = open_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    there, waiting = PgLease(elsewhere, "4201"), PgLease(elsewhere, "4201")
    here = PgLease(engine, "4201")
    try:
        assert there.try_acquire() and not waiting.try_acquire()
        with engine.connect() as conn:
            assert lease_writers(conn, ["4201"]) == {"4201": Writer(None)}
        assert here.holder() is None  # what a standby here would name: nobody
        assert here.try_acquire()
    finally:
        for lease in (here, there, waiting):
            lease.release()
        engine.dispose()
        elsewhere.dispose()


def test_sqlite_lock_is_a_file_beside_the_database_and_refuses_a_second_holder(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        first, second = file_lock_for(engine), file_lock_for(engine)
        assert first is not None and second is not None
        first.acquire()
        try:
            assert first.lock_path.name == "tracker.db.lock"
            assert first.lock_path.read_text().strip() == str(os.getpid())
            with pytest.raises(StoreError, match=rf"writing to tracker.db \(pid {os.getpid()}\): stop it first"):
                second.acquire()
            assert first.lock_path.read_text().strip() == str(os.getpid())  # the refused one did not truncate it
            assert EventLog(engine).head() == 0  # nothing in the database itself
        finally:
            first.release()
        second.acquire()  # free again
        second.release()
    finally:
        engine.dispose()
