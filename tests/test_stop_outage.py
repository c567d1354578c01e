"""A stop during a database outage is bounded: the writer keeps trying for the stop's grace, then gives up what it
holds (counted, written to the side file), and the run ends with one error line saying how many received frames were
not committed and that the next run's start-up backfill fetches them again; which it does.

- PostgreSQL down (a server this test owns, ``tests/pg_server.py``; never the shared one): a real ``tracker run``
  child with ``TRACKER_STOP_GRACE=2``, SIGTERM while its writer waits for the database: exit 2 no sooner than the
  grace and within it and a little (the setting honoured by a real run), one line naming that grace; the
  frames the fake wrote are each committed or in the side file, never both; then the database is back, a second run
  backfills at start-up, and the views equal the fake's truth (nothing lost, nothing doubled).
- SQLite locked by another connection (``BEGIN EXCLUSIVE``; ``busy_timeout`` shortened to 50 ms so appends fail
  quickly): ``run_tracker`` with settings of a 1 s grace returns after it and soon after, its writer's stats count
  what it gave up,
  and the log and the side file together hold every delivered frame once.

Rules: loopback only, port 0, absolute timeouts; the outage's moments are waits on the writer meeting it (its log line,
its retry count); cross-process waits poll the database under a deadline. Self trades are off: their frames have no
REST source, so one not committed cannot be backfilled (test_backfill_e2e.py's known limit).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import pytest
import trio
from test_accounts_cli import tracker_child
from test_backfill_e2e import assert_equals_truth, no_self_trades
from test_crash_recovery import Probe, ws_payloads
from test_db_faults import own_pg  # noqa: F401 (a fixture)
from test_ingest_e2e import FAST, record_deliveries
from test_ingest_process import record_written
from test_lease import poll

from tracker.cli import main
from tracker.fake.server import open_fake_exchange
from tracker.runtime.service import NotCommitted, require_committed, run_tracker
from tracker.store import engine as engine_module
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(180)

MARKETS = ("btcusd", "ethusd", "btcusd-perp")
# The stop's grace of the PostgreSQL case's run: short, so that the test does not wait out the default 10 s; what the
# test proves does not depend on its length (the database stays down for the whole grace).
GRACE_S = 2
NOT_COMMITTED = re.compile(
    rf"tracker: error: stopped with the database unavailable for the stop's {GRACE_S} s grace: (\d+) received"
    r" frame\(s\) not committed \(saved in (\S+?): `tracker db import-unsaved <file>` appends them once the database"
    r" is back\); the next `tracker run` also recovers them from the exchange's REST API in its start-up backfill"
    r" \(all but self-trade and liquidation alerts, which REST does not report\)"
)


def spilled(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spilled_ws(path: Path) -> list[str]:
    return [str(row["payload"]) for row in spilled(path) if row["kind"] == "entry" and row["source"] == "ws"]


def tracker_run(env: dict[str, str], cwd: Path, log_path: Path) -> AbstractAsyncContextManager[trio.Process]:
    """``python -m tracker run`` in ``cwd`` (where a PostgreSQL run's side file goes), output in ``log_path``."""
    return tracker_child(["run"], env, log_path, cwd)


@pytest.mark.postgres
async def test_a_stop_in_a_postgres_outage_ends_after_the_grace_and_the_next_run_backfills(
    own_pg,  # type: ignore[no-untyped-def]  # noqa: F811
    tmp_path: Path,
) -> None:
    upgrade(own_pg.url)
    engine = open_engine(own_pg.url)
    probe = Probe(engine, tmp_path)  # (no rebuild here: the directory for its scratch files is not looked at)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    try:
        async with open_fake_exchange(seed=11, markets=MARKETS) as fx:
            env = fx.tracker_env(
                os.environ,
                TRACKER_DB_URL=own_pg.url,
                TRACKER_RECONCILE_INTERVAL="3600",
                TRACKER_STOP_GRACE=str(GRACE_S),
            )
            with no_self_trades(fx):
                written = record_written(fx)
                async with tracker_run(env, tmp_path, first) as run:
                    with trio.fail_after(30):
                        await fx.wait_subscribed(fx.private_channels())
                    fx.set_rate(300)
                    await poll("frames committed", lambda: probe.ws_after(0) >= 100, within=30)
                    await trio.to_thread.run_sync(own_pg.stop)  # -m fast: every client is disconnected
                    with trio.fail_after(30):
                        await written.wait_count(len(written) + 300)  # received meanwhile, not committed
                    await poll("the writer met the outage", lambda: "database unavailable" in first.read_text())
                    run.send_signal(signal.SIGTERM)
                    stopped_at = trio.current_time()
                    with trio.fail_after(40):
                        code = await run.wait()
                    took = trio.current_time() - stopped_at
                fx.set_rate(None)
                out = first.read_text()
                assert code == 2, out
                match = NOT_COMMITTED.fullmatch(out.strip().splitlines()[-1])
                assert match is not None, out[-3000:]
                # The grace, and the close's and exit's own time; never less: the writer tried for the whole grace.
                assert GRACE_S <= took < GRACE_S + 8, f"the stop took {took:.1f} s"
                side = Path(match[2])
                assert side.is_absolute() and side.parent == tmp_path, side
                assert int(match[1]) == len(spilled(side)) > 0

                await trio.to_thread.run_sync(own_pg.start)
                logged = await trio.to_thread.run_sync(ws_payloads, engine)
                in_side = spilled_ws(side)
                assert set(written) <= logged | set(in_side), "a frame the fake wrote is neither committed nor saved"
                assert not logged & set(in_side), "a frame both committed and reported not committed"
                assert set(written) - logged, "nothing was left for the backfill: the test proves nothing"

                # The next run: its start-up backfill fetches what was not committed from the exchange's REST API.
                head = await trio.to_thread.run_sync(probe.head)
                async with tracker_run(env, tmp_path, second) as run:
                    with trio.fail_after(30):
                        await fx.wait_subscribed(fx.private_channels())
                    await poll("a start-up gap", lambda: probe.gaps_after(head)[0], within=60)
                    await poll("every gap closed", lambda: not probe.open_gaps_after(head), within=60)
                    live = {e.text for e in await fx.generate(50)}
                    await poll("live frames logged", lambda: live <= ws_payloads(engine), within=30)
                    run.send_signal(signal.SIGINT)
                    with trio.fail_after(30):
                        code = await run.wait()
                assert code == 0, second.read_text()
            assert_equals_truth(fx, own_pg.url)  # every order and fill, the ones not committed included, once
    finally:
        engine.dispose()


async def test_a_stop_with_the_sqlite_file_locked_gives_up_after_the_grace(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # busy_timeout is read when a connection opens: 50 ms makes "database is locked" reach the writer quickly.
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    upgrade(sqlite_url)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    engine = open_engine(sqlite_url)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        async with open_fake_exchange(seed=12, markets=MARKETS) as fx:
            delivered = record_deliveries(fx)
            settings = fx.settings(sqlite_url, markets=MARKETS, subaccounts=(), stop_grace_s=1.0)
            stop = trio.Event()
            run = partial(run_tracker, settings, EventLog(engine), stop=stop, handle_signals=False)
            with trio.fail_after(60):  # a writer that never gives up would hold the stop for ever
                async with trio.open_nursery() as nursery:
                    services = await nursery.start(partial(run, ingest_options=FAST))
                    stats = services.writer_stats
                    await fx.wait_subscribed(fx.private_channels())
                    await fx.generate(30)
                    with trio.fail_after(20):
                        await stats.wait_items(1)
                    await trio.to_thread.run_sync(other.execute, "BEGIN EXCLUSIVE")
                    await fx.generate(100)
                    await poll("appends refused", lambda: stats.retries >= 2, within=20)
                    stop.set()
                    stopped_at = trio.current_time()
            took = trio.current_time() - stopped_at
        logged = ws_payloads(engine)
    finally:
        other.close()
        engine.dispose()
    assert 1.0 <= took < 1.0 + 5, f"the stop took {took:.1f} s"  # the settings' grace, never less
    assert stats.not_committed > 0 and stats.unsaved is not None
    assert stats.unsaved.parent == path.parent
    assert len(spilled(stats.unsaved)) == stats.not_committed
    in_side = spilled_ws(stats.unsaved)
    assert len(in_side) == len(set(in_side))
    assert set(delivered) == logged | set(in_side) and not logged & set(in_side)
    line = rf"^stopped with the database unavailable for the stop's 1 s grace: {stats.not_committed} received frame"
    with pytest.raises(NotCommitted, match=line):
        require_committed([stats], 1.0)
    # The file unlocked: the side file's frames appended, self trades included (no REST source has them), once each.
    assert main(["db", "import-unsaved", "--db-url", sqlite_url, str(stats.unsaved)]) == 0
    engine = open_engine(sqlite_url)
    try:
        after = [row for page in EventLog(engine).iter_after(0) for row in page if row.source == "ws"]
    finally:
        engine.dispose()
    assert sorted(row.payload for row in after) == sorted(set(delivered))
