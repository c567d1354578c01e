"""End to end: the ledger capture of the main account against the fake exchange over real sockets, into a real
database (SQLite and PostgreSQL): every ledger row of the fake once, a restart (a new capture, the same database)
appends no row again, and each start round appends a balance snapshot.

Rules: loopback only, port 0, an absolute timeout, no sleep used as synchronisation (the capture's rounds are awaited
directly). Sub-accounts, crypto-transactions/ and withdrawal-requests/ end to end come with the fake's support for them.
"""

from __future__ import annotations

import json

import pytest
import trio

from tracker.bitstamp import ledger_entries as le
from tracker.exchange.rest import BitstampClient
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.ledger_capture import LedgerCapture
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(90)


def ledger_entries(db_url: str, event: str) -> list[tuple[str, str]]:
    engine = open_engine(db_url)
    try:
        return [(e.dedup_key, e.payload) for page in EventLog(engine).iter_after(0) for e in page if e.event == event]
    finally:
        engine.dispose()


async def start_round(fx: FakeExchange, db_url: str) -> LedgerCapture:
    engine = open_engine(db_url)
    try:
        async with BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as client:
            sink = LogSink(EventLog(engine), trio.CapacityLimiter(1))
            capture = LedgerCapture(PoliteApi(client), sink, account=str(fx.user_id), page_limit=100)
            await capture.round(capture.walkers["0"], start=True)
            return capture
    finally:
        engine.dispose()


async def test_main_account_ledger_once_and_idempotent_restart(db_url: str) -> None:
    upgrade(db_url)
    async with open_fake_exchange(seed=4, markets=("btcusd", "ethusd", "btcusd-perp")) as fx:
        await fx.generate(300)
        truth = [tid for tid, _, _ in fx.model.state.transactions]
        assert len(truth) > 100  # more than one page (page_limit 100 here; since_id forces 1000 on the real one)
        first = await start_round(fx, db_url)
        rows = ledger_entries(db_url, le.REST_LEDGER_ROW)
        assert [key for key, _ in rows] == [f"rest:{fx.user_id}:ledger:0:{tid}" for tid in truth]
        assert first.stats.rows == {"0": len(truth)}
        assert first.stats.snapshots == 1
        [(_, snapshot)] = ledger_entries(db_url, le.REST_BALANCES)
        assert {r["currency"] for r in json.loads(snapshot)}  # the fake's balances, as answered

        await fx.generate(20)
        more = [tid for tid, _, _ in fx.model.state.transactions][len(truth) :]
        again = await start_round(fx, db_url)  # a restart: a new capture, the same database
        assert again.walkers["0"].cursor == max([*truth, *more])
        rows = ledger_entries(db_url, le.REST_LEDGER_ROW)
        assert [key for key, _ in rows] == [f"rest:{fx.user_id}:ledger:0:{tid}" for tid in [*truth, *more]]
        assert again.stats.rows.get("0", 0) == len(more)
        assert len(ledger_entries(db_url, le.REST_BALANCES)) == 2


async def test_tracker_reconcile_takes_a_snapshot_with_the_ledger(sqlite_url: str) -> None:
    """``tracker reconcile`` (``reconcile_once``) walks the ledger to the head and appends a snapshot after it; the
    ``reconciled`` entry carries the ledger's summary."""
    from tracker.domain import tracker_events as te
    from tracker.runtime.recovery import reconcile_once

    upgrade(sqlite_url)
    async with open_fake_exchange(seed=6, markets=("btcusd",)) as fx:
        await fx.generate(50)
        settings = fx.settings(sqlite_url, markets=("btcusd",), subaccounts=())
        engine = open_engine(sqlite_url)
        try:
            await reconcile_once(settings, EventLog(engine), full=True)
        finally:
            engine.dispose()
        truth = [tid for tid, _, _ in fx.model.state.transactions]
    rows = ledger_entries(sqlite_url, le.REST_LEDGER_ROW)
    assert [key for key, _ in rows] == [f"rest:{fx.user_id}:ledger:0:{tid}" for tid in truth]
    assert len(ledger_entries(sqlite_url, le.REST_BALANCES)) == 1
    [(_, reconciled)] = ledger_entries(sqlite_url, te.RECONCILED)
    summary = json.loads(reconciled)["data"]["ledger"]
    assert summary["snapshots"] == ["0"]
    assert summary["cursors"] == {"0": max(truth)}


async def test_tracker_run_follows_the_ledger_after_fills(sqlite_url: str) -> None:
    """In ``tracker run`` (the recovery task), the ledger capture starts with a snapshot and follows fills as they are
    committed from the websocket: the ledger reaches the fake's rows within about one interval (the trigger itself is
    timed in test_ledger_capture.py, on trio's clock)."""
    from test_backfill_e2e import tracker_running, wait_logged

    upgrade(sqlite_url)
    async with (
        open_fake_exchange(seed=8, markets=("btcusd", "ethusd", "btcusd-perp")) as fx,
        tracker_running(fx, sqlite_url) as tracker,
    ):
        await fx.wait_subscribed(fx.private_channels())
        with trio.fail_after(30):
            while tracker.services.ledger is None:
                await tracker.services.writer_stats.committed.wait()
            capture = tracker.services.ledger
            await capture.wait_rounds(1)  # the start round (with its snapshot)
            await wait_logged(tracker, await fx.generate(100))
            truth = max(tid for tid, _, _ in fx.model.state.transactions)
            started = trio.current_time()
            while (capture.walkers["0"].cursor or 0) < truth:
                await capture.wait_rounds(capture.rounds + 1)
            assert trio.current_time() - started < capture.interval_s + 5.0
    keys = [key for key, _ in ledger_entries(sqlite_url, le.REST_LEDGER_ROW)]
    assert len(keys) == len(set(keys))
    assert f"rest:{fx.user_id}:ledger:0:{truth}" in keys
    assert len(ledger_entries(sqlite_url, le.REST_BALANCES)) >= 1
