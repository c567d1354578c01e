"""``tracker config show``: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import argparse
import json

from tracker.cli.run import add_run_flags, run_flags
from tracker.config import (
    ENV_NAMES,
    Settings,
    describe,
    describe_source,
    load_accounts,
    load_settings,
    mask,
    mask_secret,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("config", help="show the effective configuration (secrets masked)")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print every setting, its value and where it came from")
    add_run_flags(show)  # what a run with these flags would use, shown first
    show.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    show.set_defaults(func=show_config)


def show_config(args: argparse.Namespace) -> int:
    flags = run_flags(args)
    settings = load_settings(flags)  # logs the secret file's warning
    rows = describe(settings)
    # ``from`` is the kind of origin (a contract); ``source`` adds which flag, variable or file exactly.
    field_of = {env: name for name, env in ENV_NAMES.items()}
    sources = {name: settings.sources.get(field_of.get(name, name)) for name, _, _ in rows}
    shown_by: dict[str, str] = {}  # an account's row: how the text table names its source
    if settings.accounts_in_file and not settings.api_key:  # what `tracker run` would track: each listed account
        for number, one in enumerate(load_accounts(flags), 1):
            for name, value, origin, source in _account_rows(one, settings):
                row = f"accounts[{number}].{name}"
                rows.append((row, value, origin))
                sources[row] = source
                shown_by[row] = f"{origin} {source}" if origin == "file" and source else origin
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
        where = shown_by.get(name) or describe_source(settings, field_of.get(name, name))
        print(f"{name:<{width}}  {value:<{vwidth}}  ({where})")
    return 0


def _account_rows(one: Settings, shared: Settings) -> list[tuple[str, str, str, str | None]]:
    """(name, shown value, origin, source) of what one listed account sets itself (secrets masked)."""
    rows: list[tuple[str, str, str, str | None]] = []
    for name in ("api_key", "api_secret", "markets", "subaccounts", "api_url", "ws_url"):
        value = getattr(one, name)
        if name in ("api_url", "ws_url", "markets") and value == getattr(shared, name):
            continue  # the shared value, shown above
        if name in ("api_key", "api_secret"):
            shown = (mask if name == "api_key" else mask_secret)(value.reveal() if value else None)
        elif isinstance(value, tuple):
            shown = ",".join(value) or "(none: the main account only)"
        else:
            shown = "(discovered from the API)" if value is None else str(value)
        rows.append((name, shown, one.origins.get(name, "default"), one.sources.get(name)))
    return rows
