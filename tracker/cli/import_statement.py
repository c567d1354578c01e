"""``tracker import-statement FILE``: your own Bitstamp CSV statement (either format) as a third witness.

Every row is appended to the log as a tracker-made fact (``statement_row``; importing the same file twice appends
nothing) and matched to the ledger: new-format rows by Bitstamp's ID, legacy rows by type, minute and amount. A row
the ledger lacks opens ``statement_row_missing``, a row whose fields differ ``statement_row_differs`` (tracker-made
discrepancies with stable ids, listed by ``tracker discrepancies``); a row that matches now resolves its earlier one.
docs/export.md has the details.

The statement names trade accounts by name (``Main Account``; sub-accounts by the names you gave them): map each
other name with ``--account-name NAME=ID``. ``--user`` names the Bitstamp account when the log holds several.

Exit codes: 0 every row matched; 1 some row is missing from the log or differs (see the summary); 2 the file cannot
be read (one line naming the line and column) or the database cannot.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker.bitstamp.ledger_channels import is_trade_account_id
from tracker.cli import add_common_flags, open_database
from tracker.config import load_settings
from tracker.errors import TrackerError

if TYPE_CHECKING:
    from tracker.export.statement_match import ImportPlan

DETAIL_LINES = 10  # differing or missing rows shown in the summary (one screen); tracker discrepancies has all


def account_name(text: str) -> tuple[str, str]:
    name, sep, tai = text.rpartition("=")
    if not sep or not name.strip() or not is_trade_account_id(tai.strip()):
        raise argparse.ArgumentTypeError(
            f"expected NAME=ID (ID 0 for the main account, else the sub-account's id): {text!r}"
        )
    return name.strip(), tai.strip()


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import-statement", help="match your Bitstamp CSV statement against the log; differences become discrepancies"
    )
    add_common_flags(parser)
    parser.add_argument("file", type=Path, help="the CSV statement downloaded from Bitstamp (new or legacy format)")
    parser.add_argument(
        "--account-name",
        type=account_name,
        action="append",
        default=[],
        metavar="NAME=ID",
        help="the trade account a statement account name means (repeatable; 'Main Account' is 0)",
    )
    parser.add_argument(
        "--user", help="the Bitstamp account (user id) the statement belongs to, if the log holds several"
    )
    parser.set_defaults(func=cmd_import_statement)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TrackerError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise TrackerError(f"{path}: not UTF-8 text (byte {exc.start}): save the statement as CSV UTF-8") from None


def _user(given: str | None, accounts: Sequence[str]) -> str:
    if given is not None:
        return given
    if len(accounts) == 1:
        return accounts[0]
    if not accounts:
        raise TrackerError("the log holds no account yet: run `tracker run` first, or name it with --user USER_ID")
    raise TrackerError(f"the log holds several accounts ({', '.join(accounts)}): name one with --user")


def cmd_import_statement(args: argparse.Namespace) -> int:
    from tracker.domain.timeutil import utc_now
    from tracker.export.ledger import group_entries
    from tracker.export.statement import parse_statement
    from tracker.export.statement_match import plan
    from tracker.store.event_log import EventLog
    from tracker.store.ledger_queries import (
        LedgerFilter,
        append_import,
        log_accounts,
        read_legs,
        statement_discrepancies,
    )
    from tracker.store.migrate import check_schema
    from tracker.store.projections import ProjectionStore

    statement = parse_statement(_read(args.file), name=str(args.file))
    names = dict(args.account_name)
    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_database(settings, write=True)
    try:
        check_schema(engine)
        user = _user(args.user, log_accounts(engine))
        ProjectionStore(engine).catch_up(EventLog(engine))  # the discrepancies below are the log's current ones
        entries = group_entries(read_legs(engine, LedgerFilter(account=user), include_statement=False))
        known = statement_discrepancies(engine, user)
        result_plan = plan(
            statement, entries, account=user, names=names, known=known, received_at=utc_now(), source=str(args.file)
        )
        appended = append_import(engine, result_plan)
    finally:
        engine.dispose()
    sys.stdout.write(format_summary(str(args.file), statement.fmt, result_plan, appended.duplicates))
    problems = [o for o in result_plan.outcomes if o.status != "matched"]
    return 1 if problems else 0


def format_summary(source: str, fmt: str, result: ImportPlan, duplicates: int) -> str:
    """One screen: per trade account matched / missing / differing, what was appended, the first problems."""
    outcomes = result.outcomes
    lines = [f"statement {source}: {fmt} format, {len(outcomes)} row(s)"]
    lines.append(f"{'trade account':<14}{'matched':>9}{'missing':>9}{'differs':>9}")
    for tai, counts in sorted(result.counts().items(), key=lambda item: (len(item[0]), item[0])):
        lines.append(f"{tai:<14}{counts['matched']:>9}{counts['missing']:>9}{counts['differs']:>9}")
    rows = len(result.facts) - duplicates
    opened, resolved = len(result.discrepancies), len(result.resolutions)
    lines.append(
        f"log: {rows} statement row(s) appended ({duplicates} already there), {opened}"
        f" discrepanc{'y' if opened == 1 else 'ies'} opened, {resolved} resolved"
    )
    problems = [o for o in outcomes if o.status != "matched"]
    for outcome in problems[:DETAIL_LINES]:
        row = outcome.row
        where = f"line {row.line}" + (f" (ID {row.id})" if row.id else "")
        if outcome.status == "missing":
            lines.append(
                f"  missing  {where}: {row.cells.get('Type', '')} {row.cells.get('Amount', '')} not in the log"
            )
        else:
            changes = "; ".join(f"{d.field}: statement {d.statement or '(empty)'}, log {d.log or '(empty)'}"
                                for d in outcome.differences)  # fmt: skip
            lines.append(f"  differs  {where}: {changes}")
    if len(problems) > DETAIL_LINES:
        lines.append(f"  ... and {len(problems) - DETAIL_LINES} more")
    kinds = sorted({f"statement_row_{o.status}" for o in problems})
    if kinds:
        lines.append("all of them: " + "; ".join(f"tracker discrepancies --kind {kind}" for kind in kinds))
    return "\n".join(lines) + "\n"
