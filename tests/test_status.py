"""``tracker status`` against a database produced by a real run: the fake exchange (loopback, port 0) → ``run_tracker``
with the projector → SQLite; the CLI (``tracker.cli.main``) reads it while the run is live and after it stopped.

Rules: loopback only, port 0, an absolute timeout; waits are on the writer's commits and the fake's hub, never a sleep.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import Engine
from store_helpers import rows_of
from test_accounts_process import start_accounts

from tracker.cli import main
from tracker.cli.status import describe_space
from tracker.domain import tracker_events as te
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.ingest import IngestOptions
from tracker.runtime.projector import run_projector
from tracker.runtime.service import Services, run_tracker
from tracker.store.engine import open_engine, sqlite_path
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.space import Space, format_bytes

pytestmark = pytest.mark.timeout(60)

MARKETS = ("btcusd", "btcusd-perp")
FAST = IngestOptions(heartbeat_interval=0.5, heartbeat_timeout=1.0, backoff_base=0.05, backoff_cap=0.5)


def status(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> str:
    code = main(["status", "--db-url", url, *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


async def status_json(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    # The CLI is synchronous (its own engine, its own trio-free code): run it off the trio thread, like a 2nd process.
    out = await trio.to_thread.run_sync(partial(status, capsys, url, "--format", "json"))
    return dict(json.loads(out))


async def wait_committed(services: Services, predicate: Callable[[], bool]) -> None:
    while not predicate():
        await services.writer_stats.committed.wait()


async def projector(engine: Any, services: Services, *, task_status: trio.TaskStatus[Any]) -> None:
    async with trio.open_nursery() as nursery:
        status = await nursery.start(partial(run_projector, engine))
        services.projector = status
        task_status.started(status)
        await services.stop.wait()
        nursery.cancel_scope.cancel()


async def test_status_of_a_live_run_and_after_it(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = db_url
    upgrade(url)
    engine = open_engine(url)
    log = EventLog(engine)
    try:
        async with open_fake_exchange(seed=3, markets=MARKETS) as fx:
            settings = fx.settings(url, markets=MARKETS, subaccounts=())
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                services: Services = await nursery.start(
                    partial(
                        run_tracker,
                        settings,
                        log,
                        stop=stop,
                        handle_signals=False,
                        ingest_options=FAST,
                        extra_tasks=[partial(projector, engine)],
                    )
                )
                projection = services.projector
                assert projection is not None
                channels = fx.private_channels()
                await fx.wait_subscribed(channels)
                await fx.generate(60)
                await fx.send_malformed()
                await wait_committed(services, lambda: services.writer_stats.quarantined >= 1)
                await wait_committed(services, lambda: "subscribed" in {e.event for e in log.read_after(0, 10)})

                head = await trio.to_thread.run_sync(log.head)
                projection.nudge()
                await projection.wait_caught_up(head)  # the projector wrote its checkpoint

                live = await status_json(capsys, url)
                assert live["log"]["head"] >= 3
                assert [c["state"] for c in live["connections"]["live"]] == ["subscribed"]
                connection = live["connections"]["live"][0]["id"]
                by_channel = {c["channel"]: c for c in live["channels"]}
                assert set(channels) <= set(by_channel)
                for name in channels:
                    assert by_channel[name]["state"] == "subscribed"
                    assert by_channel[name]["connection"] == connection
                logged = [c for c in live["channels"] if c["entries"]]
                assert logged and all(c["last_event"] and c["age_s"] is not None for c in logged)
                assert live["projection"]["checkpoint"] is not None and live["projection"]["lag"] >= 0
                assert live["quarantine"]["by_kind"] == {"malformed": 1}
                assert live["quarantine"]["latest"][0]["kind"] == "malformed"
                # Who writes: this process, holding the file's lock (SQLite) or the account's lease (PostgreSQL).
                holds = live["writer"] if url.startswith("sqlite") else live["accounts"][0]["writer"]
                assert holds["pid"] == os.getpid(), live
                stop.set()
    finally:
        engine.dispose()

    # Gaps as the backfill task records them: gap_detected with a gap_id, closed by a backfill_completed naming it.
    now = datetime.now(UTC)
    account = str(fx.user_id)

    def entry(event: str, data: dict[str, object], uid: str) -> Any:
        return te.tracker_entry(account=account, event=event, data=data, received_at=now, uid=uid, channel="backfill")

    engine = open_engine(url)
    try:
        EventLog(engine).append(
            [
                entry(te.GAP_DETECTED, {"gap_id": "gap:a", "trigger": "reconnect"}, "g1"),
                entry(te.GAP_DETECTED, {"gap_id": "gap:b", "trigger": "chain_break"}, "g2"),
                entry(te.BACKFILL_COMPLETED, {"gap_ids": ["gap:a"]}, "b1"),
            ]
        )
        head = EventLog(engine).head()
    finally:
        engine.dispose()

    after = await status_json(capsys, url)
    assert after["log"]["head"] == head
    assert after["connections"]["live"] == []
    assert after["connections"]["last_closed"]["id"] == connection
    assert after["connections"]["last_closed"]["reason"] == "stopped"
    assert all(c["state"] == "not subscribed" and c["connection"] is None for c in after["channels"])
    assert after["gaps"]["closed_count"] == 1
    assert [g["gap_id"] for g in after["gaps"]["open"]] == ["gap:b"]
    assert after["projection"]["lag"] == head - after["projection"]["checkpoint"]
    assert isinstance(after["discrepancies"]["unresolved"], int)

    text = await trio.to_thread.run_sync(partial(status, capsys, url))
    assert f"log: head seq {head}, last entry" in text
    assert "connections: 0 live, 1 closed" in text
    assert f"last closed: {connection} (stopped)" in text
    assert "gaps: 1 open, 1 closed (filled by backfill)" in text
    assert "quarantine: 1 frame (malformed 1)" in text
    assert "projection: checkpoint seq" in text
    await trio.to_thread.run_sync(_assert_storage, after["storage"], url)
    assert text.count("\nstorage: database ") == 1
    if url.startswith("sqlite"):
        assert f"; disk {format_bytes(after['storage']['disk_free_bytes'])} free of" in text
    else:
        assert "; the server's disk is not visible from here: watch its free space on the server" in text
    if url.startswith("sqlite"):
        assert after["writer"]["pid"] is None
        assert "writer: none (no tracker run holds the file's writer lock)" in text
    else:
        assert after["writer"] is None and after["accounts"][0]["writer"]["pid"] is None
        assert f"writer (account {account}): none (no tracker run holds its writer lease)" in text


def _assert_storage(storage: dict[str, Any], url: str) -> None:
    """``status --format json``'s ``storage`` of a database nothing writes: SQLite as ``os.stat`` and ``os.statvfs``
    tell it (the free space within 64 MiB: other tests write meanwhile), PostgreSQL as the server tells it."""
    path = sqlite_path(url)
    if path is None:
        [(size,)] = rows_of(url, "SELECT pg_database_size(current_database())")
        # within a MiB: autovacuum may add a table's free-space or visibility map between the two reads
        assert abs(storage["database_bytes"] - size) < 1 << 20
        assert {k: v for k, v in storage.items() if k != "database_bytes"} == {
            "disk_free_bytes": None,
            "disk_total_bytes": None,
            "low": False,
        }
        return
    wal = path.with_name(path.name + "-wal")
    disk = os.statvfs(path.parent)
    assert storage["database_bytes"] == path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert storage["disk_total_bytes"] == disk.f_blocks * disk.f_frsize
    assert abs(storage["disk_free_bytes"] - disk.f_bavail * disk.f_frsize) < 64 << 20
    figures = (storage["database_bytes"], storage["disk_free_bytes"], storage["disk_total_bytes"])
    assert storage["low"] == Space(*figures).low


def test_the_storage_line_warns_when_the_disk_is_low() -> None:
    gib = 1 << 30
    assert describe_space(Space(None, None, None)) is None  # an in-memory database
    roomy = Space(3 * gib // 2, 60 * gib, 100 * gib, "/data")
    assert describe_space(roomy) == "storage: database 1.5 GiB; disk 60.0 GiB free of 100.0 GiB (60 %)"
    for low in (Space(gib, gib - 1, 100 * gib), Space(5 * gib, 4 * gib, 100 * gib)):  # under 1 GiB; the database
        assert low.low
        line = describe_space(low)
        assert line is not None and "; LOW: free space on it (when it is full, appends stop:" in line
    assert not Space(gib, 6 * gib, 100 * gib).low
    assert not Space(gib, 40 * gib, 900 * gib).low  # 4 % of a big disk, but room for 40 such databases
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * (1 << 20) + (1 << 19), 2 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.5 MiB",
        "2.0 TiB",
    ]


def test_status_of_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    text = status(capsys, url)
    assert "log: head seq 0 (empty)" in text
    assert "projection: never ran" in text
    assert json.loads(status(capsys, url, "--format", "json"))["channels"] == []


def test_decimals_in_status_json_never_use_an_exponent() -> None:
    """Issue 14.10: str(Decimal) prints 1E-8; every decimal the CLI prints is plain."""
    from decimal import Decimal

    from tracker.cli.status import _plain

    assert _plain(Decimal("1E-8")) == "0.00000001"
    assert _plain(Decimal("1.50E+3")) == "1500"


def test_status_shows_the_ledger_per_trade_account(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.bitstamp import ledger_entries as le

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    at = datetime(2026, 12, 6, 12, tzinfo=UTC)
    items = [le.entry_from_ledger_row({"id": i, "type": 0, "btc": "1"}, account="1", trade_account_id="0",
                                      received_at=at) for i in (3, 9)]  # fmt: skip
    items.append(le.entry_from_ledger_row({"id": 40, "type": 14}, account="1", trade_account_id="7", received_at=at))
    items.append(le.entry_from_balances([], account="1", trade_account_id="0", received_at=at))
    summary = {"ledger": {"unavailable": ["crypto_transactions:0"], "errors": {}, "snapshots": ["0"]}}
    reconciled = te.tracker_entry(account="1", event=te.RECONCILED, data=summary, received_at=at, uid="r1",
                                  channel="reconcile")  # fmt: skip
    engine = open_engine(url)
    try:
        EventLog(engine).append([*items, reconciled], [])  # type: ignore[list-item]
    finally:
        engine.dispose()
    out = status(capsys, url)
    assert "ledger (per trade account; 0 = main):" in out
    assert "  0: 2 rows, last row 9 " in out
    assert "balance snapshots 1, last " in out
    assert "  7: 1 rows, last row 40 " in out
    assert "endpoint unavailable: ledger crypto_transactions:0" in out
    data = json.loads(status(capsys, url, "--format", "json"))
    assert [(a["trade_account_id"], a["rows"], a["last_row_id"], a["snapshots"]) for a in data["ledger"]] == [
        ("0", 2, "9", 1),
        ("7", 1, "40", 0),
    ]


def test_status_keeps_each_accounts_ledger_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several Bitstamp accounts in one log (``tracker run`` with [[accounts]]): trade account 0 of each is its own."""
    from tracker.bitstamp import ledger_entries as le

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    at = datetime(2026, 12, 6, 12, tzinfo=UTC)
    items = [le.entry_from_ledger_row({"id": i, "type": 0, "btc": "1"}, account=account, trade_account_id="0",
                                      received_at=at) for account, i in (("1", 3), ("1", 9), ("22", 5))]  # fmt: skip
    engine = open_engine(url)
    try:
        EventLog(engine).append(items, [])
    finally:
        engine.dispose()
    out = status(capsys, url)
    assert "ledger (per account / trade account; 0 = main):" in out
    assert "  1 / 0: 2 rows, last row 9 " in out
    assert "  22 / 0: 1 rows, last row 5 " in out
    data = json.loads(status(capsys, url, "--format", "json"))
    assert [(a["account"], a["trade_account_id"], a["rows"]) for a in data["ledger"]] == [("1", "0", 2), ("22", "0", 1)]


@asynccontextmanager
async def two_accounts_running(
    url: str,
    engine: Engine,
    *,
    seeds: tuple[int, int],
    users: tuple[int, int],
    key: str,
    retry_base_s: float,
    frames: int = 5,
) -> AsyncIterator[tuple[FakeExchange, FakeExchange, AccountState, AccountState]]:
    """Two fake exchanges (``seeds``, ``users``, API keys ``<key>one`` and ``<key>two``) and one process tracking
    both (``start_accounts``), each account's first ``frames`` frames committed. Yields (exchange 1, exchange 2,
    account 1's state, account 2's); the process stops when the block ends."""
    async with (
        open_fake_exchange(seed=seeds[0], markets=MARKETS, user_id=users[0], api_key=f"{key}one") as one,
        open_fake_exchange(seed=seeds[1], markets=MARKETS, user_id=users[1], api_key=f"{key}two") as two,
    ):
        stop = trio.Event()
        log = EventLog(engine)
        async with trio.open_nursery() as nursery:
            first, second = await start_accounts(
                nursery,
                [fx.settings(url, markets=MARKETS, subaccounts=()) for fx in (one, two)],
                engine,
                stop,
                companions=False,
                retry_base_s=retry_base_s,
            )
            try:
                for fx in (one, two):
                    await fx.wait_subscribed(fx.private_channels())
                    await fx.generate(frames)
                for state, fx in ((first, one), (second, two)):
                    await wait_committed(state.services, partial(_has_ws_entries, log, str(fx.user_id)))
                yield one, two, first, second
            finally:
                stop.set()


async def test_status_shows_each_account_of_a_several_accounts_run(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tracker run`` with two accounts, the first one's key deleted while it runs: ``tracker status`` (read while
    the run goes on) shows per account its live connections and subscribed channels, so the one not tracked stands
    out; channel lines name their account. Who writes: SQLite, this process holds the file's lock; PostgreSQL, it
    holds the lease of the account it tracks, and nobody holds the down account's."""
    url = db_url
    upgrade(url)
    engine = open_engine(url)
    try:
        # the first one stays down while the test looks
        async with two_accounts_running(
            url, engine, seeds=(3, 4), users=(710041, 710042), key="keystatus", retry_base_s=600
        ) as running:
            one, two, first, _ = running
            one.revoke_key()
            await one.drop_connections()
            while first.down is None:
                await first.changed.wait()
            data = await status_json(capsys, url)
            text = await trio.to_thread.run_sync(partial(status, capsys, url))
    finally:
        engine.dispose()
    accounts = {a["account"]: a for a in data["accounts"]}
    assert list(accounts) == ["710041", "710042"]
    down, up = accounts["710041"], accounts["710042"]
    assert (down["live_connections"], down["subscribed"]) == (0, 0), data["connections"]["live"]
    assert down["channels"] > 0 and down["entries"] > 0
    assert up["live_connections"] == 1 and up["subscribed"] == up["channels"] == len(two.private_channels())
    assert {c["account"] for c in data["connections"]["live"]} == {"710042"}
    # The reconnect refused its token: that connection is logged closed, with why (not left "subscribing").
    assert data["connections"]["last_closed"]["reason"].startswith("AuthError: API key not found"), data["connections"]
    assert {(c["account"], c["state"]) for c in data["channels"] if c["account"] == "710041"} == {
        ("710041", "not subscribed")
    }
    assert "accounts: 2 in this log" in text
    assert f"  710041  0 live connections, 0 of {down['channels']} channels subscribed, last entry" in text
    assert f"  710042  1 live connection, {up['channels']} of {up['channels']} channels subscribed" in text
    assert "  account channel" in text and "  710042 private-my_orders_btcusd-710042" in text
    me = os.getpid()
    if url.startswith("sqlite"):
        assert data["writer"] == {"pid": me, "backend_pid": None, "standbys": []}
        assert f"writer: tracker run pid {me}\n" in text
        assert down["writer"] is None and up["writer"] is None
    else:
        assert data["writer"] is None and down["writer"] == {"pid": None, "backend_pid": None, "standbys": []}
        assert up["writer"]["pid"] == me and up["writer"]["backend_pid"] > 0, up
        assert "; writer: none (no tracker run holds its writer lease)" in text
        assert f"; writer: tracker run pid {me} (backend pid {up['writer']['backend_pid']})" in text


def _has_ws_entries(log: EventLog, account: str) -> bool:
    return any(e.account == account for page in log.iter_after(0) for e in page if e.source == "ws")
