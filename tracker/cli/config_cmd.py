"""``tracker config show``: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import argparse
import json

from tracker.config import ENV_NAMES, describe, describe_source, load_settings


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
    settings = load_settings({"db_url": args.db_url, "markets": args.markets})  # logs the secret file's warning
    rows = describe(settings)
    # ``from`` is the kind of origin (a contract); ``source`` adds which flag, variable or file exactly.
    field_of = {env: name for name, env in ENV_NAMES.items()}
    sources = {name: settings.sources.get(field_of.get(name, name)) for name, _, _ in rows}
    if args.format == "json":
        shown = {
            name: {"value": value, "from": origin} | ({"source": source} if (source := sources[name]) else {})
            for name, value, origin in rows
        }
        print(json.dumps(shown, indent=2))
        return 0
    width = max(len(name) for name, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    for name, value, _origin in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  ({describe_source(settings, field_of.get(name, name))})")
    return 0
