"""``tracker run``: live ingest of the account's private channels into the event log, until SIGINT/SIGTERM.

Settings come from flags > environment > config file. The API secret is only ever read from the environment or a
file (never argv). Exit code 0 after a clean stop: everything received has been committed.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tracker.cli import add_common_flags
from tracker.errors import TrackerError

log = logging.getLogger("tracker.run")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="track the account live: every private frame into the event log (Ctrl-C stops cleanly)"
    )
    add_common_flags(parser)
    parser.add_argument("--markets", help="comma-separated market symbols (env TRACKER_MARKETS; default: discover)")
    parser.add_argument("--api-url", dest="api_url", help="Bitstamp HTTP API base URL (env BITSTAMP_API_URL)")
    parser.add_argument("--ws-url", dest="ws_url", help="Bitstamp WebSocket URL (env BITSTAMP_WS_URL)")
    parser.add_argument(
        "--metrics-port",
        dest="metrics_port",
        type=int,
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (env TRACKER_METRICS_PORT; 0: any free port)",
    )
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="allow plain http:// and ws:// to non-loopback hosts"
    )
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from tracker.config import load_settings
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog
    from tracker.store.migrate import check_schema

    settings = load_settings(
        flags={
            "db_url": args.db_url,
            "markets": args.markets,
            "api_url": args.api_url,
            "ws_url": args.ws_url,
            "metrics_port": args.metrics_port,
            "insecure": args.insecure,
        }
    )
    settings.require_credentials()
    engine = open_engine(settings.db_url)
    try:
        check_schema(engine)
        from tracker.runtime.projector import projector_task
        from tracker.runtime.reconciler import recovery_task

        # The projector keeps the proj_* tables (the v_* views) up with the log. Backfill at start-up and after every
        # (re)connect, reconciliation every reconcile_interval_s. Built here, before anything connects: its start time
        # splits this run's log entries from the previous run's.
        extra_tasks = [projector_task(engine), recovery_task()]
        if settings.metrics_port is not None:
            extra_tasks.append(start_metrics(engine, settings.metrics_port))
        trio.run(run_checked, settings, EventLog(engine), extra_tasks)
    except BaseExceptionGroup as group:
        # trio nurseries wrap errors in groups; a single user-facing error is shown as its one-line message.
        error = single_tracker_error(group)
        if error is None:
            raise
        raise error from None
    finally:
        engine.dispose()
    return 0


def single_tracker_error(group: BaseExceptionGroup[BaseException]) -> TrackerError | None:
    """The one ``TrackerError`` in a (nested) exception group, or None if there is anything else in it."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], TrackerError):
        return leaves[0]
    return None


def start_metrics(engine: Any, port: int) -> Any:
    """Serve /metrics now (a port in use fails before anything connects) and return the updater task."""
    from tracker.metrics import Metrics, serve_metrics
    from tracker.runtime.metrics_task import metrics_task

    metrics = Metrics()
    bound = serve_metrics(metrics, port)
    log.info("metrics at http://127.0.0.1:%d/metrics", bound)
    return metrics_task(metrics, engine)


async def run_checked(settings: Any, event_log: Any, extra_tasks: list[Any]) -> None:
    from tracker.runtime.preflight import check_markets
    from tracker.runtime.service import run_tracker

    await check_markets(settings)
    await run_tracker(settings, event_log, extra_tasks=extra_tasks)
