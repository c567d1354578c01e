"""``tracker run``: live ingest of the account's private channels into the event log, until SIGINT/SIGTERM.

Settings come from flags > environment > config file. The API secret is only ever read from the environment or a
file (never argv). Exit code 0 after a clean stop: everything received has been committed.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.metrics import Metrics

from tracker.cli import add_common_flags, require_existing_database

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
    from tracker.runtime.app import run_app
    from tracker.store.engine import open_engine
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
    require_existing_database(settings)  # never leave an empty SQLite file behind
    engine = open_engine(settings.db_url)
    try:
        check_schema(engine)
        metrics = start_metrics(settings.metrics_port) if settings.metrics_port is not None else None
        trio.run(partial(run_app, settings, engine, metrics=metrics))
    finally:
        engine.dispose()
    return 0


def start_metrics(port: int) -> Metrics:
    """Serve /metrics now, so that a port in use fails before anything connects."""
    from tracker.metrics import Metrics, serve_metrics

    metrics = Metrics()
    bound = serve_metrics(metrics, port)
    log.info("metrics at http://127.0.0.1:%d/metrics", bound)
    return metrics
