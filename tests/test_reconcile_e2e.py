"""End to end: reconciliation against the fake exchange reports nothing on a clean run, reports planted mismatches
(a fee that differs, a fill the exchange does not have, an order whose status differs) once, and resolves them when
the exchange agrees again; ``tracker reconcile`` exits 1 while any is unresolved.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation. The fake runs on a clock
the test moves forward (``open_orders/`` is cached for 10 s there, as on Bitstamp), and the reconciler is told the
time accordingly, instead of waiting 10 s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import trio
from test_backfill_e2e import MARKETS, settings_for, tracker_events, tracker_running, wait_logged

from tracker.domain import tracker_events as te
from tracker.domain.reconcile import first_wait
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.reconciler import RECONCILE_CHANNEL, ReconcileOptions, ReconcileResult
from tracker.runtime.recovery import reconcile_once
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(90)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def fake(self) -> float:
        return time.time() + self.offset

    def wall(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


async def reconcile(fx: FakeExchange, db_url: str, clock: Clock) -> ReconcileResult:
    engine = open_engine(db_url)
    try:
        options = ReconcileOptions(max_status_checks=1000)
        return await reconcile_once(
            settings_for(fx, db_url), EventLog(engine), full=True, options=options, wall=clock.wall
        )
    finally:
        engine.dispose()


async def test_clean_run_then_planted_mismatches(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    clock = Clock()
    async with open_fake_exchange(seed=3, markets=MARKETS, clock=clock.fake) as fx:
        async with tracker_running(fx, sqlite_url) as tracker:
            await fx.wait_subscribed(fx.private_channels())
            await tracker.backfiller.wait_runs(1)
            await wait_logged(tracker, await fx.generate(300))
        clock.offset = 30.0  # every order is older than the open_orders cache now

        clean = await reconcile(fx, sqlite_url, clock)
        assert clean.findings == [] and clean.unresolved == [], clean.findings
        assert clean.checked > 300

        state = fx.model.state
        spot = [(i, tx) for i, tx in enumerate(state.transactions) if tx[2].get("type") == "2" and tx[1] == "btcusd"]
        (_, (fee_tid, _, fee_row)), (gone_index, gone_tx) = spot[3], spot[7]
        original_fee = fee_row["fee"]
        fee_row["fee"] = str(Decimal(original_fee) + Decimal("0.01"))
        del state.transactions[gone_index]
        orders = sorted(state.orders.values(), key=lambda o: o.id)
        order = next(o for o in orders if o.status == "open" and not o.market.perp)
        order.status = "cancelled"
        clock.offset = 60.0  # past the cache of the previous open_orders answer

        planted = await reconcile(fx, sqlite_url, clock)
        wanted = {
            f"recon:fee_mismatch:fill:{fee_tid}",
            f"recon:fill_unknown_to_exchange:fill:{gone_tx[0]}",
            f"recon:order_status_mismatch:order:{order.id}",
        }
        assert {f.id for f in planted.findings} == wanted
        # The changed fee comes back from REST as a row that differs from the websocket's fill: it is appended (REST
        # adds only what is new, and this is new) and the projection opens its own fill_source_mismatch beside the
        # reconciliation's fee_mismatch.
        source_mismatch = {d.discrepancy_id for d in planted.unresolved if d.kind == "fill_source_mismatch"}
        assert {d.entity for d in planted.unresolved if d.kind == "fill_source_mismatch"} == {f"fill:{fee_tid}"}
        assert {d.discrepancy_id for d in planted.unresolved} == wanted | source_mismatch
        assert {d.discrepancy_id for d in planted.unresolved if d.kind == "fee_mismatch"} == {
            f"recon:fee_mismatch:fill:{fee_tid}"
        }

        again = await reconcile(fx, sqlite_url, clock)  # a re-run opens nothing twice
        assert again.opened == [] and {d.discrepancy_id for d in again.unresolved} == wanted | source_mismatch

        # The command: prints them and exits 1 (cron-friendly).
        env = fx.tracker_env(os.environ, TRACKER_DB_URL=sqlite_url)
        command = [sys.executable, "-m", "tracker", "reconcile"]
        done = await trio.run_process([*command, "--format", "json"], env=env, capture_stdout=True, check=False)
        assert done.returncode == 1
        assert {d["id"] for d in json.loads(done.stdout)} == wanted | source_mismatch

        # The exchange agrees again: resolved, exit 0.
        fee_row["fee"] = original_fee
        state.transactions.insert(gone_index, gone_tx)
        order.status = "open"
        clock.offset = 90.0
        fixed = await reconcile(fx, sqlite_url, clock)
        assert {d.discrepancy_id for d in fixed.resolved} == wanted
        # The log still holds the two answers the exchange gave for that fill: a fact, open until acknowledged.
        assert {d.discrepancy_id for d in fixed.unresolved} == source_mismatch
        done = await trio.run_process(command, env=env, capture_stdout=True, check=False)
        assert done.returncode == 1

        # Acknowledged (who, why: in the log), it no longer counts: reconcile exits 0, the view still shows it.
        [mismatch_id] = source_mismatch
        ack = [
            sys.executable,
            "-m",
            "tracker",
            "discrepancies",
            "ack",
            mismatch_id,
            "--note",
            "fee corrected",
            "--by",
            "ops",
        ]
        done = await trio.run_process(ack, env=env, capture_stdout=True, check=False)
        assert done.returncode == 0 and b"fee corrected (by ops)" in done.stdout
        done = await trio.run_process(command, env=env, capture_stdout=True, check=False)
        assert done.returncode == 0, done.stdout
        assert b"no unresolved discrepancies" in done.stdout
        listing = [sys.executable, "-m", "tracker", "discrepancies", "--status", "acknowledged", "--format", "json"]
        done = await trio.run_process(listing, env=env, capture_stdout=True, check=False)
        [row] = json.loads(done.stdout)
        assert (row["id"], row["status"], row["note"]) == (mismatch_id, "acknowledged", "fee corrected (by ops)")
        assert "E-" not in row["detail"] and "e-" not in row["detail"]
        again = await trio.run_process(ack, env=env, capture_stdout=True, capture_stderr=True, check=False)
        assert again.returncode == 2 and b"is acknowledged, not open" in again.stderr


async def test_periodic_reconciliation_under_live_activity_reports_nothing(sqlite_url: str) -> None:
    """The reconciler runs every 0.3 s while the fake trades at ~400 frames/s: fills made after a walk, orders
    changing within the open_orders cache, frames still in flight: none of that is a discrepancy."""
    upgrade(sqlite_url)
    async with (
        open_fake_exchange(seed=8, markets=MARKETS) as fx,
        tracker_running(fx, sqlite_url, reconcile_interval_s=0.3) as tracker,
    ):
        await fx.wait_subscribed(fx.private_channels())
        fx.set_rate(400)
        reconciler = tracker.services.reconciler
        assert reconciler is not None
        await reconciler.wait_runs(4)
        fx.set_rate(None)
    runs = tracker_events(sqlite_url, "reconciled")
    assert len(runs) >= 4
    assert [r["opened"] for r in runs] == [[] for _ in runs], runs
    assert sum(r["checked"] for r in runs) > 0


async def test_the_periodic_clock_counts_across_restarts(db_url: str) -> None:
    """A tracker restarted more often than the interval must still reconcile: the first periodic run of a process is
    one interval after the last ``reconciled`` entry in the log, whichever process wrote it. Last reconciled two hours
    ago with a one-hour interval: the run comes at once. Just reconciled: the next is a whole interval away."""
    upgrade(db_url)
    async with open_fake_exchange(seed=9, markets=MARKETS) as fx:
        account = str(fx.user_id)
        engine = open_engine(db_url)
        try:
            old = te.tracker_entry(
                account=account,
                event=te.RECONCILED,
                data={},
                received_at=datetime.now(UTC) - timedelta(hours=2),
                uid="reconciled-long-ago",
                channel=RECONCILE_CHANNEL,
            )
            EventLog(engine).append([old])
        finally:
            engine.dispose()
        async with tracker_running(fx, db_url, reconcile_interval_s=3600) as tracker:
            reconciler = tracker.services.reconciler
            assert reconciler is not None
            with trio.fail_after(60):
                await reconciler.wait_runs(1)
            assert await reconciler.first_wait(3600) > 3590  # its own entry is the last one now
    assert len(tracker_events(db_url, "reconciled")) == 2


def test_first_wait_is_the_rest_of_the_interval() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert first_wait(300, None, now) == 300
    assert first_wait(300, now - timedelta(seconds=120), now) == 180
    assert first_wait(300, now - timedelta(days=3), now) == 0
    assert first_wait(300, now + timedelta(hours=1), now) == 300  # a clock set back: never more than one interval
