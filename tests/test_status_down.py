"""``tracker status`` names the accounts a running ``tracker run`` has given up as down, on both backends: why (the
reason the process logged), since when, when it is tried next; no longer once the account is tracked again; never
after the process is gone (``kill -9``: the rows stay, their lock does not).

Rules: loopback only, port 0, an absolute timeout on every test. The process's record is written off the event loop
and read by the CLI (its own engine, as another process would): those waits poll the database under a deadline
(``poll``); the accounts' own changes are waited on (``AccountState.changed``, the writer's commits). No sleep as
synchronisation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from test_accounts_cli import KEYS, child_env, write_config
from test_accounts_cli import MARKETS as CLI_MARKETS
from test_accounts_process import start_accounts
from test_lease import poll
from test_status import status, two_accounts_running

from tracker.cli.status import describe_back, describe_down
from tracker.config import load_accounts
from tracker.fake.server import open_fake_exchange
from tracker.runtime.config_reload import Reloads
from tracker.store.accounts_down import AccountDown, process_lock_name, replace_own, sweep_dead
from tracker.store.engine import open_engine
from tracker.store.lease import PgLease, file_lock_for
from tracker.store.migrate import upgrade
from tracker.store.status import read_status

pytestmark = pytest.mark.timeout(90)


def status_data(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    return dict(json.loads(status(capsys, url, "--format", "json")))


def accounts_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["account"]: a for a in data["accounts"]}


async def test_status_names_the_account_down_in_a_running_process_and_its_return(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two accounts in one ``tracker run``; the first one's key is deleted while it runs: its service ends, and the
    process tries it again and again (its key still refused) while the second one goes on. ``tracker status`` says so
    on either backend: account 1 of [[accounts]] (its user) is down since its first failure, with the reason the
    process logged and its next try; the other is up. The key back, it is tracked again, and status no longer says
    it is down."""
    url = db_url
    upgrade(url)
    engine = open_engine(url)
    try:
        # retry_base_s 1: tried again (and refused again) while the test looks
        async with two_accounts_running(
            url, engine, seeds=(5, 6), users=(710051, 710052), key="keydown", retry_base_s=1.0, frames=3
        ) as (one, _, first, _):
            running = await trio.to_thread.run_sync(status_data, capsys, url)
            assert running["down"] == [] and all(a["down"] is None for a in running["accounts"])

            one.revoke_key()
            await one.drop_connections()
            while first.down is None:
                await first.changed.wait()
            while first.failures < 2:  # its next try refused too: still down, since the first failure
                await first.changed.wait()
            data = await poll(
                "status says account 1 is down after two failures",
                lambda: (d := status_data(capsys, url))["down"] and d["down"][0]["failures"] >= 2 and d,
                interval=0.1,
            )
            text = await trio.to_thread.run_sync(status, capsys, url)
            since = first.down_since

            one.restore_key()
            while first.down is not None:
                await first.changed.wait()
            await one.wait_subscribed(one.private_channels())
            # The board clears the row when the new service has started (its connection handed to the writer, not
            # necessarily committed yet): wait for the connection in the log too, as asserted below.
            back = await poll(
                "status no longer says account 1 is down, and shows its new connection",
                lambda: (
                    (d := status_data(capsys, url))["down"] == []
                    and accounts_of(d)["710051"]["live_connections"] == 1
                    and d
                ),
                interval=0.1,
            )
            back_text = await trio.to_thread.run_sync(status, capsys, url)
    finally:
        engine.dispose()
    (down,) = data["down"]
    assert down["place"] == 1 and down["account"] == "710051" and down["pid"] == os.getpid()
    assert down["reason"].startswith("API key not found"), down
    assert since is not None and down["since"] == since.isoformat().replace("+00:00", "Z")  # the spell's first
    assert down["retry_at"] is not None and down["retry_at"] > down["since"]
    accounts = accounts_of(data)
    assert accounts["710051"]["down"] == down and accounts["710051"]["live_connections"] == 0
    assert accounts["710052"]["down"] is None and accounts["710052"]["live_connections"] == 1
    assert "down: 1 account of [[accounts]] not tracked (tried again by the run)\n" in text
    line = next(x for x in text.splitlines() if x.startswith("  account 1 of [[accounts]]"))
    assert line.startswith(
        f"  account 1 of [[accounts]] in tracker run pid {os.getpid()} (user 710051): down since "
    ), line
    assert ": API key not found" in line and ("; next try in " in line or "; being tried again (since " in line)
    assert "  710051  0 live connections, " in text and "; DOWN since " in text
    assert "  710052  1 live connection, " in text
    assert text.count("DOWN since") == 1
    assert accounts_of(back)["710051"]["down"] is None and accounts_of(back)["710051"]["live_connections"] == 1
    (again,) = back["tracked_again"]
    assert (again["place"], again["account"], again["down_since"]) == (1, "710051", down["since"])
    assert again["reason"].startswith("API key not found") and again["back_at"] > again["down_since"]
    assert again["failures"] >= 2
    assert "tracked again (after a spell down in this run):\n" in back_text
    assert f"  account 1 of [[accounts]] in tracker run pid {os.getpid()} (user 710051): tracked again since " in (
        back_text
    )


async def test_a_key_refused_at_the_start_is_down_with_no_user_until_a_reload_removes_it(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Account 1's key is refused at the process's start: it never said which Bitstamp user it is, so no entry of the
    log can name it; status names it by its place in the file (user not known) while account 2 runs. The file
    edited to remove it and reloaded: status no longer names it (and the kept account, now account 1, is up)."""
    upgrade(db_url)
    engine = open_engine(db_url)
    try:
        async with (
            open_fake_exchange(
                seed=21, markets=CLI_MARKETS, user_id=710081, api_key=KEYS[0][0], api_secret=KEYS[0][1]
            ) as one,
            open_fake_exchange(
                seed=22, markets=CLI_MARKETS, user_id=710082, api_key=KEYS[1][0], api_secret=KEYS[1][1]
            ) as two,
        ):
            one.revoke_key()
            config = write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
            env = child_env(config, db_url)
            reloads, stop = Reloads(), trio.Event()
            async with trio.open_nursery() as nursery:
                first, second = await start_accounts(
                    nursery, load_accounts(env=env), engine, stop, companions=False,
                    reload_from=partial(load_accounts, env=env), reloads=reloads, retry_base_s=600,
                )  # fmt: skip
                assert first.down is not None and second.down is None
                await two.wait_subscribed(two.private_channels())
                data = await poll(  # account 2's first frames reach the log a moment after it subscribed
                    "status says account 1 is down and account 2 has written",
                    lambda: (d := status_data(capsys, url=db_url))["down"] and d["down"][0]["retry_at"]
                    and d["accounts"] and d,
                    interval=0.1,
                )  # fmt: skip
                text = await trio.to_thread.run_sync(status, capsys, db_url)
                write_config(tmp_path, (two,), (KEYS[1][1],))
                reloads.request()
                with trio.fail_after(30):
                    await reloads.wait_finished(1)
                after = await poll(
                    "status no longer names the removed account",
                    lambda: (d := status_data(capsys, url=db_url))["down"] == [] and d,
                    interval=0.1,
                )
                stop.set()
    finally:
        engine.dispose()
    (down,) = data["down"]
    assert (down["place"], down["account"], down["failures"]) == (1, None, 1)
    assert down["reason"].startswith("API key not found: check its api_key"), down
    assert [a["account"] for a in data["accounts"]] == ["710082"] and data["accounts"][0]["down"] is None
    assert "  account 1 of [[accounts]] in tracker run pid " in text
    assert " (user not known: its key never said): down since " in text and "; next try in " in text
    assert [(a["account"], a["down"]) for a in after["accounts"]] == [("710082", None)]
    assert after["tracked_again"] == []  # removed, not back


# A process that records one account down as ``tracker run`` does (its board under the SQLite file's lock), says
# "ready" and waits to be killed.
CHILD = """
import sys
import trio
from tracker.config import Settings
from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.down_board import open_down_board
from tracker.runtime.lease import open_file_lock
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.errors import StoreError

async def main(url):
    engine = open_engine(url)
    state = AccountState(2, Settings(db_url=url))
    state.tracked_user = "710061"
    state.mark_down(StoreError("the exchange at http://127.0.0.1:1 cannot be reached"), None)
    state.retry_in(300)
    with open_file_lock(EventLog(engine)):
        async with open_down_board(engine, lambda: [state]):
            print("ready", flush=True)
            await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


async def test_a_killed_processs_accounts_down_are_not_shown(db_url: str, tmp_path: Path) -> None:
    """``kill -9`` of a process that has an account down: its row stays in the table, but ``tracker status`` no longer
    shows it (SQLite: its pid no longer holds the file's lock; PostgreSQL: its own lock went with its session)."""
    upgrade(db_url)
    engine = open_engine(db_url)
    out = tmp_path / "child.log"
    try:
        with out.open("wb") as sink:
            child = await trio.lowlevel.open_process(
                [sys.executable, "-c", CHILD, db_url], stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            await poll("the child ready", lambda: "ready" in out.read_text() or child.returncode is not None)
            assert child.returncode is None, out.read_text()
            shown = await trio.to_thread.run_sync(read_status, engine)
            assert [(d.place, d.user, d.pid) for d in shown.down] == [(2, "710061", child.pid)], out.read_text()
            assert shown.down[0].reason == "the exchange at http://127.0.0.1:1 cannot be reached"
            assert [(a.account, a.down is not None) for a in shown.accounts] == [("710061", True)]  # no entry of it
            child.send_signal(signal.SIGKILL)
            with trio.fail_after(30):
                assert await child.wait() == -signal.SIGKILL
            # SQLite: at once (the kernel dropped the flock at the exit); PostgreSQL: once the server ended its session.
            after = await poll(
                "the dead process's row no longer shown",
                lambda: not (s := read_status(engine)).down and s,
                interval=0.05,
            )
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert after.accounts == []
        with engine.connect() as conn:  # the row is still there: only its lock tells it is stale
            assert conn.exec_driver_sql("SELECT count(*) FROM accounts_down").scalar() == 1
    finally:
        engine.dispose()


def test_a_dead_processs_row_with_the_lock_holders_pid_is_not_shown(sqlite_url: str) -> None:
    """SQLite: a process killed with an account down left its row; a new ``tracker run`` with the same pid (a
    restarted container's tracker is pid 1 again) holds the file's lock now and has nothing down. The row is older
    than the lock's taking: not shown. A row the holder writes after taking it is."""
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    lock = file_lock_for(engine)
    assert lock is not None
    try:
        before = datetime.now(UTC) - timedelta(seconds=5)  # the dead process's last write
        row = AccountDown(1, "710091", "API key not found: check its api_key", before, 1, before + timedelta(60))
        replace_own(engine, "dead", os.getpid(), [row], before, sole_writer=False)
        lock.acquire()  # the new process, with the dead one's pid
        try:
            assert read_status(engine).down == [] and read_status(engine).accounts == []
            replace_own(engine, "new", os.getpid(), [row], datetime.now(UTC), sole_writer=False)
            assert [(d.process, d.user) for d in read_status(engine).down] == [("new", "710091")]
        finally:
            lock.release()
        assert read_status(engine).down == []  # nobody holds the lock
    finally:
        engine.dispose()


def test_an_account_another_process_tracks_is_not_shown_down(pg_url: str) -> None:
    """PostgreSQL: process A gave account 710071 up (another process took its lease: ``LeaseLost``) and tries it
    again later; process B holds its lease and tracks it. Status does not call it down while B holds it."""
    upgrade(pg_url)
    engine = open_engine(pg_url)
    process_lock = PgLease(engine, process_lock_name("a"))
    lease = PgLease(engine, "710071")
    try:
        assert process_lock.try_acquire()
        now = datetime.now(UTC)
        row = AccountDown(1, "710071", "another tracker run took over account 710071", now, 1, now + timedelta(60))
        replace_own(engine, "a", 4242, [row], now, sole_writer=False)
        assert [(d.user, d.pid) for d in read_status(engine).down] == [("710071", 4242)]
        assert lease.try_acquire()
        status_now = read_status(engine)
        assert status_now.down == [] and [(a.account, a.down) for a in status_now.accounts] == []
    finally:
        lease.release()
        process_lock.release()
        engine.dispose()


def test_the_next_process_deletes_the_rows_of_dead_ones_on_postgresql(pg_url: str) -> None:
    """PostgreSQL: rows of a process whose lock is gone (killed) are deleted by the next process's first write; a
    live process's rows (its lock held) and the writer's own stay."""
    upgrade(pg_url)
    engine = open_engine(pg_url)
    live_lock = PgLease(engine, process_lock_name("live"))
    try:
        assert live_lock.try_acquire()
        now = datetime.now(UTC)
        row = AccountDown(1, "710101", "API key not found: check its api_key", now, 1, now + timedelta(60))
        for process in ("dead-1", "dead-2", "live", "own"):
            replace_own(engine, process, 4242, [row], now, sole_writer=False)
        assert sweep_dead(engine, "own") == 2
        with engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT process FROM accounts_down ORDER BY process").scalars().all()
        assert left == ["live", "own"]
        assert sweep_dead(engine, "own") == 0
    finally:
        live_lock.release()
        engine.dispose()


def test_describe_down_says_when_it_is_tried_next() -> None:
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    row = AccountDown(3, None, "signature rejected", now - timedelta(minutes=5), 4, now + timedelta(seconds=40), 77)
    assert describe_down(row, now) == (
        "account 3 of [[accounts]] in tracker run pid 77 (user not known: its key never said): down since 5 min ago"
        " (4 failures): signature rejected; next try in 40 s"
    )
    assert describe_down(AccountDown(3, "9", "x", now, 1, now - timedelta(seconds=2), 77), now).endswith(
        "(user 9): down since 0 s ago (1 failure): x; being tried again (since 2 s ago)"
    )
    assert describe_down(AccountDown(3, "9", "x", now, 1, None, 77), now).endswith("; next try not drawn yet")
    back = AccountDown(1, "9", "x", now - timedelta(minutes=9), 2, None, 77, back_at=now - timedelta(minutes=6))
    assert describe_back(back, now) == (
        "account 1 of [[accounts]] in tracker run pid 77 (user 9): tracked again since 6 min ago, after 3.0 min down: x"
    )
