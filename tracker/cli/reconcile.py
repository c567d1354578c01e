"""``tracker reconcile``: one backfill and one full reconciliation against the exchange, then the unresolved
discrepancies. Exit 0 when there are none, 1 while any is unresolved (cron-friendly; errors keep their own codes).
With the config file's ``[[accounts]]`` (and no key in the environment): every listed account in turn, their
unresolved discrepancies together.

A full run walks ``user_transactions/`` from the beginning per market (``--incremental``: from where the previous
reconciliation stopped) and checks closed orders with ``order_status/`` (at most ``--max-status-checks``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from functools import partial
from typing import Any

from tracker.cli import add_common_flags, whole_number
from tracker.domain.rows import DiscrepancyRow


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
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.add_argument("--incremental", action="store_true", help="only the window since the previous reconciliation")
    parser.add_argument(
        "--max-status-checks",
        type=whole_number(0),
        default=200,
        help="order_status/ calls at most (default: 200; 0: none)",
    )
    parser.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import trio

    from tracker.cli import open_database
    from tracker.config import load_accounts, load_settings
    from tracker.runtime.reconciler import ReconcileOptions
    from tracker.runtime.recovery import reconcile_once
    from tracker.store.event_log import EventLog
    from tracker.store.migrate import check_schema

    flags = {"db_url": args.db_url, "markets": args.markets, "api_url": args.api_url, "insecure": args.insecure}
    settings = load_settings(flags=flags)
    # The config file's [[accounts]] (no key in the environment): every listed account in turn.
    accounts = load_accounts(flags=flags) if not settings.api_key and settings.accounts_in_file else (settings,)
    for one in accounts:
        one.require_credentials()
    engine = open_database(settings, write=True)  # a missing SQLite file is an error, never created here
    unresolved: list[DiscrepancyRow] = []
    try:
        check_schema(engine)
        for one in accounts:
            result = trio.run(
                partial(
                    reconcile_once,
                    one,
                    EventLog(engine),
                    full=not args.incremental,
                    options=ReconcileOptions(max_status_checks=args.max_status_checks),
                )
            )
            unresolved += result.unresolved  # each account's own
    finally:
        engine.dispose()
    print(format_discrepancies(unresolved, args.format))
    return 1 if unresolved else 0


def format_discrepancies(rows: Sequence[DiscrepancyRow], fmt: str = "table") -> str:
    """Unresolved discrepancies as a table (kind, entity, detail) or JSON (pure: ``cmd_reconcile`` prints it)."""
    if fmt == "json":
        return json.dumps(
            [
                {"id": d.discrepancy_id, "kind": d.kind, "entity": d.entity, "detail": d.detail, "status": d.status,
                 "opened_seq": d.opened_seq}
                for d in rows
            ],
            indent=2,
        )  # fmt: skip
    if not rows:
        return "no unresolved discrepancies"
    header = ("kind", "entity", "detail")
    table = [header, *((d.kind, d.entity, d.detail) for d in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in table]
    return "\n".join([*lines, f"{len(rows)} unresolved discrepanc{'y' if len(rows) == 1 else 'ies'}"])
