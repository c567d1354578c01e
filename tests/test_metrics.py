"""``tracker run --metrics-port 0`` (a subprocess) against the fake exchange serves Prometheus text with the metric
names of tracker/metrics.py, and the values follow what the run did (frames by channel kind, commit latency, the
reconnect after a drop and why, the quarantined frame, log head and projection lag).

Rules: loopback only, port 0 (the bound port is read from the run's log line), an absolute timeout. The endpoint is
read until it shows the expected values: the updater publishes once a second, and the scrape is the observable.
"""

from __future__ import annotations

import ast
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from store_helpers import entry, open_log
from test_logging import MARKETS, tracker_run

from tracker.config import Secret, Settings
from tracker.fake.server import open_fake_exchange
from tracker.metrics import Metrics
from tracker.runtime import metrics_task as task_module
from tracker.runtime.service import Services

pytestmark = pytest.mark.timeout(60)

NAMES = (
    "tracker_frames_ingested",
    "tracker_frames_duplicate",
    "tracker_frames_quarantined",
    "tracker_commit_latency_seconds",
    "tracker_log_head",
    "tracker_projection_lag_events",
    "tracker_reconnects",
    "tracker_connections",
    "tracker_gaps",
    "tracker_backfilled_events",
    "tracker_discrepancies_open",
    "tracker_channel_last_event_timestamp_seconds",
    "tracker_build_info",
    "tracker_ledger_rows",
    "tracker_balance_snapshots",
    "tracker_balance_snapshot_races",
    "tracker_ledger_walk_seconds",
    "tracker_task_failures",
    "tracker_database_bytes",
)
ROOT = Path(__file__).resolve().parents[1]
SCRAPE_EVERY_S = 0.2


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape_until(url: str, ready: object) -> str:
    """GET ``url`` until ``ready(samples)`` holds (bounded by the deadline)."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(30):
            while True:
                text = (await client.get(url)).text
                if ready(samples(text)):  # type: ignore[operator]
                    return text
                await trio.sleep(SCRAPE_EVERY_S)


def value(s: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_endpoint_of_a_real_run(tmp_path: Path) -> None:
    started = time.time()
    async with open_fake_exchange(markets=MARKETS) as fx:
        channels = fx.private_channels()
        async with tracker_run(fx, tmp_path, "run", "--metrics-port", "0") as proc:
            metrics_line = re.compile(r"metrics at (http://127\.0\.0\.1:\d+/metrics)")
            await proc.wait_lines(lambda line: bool(metrics_line.search(line)))
            url = next(m[1] for line in proc.lines if (m := metrics_line.search(line)))
            await fx.wait_subscribed(channels)
            await proc.wait_lines(lambda line: f"subscribed {len(channels)} channels" in line)
            await fx.generate(40)
            await fx.send_malformed()
            await proc.wait_lines(lambda line: "malformed frame on" in line)
            await fx.drop_connections()
            await fx.wait_connections_total(2)
            await fx.wait_subscribed(channels)
            await fx.generate(10)

            def ready(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
                return (
                    value(s, "tracker_frames_ingested_total", channel_kind="my_orders") > 0
                    and value(s, "tracker_reconnects_total", reason="dropped") >= 1
                    and value(s, "tracker_frames_quarantined_total", kind="malformed") == 1
                    and value(s, "tracker_connections") == 1
                )

            text = await scrape_until(url, ready)
    for name in NAMES:
        assert f"# TYPE {name}" in text, name
    s = samples(text)
    assert value(s, "tracker_commit_latency_seconds_count") > 0
    assert value(s, "tracker_log_head") > 0
    assert ("tracker_projection_lag_events", ()) in s
    assert ("tracker_discrepancies_open", ()) in s
    # the database's size and its disk's free space (store/space.py; test_status.py checks the figures themselves)
    assert value(s, "tracker_database_bytes") > 0
    directory, free = _disk_of(tmp_path)
    assert [dict(labels) for (name, labels) in s if name == "tracker_disk_free_bytes"] == [{"path": directory}]
    assert abs(value(s, "tracker_disk_free_bytes", path=directory) - free) < 1 << 30
    kinds = {dict(labels).get("channel_kind") for (name, labels) in s if name == "tracker_frames_ingested_total"}
    assert kinds <= {"my_orders", "my_trades", "live_trades", "my_settlements", "my_liquidations"}
    # Issue 14.9: the per-channel "last event" gauge, build info, and no _created series.
    last = {
        dict(labels)["channel"]: v
        for (name, labels), v in s.items()
        if name == "tracker_channel_last_event_timestamp_seconds"
    }
    assert last and set(last) <= set(channels)
    assert any("my_orders" in channel for channel in last)
    assert all(started - 1 <= v <= time.time() + 1 for v in last.values())
    info = [dict(labels) for (name, labels) in s if name == "tracker_build_info"]
    assert len(info) == 1 and set(info[0]) == {"version", "python", "sqlalchemy", "trio"}
    assert "_created" not in text


def _disk_of(path: Path) -> tuple[str, int]:
    """The directory as the gauge's label names it, and its disk's free space now (``statvfs``)."""
    disk = os.statvfs(path)
    return str(path.resolve()), disk.f_bavail * disk.f_frsize


def test_every_exported_metric_is_documented() -> None:
    """docs/metrics.md names every metric the endpoint exports (tracker_frames_duplicate_total was missing)."""
    from prometheus_client import generate_latest

    from tracker.metrics import Metrics

    metrics = Metrics()
    metrics.channel_last_event.labels(channel="private-my_orders_btcusd-1").set(1)
    metrics.disk_free_bytes.labels(path="/var/lib/tracker").set(1)  # a labelled gauge exports once it has a value
    text = generate_latest(metrics.registry).decode()
    exported = {family.name for family in text_string_to_metric_families(text)}
    assert exported >= set(NAMES)
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/metrics.md" in readme
    suffix = {"counter": "_total", "info": "_info"}
    for family in text_string_to_metric_families(text):
        shown = family.name + suffix.get(family.type, "")
        assert f"`{shown}`" in doc, shown
    assert "_created" not in text


def test_the_metrics_updater_builds_no_sql() -> None:
    """SQL lives in store/ (store/metrics_queries.py); runtime/metrics_task.py only labels what it returns."""
    tree = ast.parse((ROOT / "tracker" / "runtime" / "metrics_task.py").read_text(encoding="utf-8"))
    from_sqlalchemy = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy")
        for alias in node.names
    }
    assert from_sqlalchemy <= {"Engine"}
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "tracker.store.schema" not in imported


def test_ledger_counts_are_exported_once() -> None:
    """The ledger capture's counts of this run reach the counters as deltas (a second look adds nothing)."""
    from prometheus_client import generate_latest

    from tracker.metrics import Metrics
    from tracker.runtime.ledger_walk import LedgerStats
    from tracker.runtime.metrics_task import _apply_ledger, _Cursor

    metrics = Metrics()
    stats = LedgerStats(rows={"0": 5, "7": 2}, snapshots=2, races=1)
    stats.walk_seconds.extend([0.02, 0.3])
    cursor = _Cursor()
    _apply_ledger(metrics, stats, cursor)
    _apply_ledger(metrics, stats, cursor)
    stats.rows["0"] += 3
    _apply_ledger(metrics, stats, cursor)
    s = samples(generate_latest(metrics.registry).decode())
    assert value(s, "tracker_ledger_rows_total", trade_account_id="0") == 8
    assert value(s, "tracker_ledger_rows_total", trade_account_id="7") == 2
    assert value(s, "tracker_balance_snapshots_total") == 2
    assert value(s, "tracker_balance_snapshot_races_total") == 1
    assert value(s, "tracker_ledger_walk_seconds_count") == 2


async def test_the_last_round_begins_after_the_stop(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that arrives while a round is under way (its read of the log done) is followed by one more round: what
    was committed just before the stop is counted. The round is held after its read until the test has appended and
    stopped."""
    real_read = task_module._read
    read_done = trio.Event()
    go = threading.Event()
    hold = {"on": False}
    token = trio.lowlevel.current_trio_token()

    def held_read(engine: object, cursor: object) -> object:
        delta = real_read(engine, cursor)  # type: ignore[arg-type]
        if hold["on"]:
            hold["on"] = False
            trio.from_thread.run_sync(read_done.set, trio_token=token)
            go.wait(10)
        return delta

    monkeypatch.setattr(task_module, "_read", held_read)
    with open_log(sqlite_url) as log:
        settings = Settings(db_url=sqlite_url, api_key=Secret("k"), api_secret=Secret("s"))
        services = Services.starting(settings, trio.Event(), log)
        metrics = Metrics()
        async with trio.open_nursery() as nursery:
            await nursery.start(task_module.metrics_task(metrics, log.engine, interval=0.01), services)
            hold["on"] = True
            await read_done.wait()
            await trio.to_thread.run_sync(log.append, [entry(i) for i in range(1, 6)])
            services.stop.set()
            go.set()
    assert metrics.registry.get_sample_value("tracker_frames_ingested_total", {"channel_kind": "my_orders"}) == 5
