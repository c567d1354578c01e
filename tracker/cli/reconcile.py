"""``tracker reconcile``: one backfill and one full reconciliation against the exchange, then the unresolved
discrepancies. Exit 0 when there are none, 1 while any is unresolved (cron-friendly; errors keep their own codes).

A full run walks ``user_transactions/`` from the beginning per market (``--incremental``: from where the previous
reconciliation stopped) and checks closed orders with ``order_status/`` (at most ``--max-status-checks``).
"""

from __future__ import annotations

import argparse
from typing import Any

from tracker.cli import add_common_flags


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reconcile",
        help="backfill, compare the projection with the exchange, print unresolved discrepancies (exit 1 if any)",
    )
    add_common_flags(parser)
    parser.add_argument("--markets", help="comma-separated market symbols (env TRACKER_MARKETS; default: discover)")
    parser.add_argument("--api-url", dest="api_url", help="Bitstamp HTTP API base URL (env BITSTAMP_API_URL)")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="allow plain http:// to non-loopback hosts"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    parser.add_argument("--incremental", action="store_true", help="only the window since the previous reconciliation")
    parser.add_argument("--max-status-checks", type=int, default=200, help="order_status/ calls at most (200)")
    parser.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import trio

    from tracker.config import load_settings
    from tracker.runtime.reconciler import ReconcileOptions, format_discrepancies, reconcile_once
    from tracker.store.engine import open_engine
    from tracker.store.migrate import check_schema

    settings = load_settings(
        flags={"db_url": args.db_url, "markets": args.markets, "api_url": args.api_url, "insecure": args.insecure}
    )
    settings.require_credentials()
    engine = open_engine(settings.db_url)
    try:
        check_schema(engine)
        result = trio.run(
            lambda: reconcile_once(
                settings,
                engine,
                full=not args.incremental,
                options=ReconcileOptions(max_status_checks=args.max_status_checks),
            )
        )
    finally:
        engine.dispose()
    print(format_discrepancies(result.unresolved, args.format))
    return 1 if result.unresolved else 0
