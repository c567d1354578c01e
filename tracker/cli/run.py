"""``tracker run``: live ingest of the account's private channels into the event log, until SIGINT/SIGTERM.

Settings come from flags > environment > config file. The API secret is only ever read from the environment or a
file (never argv). Exit code 0 after a clean stop: everything received has been committed.
"""

from __future__ import annotations

import argparse
from typing import Any

from tracker.cli import add_common_flags


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="track the account live: every private frame into the event log (Ctrl-C stops cleanly)"
    )
    add_common_flags(parser)
    parser.add_argument("--markets", help="comma-separated market symbols (env TRACKER_MARKETS; default: discover)")
    parser.add_argument("--api-url", dest="api_url", help="Bitstamp HTTP API base URL (env BITSTAMP_API_URL)")
    parser.add_argument("--ws-url", dest="ws_url", help="Bitstamp WebSocket URL (env BITSTAMP_WS_URL)")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="allow plain http:// and ws:// to non-loopback hosts"
    )
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from tracker.config import load_settings
    from tracker.runtime.service import run_tracker
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog
    from tracker.store.migrate import check_schema

    settings = load_settings(
        flags={
            "db_url": args.db_url,
            "markets": args.markets,
            "api_url": args.api_url,
            "ws_url": args.ws_url,
            "insecure": args.insecure,
        }
    )
    settings.require_credentials()
    engine = open_engine(settings.db_url)
    try:
        check_schema(engine)
        trio.run(run_tracker, settings, EventLog(engine))
    finally:
        engine.dispose()
    return 0
