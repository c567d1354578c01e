"""``tracker discrepancies``: what disagrees, readable and current; ``tracker discrepancies ack ID --note TEXT``.

The list shows each discrepancy's kind, what it is about, its current detail (exact decimals, never an exponent),
since when (the log seq that opened it) and, once acknowledged, the note and who wrote it. An
``order_fills_mismatch`` that the order's logged events explain as a self trade whose frame was never logged gets a
``likely:`` line (JSON: ``hint``; ``domain/self_trade_hint.py``): a hint for the person checking it, not a
resolution. ``--status`` chooses
``open`` (the default), ``acknowledged``, ``resolved`` or ``all``.

``ack`` records an acknowledgement in the log (who, when, why): the discrepancy stays in ``v_discrepancies`` with
status ``acknowledged`` and no longer counts as unresolved (``tracker reconcile``'s exit code, ``tracker status``).
If a later check finds it clean it is resolved as any other. Exit codes: 0; 2 for an unknown id or one not open.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tracker.cli import add_common_flags, open_database
from tracker.config import load_settings

STATUS_CHOICES = ("open", "acknowledged", "resolved", "all")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "discrepancies", help="list discrepancies with their current detail; `ack ID --note TEXT` acknowledges one"
    )
    add_common_flags(parser)
    parser.add_argument("--status", choices=STATUS_CHOICES, default="open", help="which ones (default: open)")
    parser.add_argument("--kind", help="only this kind, e.g. order_fills_mismatch")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.set_defaults(func=cmd_list)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    ack = actions.add_parser("ack", help="acknowledge an open discrepancy: recorded in the log with your note")
    add_common_flags(ack)
    ack.add_argument("id", help="the discrepancy's id (the first column of the list)")
    ack.add_argument("--note", required=True, help="why it may stay (kept in the log with who and when)")
    ack.add_argument("--by", help="who acknowledges (default: the OS user name)")
    ack.set_defaults(func=cmd_ack)


def cmd_list(args: argparse.Namespace) -> int:
    from tracker.domain.self_trade_hint import describe
    from tracker.store.discrepancy_queries import STATUSES, list_discrepancies, missed_self_trades
    from tracker.store.migrate import check_schema

    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_database(settings)
    try:
        check_schema(engine)
        statuses = STATUSES if args.status == "all" else (args.status,)
        rows = list_discrepancies(engine, statuses=statuses, kind=args.kind)
        hints = {ident: describe(hint) for ident, hint in missed_self_trades(engine, rows).items()}
        # A --kind that matches nothing says which kinds there are: a typo reads otherwise as "all clear".
        kinds = sorted({d["kind"] for d in list_discrepancies(engine, statuses=STATUSES)}) if not rows else []
    finally:
        engine.dispose()
    print(format_rows(rows, args.format, args.status, kind=args.kind, kinds_here=kinds, hints=hints))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from tracker.store.discrepancy_queries import acknowledge

    note = args.note.strip()
    if not note:
        from tracker.config import ConfigError

        raise ConfigError("--note must say why the discrepancy may stay (it is kept in the log)")
    from tracker.store.migrate import check_schema

    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_database(settings, write=True)
    try:
        check_schema(engine)
        row = acknowledge(engine, args.id, note=note, by=(args.by or _user()).strip())
    finally:
        engine.dispose()
    print(f"acknowledged {row['id']} (log seq {row['acknowledged_seq']}): {row['note']}")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "unknown"


def format_rows(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    status: str,
    *,
    kind: str | None = None,
    kinds_here: Sequence[str] = (),
    hints: Mapping[str, str] | None = None,
) -> str:
    """The list as a table for people or JSON for machines (pure). An empty list for a ``kind`` names the kinds the
    database has (``kinds_here``, any status). ``hints``: by discrepancy id, a ``likely:`` line (JSON: ``hint``)."""
    hints = hints or {}
    if fmt == "json":
        return json.dumps([{**d, "hint": hints.get(d["id"])} for d in rows], indent=2, default=str)
    if not rows:
        text = f"no {'' if status == 'all' else status + ' '}discrepancies"
        if kind is None:
            return text
        here = ", ".join(kinds_here) if kinds_here else "none"
        return f"{text} of kind {kind!r} (kinds in this database: {here})"
    lines = []
    for d in rows:
        head = f"{d['id']}  [{d['status']}]  {d['kind']} on {d['entity']}"
        lines.append(head)
        lines.append(f"    {d['detail']}")
        if d["id"] in hints:
            lines.append(f"    likely: {hints[d['id']]}")
        since = f"    opened at log seq {d['opened_seq']}"
        if d.get("resolved_seq") is not None:
            since += f", resolved at seq {d['resolved_seq']}"
        if d.get("acknowledged_seq") is not None:
            since += f", acknowledged at seq {d['acknowledged_seq']}: {d.get('note') or ''}"
        lines.append(since)
    noun = "discrepancy" if len(rows) == 1 else "discrepancies"
    lines.append(f"{len(rows)} {noun}" + ("" if status == "all" else f" {status}"))
    return "\n".join(lines)
