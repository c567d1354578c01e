"""``tracker status`` names the tasks beside ingest that a running ``tracker run`` started again after a bug
(``tracker/runtime/task_board.py``), on both backends: which task of which account, how often, the last error, when
it starts again; no longer once the process stops (its rows deleted) or is killed (its rows stay, their lock does
not). Ingest goes on meanwhile: every frame the fake delivers is committed.

Rules: loopback only, port 0, an absolute timeout on every test. A ``tracker run`` child has its projector's fold
broken by the script that starts it (nothing else is changed); status is read as another process reads it, and the
waits on what a child writes poll the database under a deadline (``poll``). No sleep as synchronisation.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_accounts_process import start_accounts
from test_ingest_e2e import record_deliveries
from test_ingest_process import child_env, record_written
from test_lease import poll
from test_status import status

from tracker.cli.status import describe_task_failure
from tracker.fake.server import open_fake_exchange
from tracker.logs import redact
from tracker.runtime import supervise
from tracker.runtime.process_board import ProcessBoard, open_board
from tracker.runtime.task_board import ERROR_CHARS, TaskBoard
from tracker.store.engine import Engine, open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore
from tracker.store.status import read_status
from tracker.store.task_failures import TaskFailure, replace_own_failures, sweep_dead_failures

pytestmark = pytest.mark.timeout(90)

MARKETS = ("btcusd", "ethusd", "btcusd-perp")

# `tracker run` with its fold broken: every projection batch raises, so the projector is started again and again
# (after 0.05 s, doubling), while ingest goes on. The bug's text carries the API key, which must not reach the
# database (the error is scrubbed as log lines are).
BROKEN_RUN = """
import os, sys
from tracker.runtime import supervise
from tracker.store.projections import ProjectionStore

supervise.BUG_RESTART_BASE_S = 0.05
supervise.BUG_RESTART_CAP_S = 0.4

def broken(self, events):
    raise RuntimeError("a bug in the fold, key " + os.environ["BITSTAMP_API_KEY"])

ProjectionStore.project_events = broken
from tracker.cli import main
sys.exit(main(["run"]))
"""


def status_data(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    return dict(json.loads(status(capsys, url, "--format", "json")))


def _by_task(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["task"]: f for f in data["task_failures"]}


def rows_in_table(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM task_failures").scalar_one())


@pytest.mark.parametrize("stop", ["SIGINT", "SIGKILL"])
async def test_status_names_a_task_a_running_tracker_run_restarts_after_a_bug(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], stop: str
) -> None:
    """A ``tracker run`` whose projector fails on every batch: status names ``projector_task`` of the account, its
    failures (growing), the last error, this pid; the frames are committed all the same. A SIGINT stop deletes the
    rows; after a ``kill -9`` they stay in the table but are not shown."""
    upgrade(db_url)
    engine = open_engine(db_url)
    out = tmp_path / "child.log"
    try:
        async with open_fake_exchange(seed=11, markets=MARKETS) as fx:
            written = record_written(fx)
            env = child_env(fx, db_url)
            with out.open("wb") as sink:
                child = await trio.lowlevel.open_process(
                    [sys.executable, "-c", BROKEN_RUN], env=env, stdout=sink, stderr=subprocess.STDOUT
                )
            try:
                with trio.fail_after(30):
                    await fx.wait_subscribed(fx.private_channels())
                await fx.generate(15)

                def projector_failed_thrice() -> dict[str, Any] | None:
                    data = status_data(capsys, db_url)
                    failure = _by_task(data).get("projector_task")
                    return data if failure is not None and failure["failures"] >= 3 else None

                data = await poll("status names the failing projector", projector_failed_thrice, interval=0.05)
                assert data is not None and child.returncode is None, out.read_text()
                tasks = _by_task(data)
                # The reconciler's catch-up projects too (reconciler.py): the recovery task may fail on the same bug.
                assert set(tasks) <= {"projector_task", "recovery_task"}, tasks
                failure = tasks["projector_task"]
                assert failure["account"] == str(fx.user_id)
                assert failure["pid"] == child.pid
                assert failure["error"] == "RuntimeError: a bug in the fold, key ***"
                assert failure["first_at"] < failure["last_at"] <= failure["restart_at"]
                text = await trio.to_thread.run_sync(status, capsys, db_url)
                assert re.search(r"\ntask failures: [12] tasks? beside ingest started again after a bug in this", text)
                assert f"  projector_task (account {fx.user_id}) in tracker run pid {child.pid}: failed " in text
                assert ": RuntimeError: a bug in the fold, key ***; " in text
                # Ingest went on: every frame the fake wrote is in the log.
                wanted = set(written)
                await poll("every written frame committed", lambda: wanted <= set(_ws_payloads(engine)))
                child.send_signal(getattr(signal, stop))
                with trio.fail_after(30):
                    code = await child.wait()
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        text = out.read_text()
        assert fx.api_key not in text
        if stop == "SIGINT":
            assert code == 0, text
            assert rows_in_table(engine) == 0  # deleted at the stop
        else:
            assert code == -signal.SIGKILL
            assert rows_in_table(engine) >= 1  # a kill -9 leaves the rows: only their lock tells they are stale
        # SQLite: at once (the flock went with the process); PostgreSQL: once the server ended its session.
        await poll("no task failure shown", lambda: status_data(capsys, db_url)["task_failures"] == [], interval=0.05)
        with engine.connect() as conn:
            assert "a bug in the fold" not in json.dumps(
                [list(r) for r in conn.exec_driver_sql("SELECT * FROM event_log").all()], default=str
            )  # runtime state, never the log
    finally:
        engine.dispose()


def _ws_payloads(engine: Engine) -> list[str]:
    return [e.payload for page in EventLog(engine).iter_after(0, 5000) for e in page if e.source == "ws"]


async def test_the_projector_of_a_several_accounts_run_is_the_processs_own(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_accounts`` runs one projector for every account: its failures are the process's (no account), and
    status shows them while the process runs; none once it stopped."""
    monkeypatch.setattr(supervise, "BUG_RESTART_BASE_S", 0.01)

    def broken(self: ProjectionStore, events: Sequence[Any]) -> Any:
        raise KeyError("position_id")

    monkeypatch.setattr(ProjectionStore, "project_events", broken)
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        async with (
            open_fake_exchange(seed=3, markets=MARKETS, user_id=710201, api_key="keytaskone") as one,
            open_fake_exchange(seed=4, markets=MARKETS, user_id=710202, api_key="keytasktwo") as two,
        ):
            delivered = [record_deliveries(fx) for fx in (one, two)]
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await start_accounts(
                    nursery, [fx.settings(sqlite_url, markets=MARKETS, subaccounts=()) for fx in (one, two)],
                    engine, stop,
                )  # fmt: skip
                for fx in (one, two):
                    await fx.wait_subscribed(fx.private_channels())
                    await fx.generate(5)

                def failed_twice() -> list[TaskFailure]:
                    shown = read_status(engine).task_failures
                    projector = [f for f in shown if f.task == "projector_task" and f.failures >= 2]
                    # The accounts' reconcilers project too (their catch-up): each one's recovery task is its own.
                    others = {(f.task, f.account) for f in shown if f.task != "projector_task"}
                    assert others <= {("recovery_task", "710201"), ("recovery_task", "710202")}, others
                    return projector

                [failure] = await poll("the process's projector shown failing twice", failed_twice)
                assert (failure.account, failure.task, failure.error) == (
                    "",
                    "projector_task",
                    "KeyError: 'position_id'",
                )
                wanted = set(delivered[0]) | set(delivered[1])
                await poll("every delivered frame committed", lambda: wanted <= set(_ws_payloads(engine)))
                stop.set()
        assert read_status(engine).task_failures == []
        assert rows_in_table(engine) == 0
    finally:
        engine.dispose()


def test_a_dead_processs_task_failures_are_not_shown_and_are_swept(pg_url: str) -> None:
    """PostgreSQL: rows whose process's lock nobody holds are not shown, and the next board's first write deletes
    them; a live process's rows stay and show."""
    from tracker.store.lease import PgLease
    from tracker.store.process_rows import process_lock_name

    upgrade(pg_url)
    engine = open_engine(pg_url)
    live = PgLease(engine, process_lock_name("live"))
    try:
        assert live.try_acquire()
        now = datetime.now(UTC)
        row = TaskFailure("710301", "recovery_task", 2, now, now, "ValueError: x", now + timedelta(seconds=10))
        for process in ("dead", "live", "own"):
            replace_own_failures(engine, process, 4242, [row], now, sole_writer=False)
        assert [f.process for f in read_status(engine).task_failures] == ["live"]
        assert sweep_dead_failures(engine, "own") == 1  # "dead"'s; the sweeping process's own rows stay
        with engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT process FROM task_failures ORDER BY process").scalars().all()
        assert left == ["live", "own"]
        assert [f.process for f in read_status(engine).task_failures] == ["live"]
    finally:
        live.release()
        engine.dispose()


async def test_task_board_counts_per_task_and_keeps_the_first_failure(sqlite_url: str) -> None:
    redact("sekretsekret")  # (process-wide: another test's secrets are scrubbed too, so the filler is none)
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        board = TaskBoard(engine)
        t0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        board.failed("7", "projector_task", "KeyError: 'a'", 5.0, t0)
        long_error = "ValueError: sekretsekret " + "\u00b7" * 900
        board.failed("7", "projector_task", long_error, 10.0, t0 + timedelta(seconds=6))
        board.failed(None, "metrics_task", "OSError: b", 5.0, t0)
        projector = board.failures[("7", "projector_task")]
        assert (projector.failures, projector.first_at, projector.last_at) == (2, t0, t0 + timedelta(seconds=6))
        assert projector.restart_at == t0 + timedelta(seconds=16)
        assert projector.error == "ValueError: *** " + "\u00b7" * (ERROR_CHARS - 17) + "…"
        assert board.failures[("", "metrics_task")].failures == 1
    finally:
        engine.dispose()


async def test_a_board_that_fails_on_a_bug_logs_it_and_writes_at_the_next_change(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The task failures' board records bugs of other tasks: a bug of its own is logged, never the run's end, and
    the next change is written."""
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    written: list[list[str]] = []
    wrote = trio.Event()

    def replace(
        engine: Engine, process: str, pid: int, rows: Sequence[str], now: datetime, *, sole_writer: bool
    ) -> None:
        if rows == ["first"]:
            raise ValueError("a bug in the board")
        written.append(list(rows))
        trio.from_thread.run_sync(wrote.set)

    state = ["first"]
    board = ProcessBoard(engine, "task failures", lambda: state, replace, lambda engine, own: 0, fatal=False)
    try:
        with caplog.at_level(logging.ERROR, logger="tracker"), trio.fail_after(10):
            async with open_board(board):
                state = ["second"]
                board.notify()
                await wrote.wait()
        assert written[0] == ["second"]
        assert "task failures not recorded for tracker status (a bug in tracker" in caplog.text
        assert "ValueError: a bug in the board" in caplog.text
    finally:
        engine.dispose()


async def test_a_board_deletes_its_rows_only_after_its_last_write(sqlite_url: str) -> None:
    """A write under way in its thread when the block ends is not abandoned: the deletion comes after it, or the
    rows of a stopped process would stay (a multi-account test saw it once: three rows after the stop)."""
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    calls: list[tuple[str, bool]] = []  # (what, whether the late write was still under way)
    writing, release, cleared = threading.Event(), threading.Event(), threading.Event()

    def replace(
        engine: Engine, process: str, pid: int, rows: Sequence[str], now: datetime, *, sole_writer: bool
    ) -> None:
        if list(rows) == ["late"]:
            writing.set()
            release.wait(10)
            calls.append(("late", False))
            writing.clear()
        elif not rows and calls:
            calls.append(("clear", writing.is_set()))
            cleared.set()

    state: list[str] = []
    board = ProcessBoard(engine, "task failures", lambda: state, replace, lambda engine, own: 0, fatal=False)
    leaving = trio.Event()

    async def release_once_the_stop_waits() -> None:
        await leaving.wait()
        await trio.testing.wait_all_tasks_blocked()
        # A deletion that does not wait for the write would come now, in its own thread.
        await trio.to_thread.run_sync(cleared.wait, 1.0)
        release.set()

    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_once_the_stop_waits)
                async with open_board(board):
                    state = ["late"]
                    board.notify()
                    await trio.to_thread.run_sync(writing.wait)
                    leaving.set()
        assert calls == [("late", False), ("clear", False)]
    finally:
        engine.dispose()


def test_describe_task_failure_says_how_often_and_when_it_starts_again() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    row = TaskFailure(
        "710301", "recovery_task", 3, now - timedelta(minutes=10), now - timedelta(seconds=4), "KeyError: 'x'",
        now + timedelta(seconds=16), pid=77,
    )  # fmt: skip
    assert describe_task_failure(row, now) == (
        "recovery_task (account 710301) in tracker run pid 77: failed 3 times since 10 min ago, last 4 s ago:"
        " KeyError: 'x'; starts again in 16 s"
    )
    once = TaskFailure("", "projector_task", 1, now, now, "E: y", now - timedelta(seconds=3), pid=77)
    assert describe_task_failure(once, now) == (
        "projector_task (the process's own) in tracker run pid 77: failed 1 time, last 0 s ago: E: y;"
        " started again 3 s ago"
    )
