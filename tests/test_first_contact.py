"""First contact with the real Bitstamp, rehearsed: with each of the fake's modes on (docs/fake.md), alone and all
together, ``tracker run`` keeps running, loses and doubles nothing (the projection equals the fake's truth), and the
log says what degraded (the entries ``tracker status`` and the metrics read).

Rules: loopback only, ports chosen by the OS, an absolute timeout on each test, waits on the writer's commits (no
sleep as synchronisation). SQLite only: the modes are the exchange's, not the database's.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from store_helpers import rows_of
from test_backfill_e2e import MARKETS, assert_equals_truth, tracker_events, tracker_running, wait_logged

from tracker.domain import tracker_events as te
from tracker.domain.gaps import MARKET_WIDE_AFTER
from tracker.fake.server import open_fake_exchange
from tracker.store.engine import open_engine
from tracker.store.migrate import upgrade
from tracker.store.status import read_status

pytestmark = pytest.mark.timeout(90)

REFUSED = "my_token_settlements"
MODES = [
    "derivatives-refused",
    "derivatives-flaky",
    "unsigned",
    "error-200",
    "get-query-bare",
    "market-wide-chain",
    "liquidations-untimed",
    "orders-without-trade-account",
    "settlement-ms",
    f"refuse-channel={REFUSED}",
]


async def _run(modes: list[str], db_url: str, steps: int = 150) -> None:
    upgrade(db_url)
    async with open_fake_exchange(seed=21, markets=MARKETS, modes=modes) as fx:
        async with tracker_running(fx, db_url) as tracker:
            await tracker.backfiller.wait_runs(1)  # the start-up backfill, whatever the exchange answered
            emitted = await fx.generate(steps)
            await wait_logged(tracker, [e for e in emitted if e.channel in fx.private_channels()])
            # A later walk (a reconnect's) while every mode is still on: live ingest and the walks go on.
            runs = tracker.backfiller.runs
            await fx.request_reconnect(close_after=0.2)
            while tracker.backfiller.runs <= runs:
                await tracker.backfiller.completed.wait()
        assert_equals_truth(fx, db_url)


def _degraded(db_url: str) -> dict[str, set[str]]:
    """What ``tracker status`` says the run goes on without: kind -> the walks, channels or markets."""
    engine = open_engine(db_url)
    try:
        status = read_status(engine)
    finally:
        engine.dispose()
    out: dict[str, set[str]] = {}
    for d in status.degraded:
        out.setdefault(d.kind, set()).add(d.what)
    return out


# The ledger capture's walks (runtime/ledger_capture.py) are judged in test_ledger_capture.py; these tests judge the
# backfill's. (Until the fake answers crypto-transactions/ and withdrawal-requests/, those two fail here.)
LEDGER_WALKS = ("ledger:", "account_balances:", "withdrawal_requests:", "crypto_transactions:", "trade_account:")


def _walks(db_url: str, event: str) -> dict[str, dict[str, Any]]:
    return {d["walk"]: d for d in tracker_events(db_url, event) if not str(d["walk"]).startswith(LEDGER_WALKS)}


# (trade account, whether it has fills, orders): the orders by their trade account and whether they have fills
ORDER_ACCOUNTS = (
    "SELECT o.trade_account_id, EXISTS (SELECT 1 FROM v_fills f WHERE f.account = o.account AND f.order_id ="
    " o.order_id), count(*) FROM v_orders o GROUP BY 1, 2"
)


@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_alone_loses_and_doubles_nothing(mode: str, sqlite_url: str) -> None:
    await _run([mode], sqlite_url)
    unavailable = _walks(sqlite_url, te.ENDPOINT_UNAVAILABLE)
    failed = _walks(sqlite_url, te.WALK_FAILED)
    completed = tracker_events(sqlite_url, te.BACKFILL_COMPLETED)
    degraded = _degraded(sqlite_url)
    if mode == "derivatives-refused":
        assert {"trade_history:btcusd-perp", "position_settlement_transactions"} <= set(unavailable)
        assert degraded["endpoint_unavailable"] >= {"trade_history:btcusd-perp", "position_settlement_transactions"}
        assert {d["code"] for d in unavailable.values()} == {"API5506"}
        assert "trade_history:btcusd-perp" in completed[-1]["skipped"]  # not asked again until restart
    elif mode == "derivatives-flaky":
        # API5502 is retried by the polite API (capped, jittered back-off) before a walk would fail: nothing given up
        assert not unavailable and all(d["code"] == "API5502" for d in failed.values())
    elif mode == "get-query-bare":
        assert not failed and not unavailable  # one API0005, then the other form, kept
    elif mode == "market-wide-chain":
        breaks = [d for d in completed if d["reason"] == "chain_break"]
        assert len(breaks) <= MARKET_WIDE_AFTER * len(MARKETS)  # learned, not a walk per event
        assert degraded.get("chain_market_wide")  # logged once per market, shown by status
    elif mode == "orders-without-trade-account":
        # Each order takes the trade account its fills' my_trades frames name; one without fills has none.
        assert not unavailable and "endpoint_unavailable" not in degraded
        orders = rows_of(sqlite_url, ORDER_ACCOUNTS)
        assert {(tai, has_fills) for tai, has_fills, _ in orders} == {("0", 1), (None, 0)}, orders
        assert rows_of(sqlite_url, "SELECT count(*) FROM v_fills WHERE trade_account_id IS NULL") == [(0,)]
    elif mode.startswith("refuse-channel"):
        refused = tracker_events(sqlite_url, te.CHANNEL_REFUSED)
        assert refused and all(REFUSED in d["channel"] for d in refused)
        subscribed = tracker_events(sqlite_url, te.SUBSCRIBED)
        assert all(not any(REFUSED in ch for ch in d["channels"]) for d in subscribed)
        assert any(REFUSED in channel for channel in degraded["channel_refused"])
    else:
        assert not unavailable and "endpoint_unavailable" not in degraded


async def test_every_mode_at_once(sqlite_url: str) -> None:
    with trio.fail_after(80):
        await _run(["all"], sqlite_url)
    assert _walks(sqlite_url, te.ENDPOINT_UNAVAILABLE)
    assert tracker_events(sqlite_url, te.CHANNEL_REFUSED)
