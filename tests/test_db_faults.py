"""Database faults while ``tracker run`` receives: nothing is lost.

- PostgreSQL restarted mid-run (a server this test owns, ``tests/pg_server.py``; never the shared one): a real
  ``tracker run`` child keeps its websocket (no reconnect, so nothing is left to a backfill), holds frames in the
  writer's bounded buffer, retries until the server is back, and every frame the fake wrote is in the log once.
- SQLite: a long *reader* does not stop the writer (WAL); a long *write* lock (``BEGIN EXCLUSIVE`` from another
  connection) makes appends fail with "database is locked" once ``busy_timeout`` runs out (shortened here to 50 ms so
  the retry path runs), and the writer retries the same batch until the lock is gone: every delivered frame is in the
  log once.
- SQLite: the database's disk fills up (SQLite's page limit, ``PRAGMA max_page_count``, fails the same way:
  ``SQLITE_FULL``): appends, the projector's writes included, fail and are retried with what they hold, the log line
  says the disk is full and to free space, and once there is room again every delivered frame is in the log once.
- The writer's retry rule itself: transient errors (lost connection, locked) are retried with the same batch;
  anything else (a constraint violation, a bug) still crashes loudly.

Rules: loopback only, port 0, absolute timeouts; the outage length is a wait on frames the fake sent meanwhile;
cross-process waits poll the database under a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from pg_server import available, pg_server
from sqlalchemy import Engine, event, exc
from test_ingest_e2e import Run, tracker_running
from test_ingest_process import child_env, record_written
from test_lease import poll

from tracker.domain.log import QuarantineItem
from tracker.fake.server import open_fake_exchange
from tracker.runtime.writer import run_writer
from tracker.store import engine as engine_module
from tracker.store.engine import open_engine
from tracker.store.errors import is_transient
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(120)

MARKETS = ("btcusd", "ethusd", "btcusd-perp")


def _ws_payloads(engine: object) -> list[str]:
    log = EventLog(engine)  # type: ignore[arg-type]
    return [e.payload for page in log.iter_after(0, 5000) for e in page if e.source == "ws"]


# --- PostgreSQL restarted under a running tracker --------------------------------------------------------------------


@pytest.fixture
def own_pg():  # type: ignore[no-untyped-def]
    reason = available()
    if reason is not None:
        from conftest import IN_CI

        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with pg_server() as server:
        yield server


@pytest.mark.postgres
async def test_postgres_restart_mid_run_loses_nothing(own_pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upgrade(own_pg.url)
    engine = open_engine(own_pg.url)
    log_path = tmp_path / "run.log"
    try:
        async with open_fake_exchange(seed=7, markets=MARKETS) as fx:
            written = record_written(fx)
            env = child_env(fx, own_pg.url)
            env["TRACKER_RECONCILE_INTERVAL"] = "3600"
            with log_path.open("wb") as out:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "tracker", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                with trio.fail_after(30):
                    await fx.wait_subscribed(fx.private_channels())
                connections = fx.hub.connections_total
                fx.set_rate(300)
                with trio.fail_after(30):
                    await written.wait_count(300)
                await trio.to_thread.run_sync(own_pg.stop)  # -m fast: every client is disconnected
                with trio.fail_after(30):
                    await written.wait_count(len(written) + 500)  # the tracker keeps receiving meanwhile
                # The restart comes once the writer has met the outage (on a loaded machine the frames written above
                # can still be in the socket's buffer when the server is back, and the test would prove nothing).
                await poll("the writer met the outage", lambda: "database unavailable" in log_path.read_text())
                assert proc.returncode is None, log_path.read_text()
                await trio.to_thread.run_sync(own_pg.start)
                fx.set_rate(None)
                await fx.generate(20)
                wanted = set(written)
                with contextlib.suppress(AssertionError):  # what is missing is reported below
                    await poll("every written frame logged", lambda: wanted <= set(_ws_payloads(engine)), within=40)
                proc.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            # The websocket was never replaced: the frames were held, not backfilled.
            assert fx.hub.connections_total == connections
        text = log_path.read_text()
        assert code == 0, text
        payloads = await trio.to_thread.run_sync(_ws_payloads, engine)
        assert len(payloads) == len(set(payloads)), "a frame was appended twice"
        missing = set(written) - set(payloads)
        assert not missing, f"{len(missing)} of {len(set(written))} frames lost\n{text[-3000:]}"
        assert "database unavailable" in text and "database back" in text, text[-3000:]
    finally:
        engine.dispose()


async def _refused_until(
    run: Run, what: str, block: Callable[[], Awaitable[object]], unblock: Callable[[], Awaitable[object]]
) -> None:
    """``block()`` the database, wait for ``what``: three appends refused while 300 more frames arrived, then
    ``unblock()`` it and wait for the writer's next commit."""
    stats = run.services.writer_stats
    await block()
    delivered = len(run.delivered)
    await poll(what, lambda: stats.retries >= 3 and len(run.delivered) >= delivered + 300, within=30)
    held = stats.items
    await unblock()
    with trio.fail_after(20):
        await run.wait_committed(lambda: stats.items > held)


# --- SQLite: a long reader, then a long writer ------------------------------------------------------------------------


async def test_sqlite_long_reader_and_exclusive_lock_lose_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # busy_timeout is read when a connection opens: 50 ms makes "database is locked" reach the writer quickly.
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = sqlite_url.removeprefix("sqlite:///")
    async with tracker_running(sqlite_url, markets=MARKETS) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        stats = run.services.writer_stats
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            run.fx.set_rate(300)
            # A long read transaction: WAL lets the writer commit past it.
            await trio.to_thread.run_sync(other.execute, "BEGIN")
            await trio.to_thread.run_sync(lambda: other.execute("SELECT count(*) FROM event_log").fetchone())
            before = stats.items
            with trio.fail_after(20):
                await run.wait_committed(lambda: stats.items >= before + 200)
            await trio.to_thread.run_sync(other.execute, "COMMIT")
            assert stats.retries == 0

            # A long write lock: appends fail (locked) and are retried until it is released.
            await _refused_until(
                run,
                "appends refused while frames keep arriving",
                lambda: trio.to_thread.run_sync(other.execute, "BEGIN EXCLUSIVE"),
                lambda: trio.to_thread.run_sync(other.execute, "COMMIT"),
            )
            run.fx.set_rate(None)
        finally:
            other.close()
    # tracker_running has checked: every delivered frame is in the log, once.
    assert stats.retries >= 3


class _DiskFull:
    """While ``full``, every SQLite statement of every engine runs with the file capped at its present size (``PRAGMA
    max_page_count``): whatever needs a new page fails with ``SQLITE_FULL``, as on a full disk. Set per statement,
    on the connection that runs it (the pragma is per connection), so it also reaches connections already pooled."""

    def __init__(self) -> None:
        self.full = False

    async def fill(self) -> None:
        self.full = True

    async def free(self) -> None:
        self.full = False

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        raw = conn.connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            return
        if self.full:
            pages = raw.execute("PRAGMA page_count").fetchone()[0]
            raw.execute(f"PRAGMA max_page_count = {int(pages)}")
        else:
            raw.execute("PRAGMA max_page_count = 4294967294")


async def test_sqlite_full_disk_loses_nothing_and_says_so(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracker.service")
    disk = _DiskFull()
    event.listen(Engine, "before_cursor_execute", disk)
    try:
        async with tracker_running(sqlite_url, markets=MARKETS) as run:
            await run.fx.wait_subscribed(run.fx.private_channels())
            stats = run.services.writer_stats
            run.fx.set_rate(300)
            with trio.fail_after(20):
                await run.wait_committed(lambda: stats.items >= 100)
            await _refused_until(
                run, "appends refused on the full disk while frames keep arriving", disk.fill, disk.free
            )
            run.fx.set_rate(None)
    finally:
        event.remove(Engine, "before_cursor_execute", disk)
    # tracker_running has checked: every delivered frame is in the log, once.
    lines = [r.getMessage() for r in caplog.records if "disk is full" in r.getMessage()]
    assert lines and all("free space on it" in line and "retrying" in line for line in lines), lines
    # the writer's (the projector, whose writes fail too, may say so first)
    assert any(line.startswith("writer: the database's disk is full (OperationalError: database or disk is full)")
               for line in lines), lines  # fmt: skip
    assert any("database back after" in r.getMessage() for r in caplog.records)


# --- the retry rule --------------------------------------------------------------------------------------------------


def _item(n: int) -> tuple[QuarantineItem, float]:
    return QuarantineItem(kind="malformed", reason="r", raw=str(n), received_at=None, account="a"), 0.0  # type: ignore[arg-type]


async def test_writer_retries_transient_errors_with_the_same_batch(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[list[str]] = []
    failures = [exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))] * 3

    def append(entries, quarantine):  # type: ignore[no-untyped-def]
        calls.append([q.raw for q in quarantine])
        if failures:
            raise failures.pop()

    send, receive = trio.open_memory_channel[tuple[QuarantineItem, float]](10)
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(
            lambda task_status: run_writer(append, receive, retry_if=is_transient, task_status=task_status)
        )
        async with send:
            for n in range(3):
                send.send_nowait(_item(n))
    assert calls == [["0", "1", "2"]] * 4  # the same batch, retried until it committed
    assert stats.items == 3 and stats.retries == 3


async def test_writer_does_not_retry_other_errors() -> None:
    def append(entries, quarantine):  # type: ignore[no-untyped-def]
        raise exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    send, receive = trio.open_memory_channel[tuple[QuarantineItem, float]](10)
    send.send_nowait(_item(1))
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(append, receive, retry_if=is_transient))
    assert raised.group_contains(exc.IntegrityError)
