"""Prometheus metrics for a running tracker (``--metrics-port``), on a registry of our own.

Names (a public contract, like the CLI and the views):

| metric | type | labels | meaning |
|---|---|---|---|
| tracker_frames_ingested_total | counter | channel_kind | private frames appended to the log (duplicates excluded) |
| tracker_frames_duplicate_total | counter | | frames absorbed by the dedup key |
| tracker_frames_quarantined_total | counter | kind | frames kept in quarantine (malformed, unknown, conflict) |
| tracker_commit_latency_seconds | histogram | | receive → commit latency of logged frames |
| tracker_log_head | gauge | | last seq in the event log |
| tracker_projection_lag_events | gauge | | log head minus the projector's checkpoint |
| tracker_reconnects_total | counter | reason | websocket reconnects |
| tracker_connections | gauge | | open websocket connections |
| tracker_gaps_total | counter | kind | gaps detected |
| tracker_backfilled_events_total | counter | endpoint | facts appended from REST |
| tracker_discrepancies_open | gauge | | unresolved discrepancies |
| tracker_channel_last_event_timestamp_seconds | gauge | channel | receive time (Unix s) of the channel's newest entry |
| tracker_ledger_rows_total | counter | trade_account_id | ledger rows (account-wide user_transactions/) appended |
| tracker_balance_snapshots_total | counter | | account_balances/ snapshots appended (consistent cut) |
| tracker_balance_snapshot_races_total | counter | | snapshots given up after three raced movements |
| tracker_ledger_walk_seconds | histogram | | duration of one ledger walk (one trade account, cursor to head) |
| tracker_task_failures_total | counter | task | an extra task's bugs: restarted, ingest went on (supervise.py) |
| tracker_build_info | gauge (info) | version, python, sqlalchemy, trio | always 1; the labels say what runs |

docs/metrics.md explains each one and what to alert on. Counters export no ``_created`` series (a second series per
counter that no alert uses; ``disable_created_metrics``). The HTTP endpoint runs in prometheus_client's own daemon
thread: it only reads these values.
"""

from __future__ import annotations

import errno
import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)

from tracker.errors import TrackerError


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide in prometheus_client; tracker wants it everywhere anyway
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "tracker_frames_ingested", "Private frames appended to the log", ["channel_kind"], registry=r
        )
        self.duplicates = Counter("tracker_frames_duplicate", "Frames absorbed by the dedup key", registry=r)
        self.quarantined = Counter("tracker_frames_quarantined", "Frames kept in quarantine", ["kind"], registry=r)
        self.commit_latency = Histogram(
            "tracker_commit_latency_seconds",
            "Receive to commit latency of logged frames",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.log_head = Gauge("tracker_log_head", "Last seq in the event log", registry=r)
        self.projection_lag = Gauge("tracker_projection_lag_events", "Log head minus projector checkpoint", registry=r)
        self.reconnects = Counter("tracker_reconnects", "Websocket reconnects", ["reason"], registry=r)
        self.connections = Gauge("tracker_connections", "Open websocket connections", registry=r)
        self.gaps = Counter("tracker_gaps", "Gaps detected", ["kind"], registry=r)
        self.walk_failures = Counter(
            "tracker_walk_failures", "REST walks that failed and are retried alone", ["endpoint", "code"], registry=r
        )
        self.endpoints_unavailable = Counter(
            "tracker_endpoints_unavailable",
            "REST walks the exchange refuses for this account, given up until restart",
            ["endpoint", "code"],
            registry=r,
        )
        self.channels_refused = Counter(
            "tracker_channels_refused", "Channels set aside after repeated refusals", ["channel_kind"], registry=r
        )
        self.backfilled = Counter("tracker_backfilled_events", "Facts appended from REST", ["endpoint"], registry=r)
        self.discrepancies_open = Gauge("tracker_discrepancies_open", "Unresolved discrepancies", registry=r)
        self.database_bytes = Gauge(
            "tracker_database_bytes", "Size of the database (SQLite: file and WAL; PostgreSQL: all of it)", registry=r
        )
        self.disk_free_bytes = Gauge(
            "tracker_disk_free_bytes",
            "Free space of the disk the SQLite database is on (no series on PostgreSQL: watch the server's)",
            ["path"],
            registry=r,
        )
        self.channel_last_event = Gauge(
            "tracker_channel_last_event_timestamp_seconds",
            "Receive time (Unix seconds) of the newest entry logged on each websocket channel",
            ["channel"],
            registry=r,
        )
        self.ledger_rows = Counter(
            "tracker_ledger_rows", "Ledger rows appended from user_transactions/", ["trade_account_id"], registry=r
        )
        self.balance_snapshots = Counter(
            "tracker_balance_snapshots", "account_balances/ snapshots appended (consistent cut)", registry=r
        )
        self.balance_snapshot_races = Counter(
            "tracker_balance_snapshot_races", "Balance snapshots given up after repeated raced movements", registry=r
        )
        self.ledger_walk_seconds = Histogram(
            "tracker_ledger_walk_seconds",
            "Duration of one ledger walk of one trade account (cursor to head)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )
        # Several accounts in one process only (``[[accounts]]``): the label is the account's place in the file.
        self.account_up = Gauge(
            "tracker_account_up", "1 while the account is tracked, 0 while it is down", ["account"], registry=r
        )
        self.account_failures = Counter(
            "tracker_account_failures",
            "Times the account's service ended on an error of its own",
            ["account"],
            registry=r,
        )
        self.account_connections = Gauge(
            "tracker_account_connections", "Open websocket connections of the account", ["account"], registry=r
        )
        self.task_failures = Counter(
            "tracker_task_failures",
            "Times an extra task (projector, recovery, metrics) failed on a bug and was started again",
            ["task"],
            registry=r,
        )
        self.build = Info("tracker_build", "The tracker version and the versions it runs on", registry=r)
        self.build.info(build_info())


def build_info() -> dict[str, str]:
    """What ``tracker --version`` prints and ``tracker_build_info`` exports: tracker's version and its runtime's."""

    def of(distribution: str) -> str:
        try:
            return version(distribution)
        except PackageNotFoundError:
            return "unknown"

    return {
        "version": of("tracker"),
        "python": platform.python_version(),
        "sqlalchemy": of("sqlalchemy"),
        "trio": of("trio"),
    }


def serve_metrics(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> int:
    """Start the /metrics endpoint; returns the bound port. A port in use is a one-line TrackerError."""
    try:
        server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise TrackerError(
                f"metrics port {port} is already in use: pick another with --metrics-port (or 0 for any free port)"
            ) from None
        raise TrackerError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from None
    return int(server.server_port)
