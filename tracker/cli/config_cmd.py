"""``tracker config show``: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import argparse
import json
import logging

from tracker.config import describe, load_settings

log = logging.getLogger("tracker.config")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("config", help="show the effective configuration (secrets masked)")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print every setting, its value and where it came from")
    show.add_argument("--db-url", dest="db_url")
    show.add_argument("--markets")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(func=show_config)


def show_config(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    settings = load_settings({"db_url": args.db_url, "markets": args.markets}, warnings=warnings)
    for warning in warnings:
        log.warning(warning)
    rows = describe(settings)
    if args.format == "json":
        print(json.dumps({name: {"value": value, "from": origin} for name, value, origin in rows}, indent=2))
        return 0
    width = max(len(name) for name, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    for name, value, origin in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  ({origin})")
    return 0
