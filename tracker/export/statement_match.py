"""A Bitstamp statement as a third witness: each row matched to the ledger, and the log entries that record it.

Matching (docs/export.md, "import-statement"):

- new format: by Bitstamp's ``ID`` within the row's trade account;
- legacy format (no id): by type, the minute, and the amount with its currency, each ledger entry claimed once in log
  order (two identical buys in one minute match two entries); a legacy file written by ``tracker export`` carries an
  ``ID`` column and is matched by it.

A matched row is compared field by field with the row tracker itself would write for that entry
(``bitstamp_csv.statement_lines``): type, subtype, amount, value, rate, fee (unsigned, with currencies), order id and
time (to the second; the legacy format to the minute). A row the ledger lacks is ``statement_row_missing``; a row
whose fields differ is ``statement_row_differs``. Both are tracker-made ``discrepancy`` log events with stable ids
(``statement_row_missing:<tai>:<row key>``): a re-import of the same file opens nothing new, and a row that matches
now resolves its earlier discrepancy.

Every row is also appended as a fact of its own (event ``statement_row``, source ``tracker``, channel
``statement/bitstamp`` or ``statement/bitstamp-legacy``, ``subaccount/<id>/`` before it for a sub-account like every
ledger channel), payload the row as canonical JSON of header → cell. Dedup key ``statement:<account>:<tai>:<ID>:
sha256:<payload hash>`` (new format) or ``statement:<account>:<tai>:sha256:<payload hash>:<n>`` (legacy; ``n`` counts
identical rows in the file), so importing the same file twice appends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

from tracker.bitstamp.ledger_channels import is_trade_account_id, ledger_channel
from tracker.bitstamp.wire import dumps_canonical, sha256_text
from tracker.domain import tracker_events as te
from tracker.domain.log import NewEntry
from tracker.domain.money import format_decimal
from tracker.export import bitstamp_csv
from tracker.export.ledger import MAIN_ACCOUNT, LedgerEntry
from tracker.export.statement import Money, Statement, StatementError, StatementRow, row_of

STATEMENT_ROW: Final = te.STATEMENT_ROW
MISSING: Final = "statement_row_missing"
DIFFERS: Final = "statement_row_differs"

Status = Literal["matched", "missing", "differs"]


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    statement: str
    log: str


@dataclass(frozen=True, slots=True)
class Outcome:
    row: StatementRow
    trade_account_id: str
    key: str  # the row's id in discrepancy ids: Bitstamp's ID, or sha256 prefix and occurrence (legacy)
    status: Status
    entry: LedgerEntry | None
    differences: tuple[Difference, ...] = ()

    @property
    def discrepancy_id(self) -> str | None:
        if self.status == "matched":
            return None
        return f"{MISSING if self.status == 'missing' else DIFFERS}:{self.trade_account_id}:{self.key}"


@dataclass(frozen=True, slots=True)
class ImportPlan:
    outcomes: list[Outcome]
    facts: list[NewEntry]  # the statement rows, to append
    discrepancies: list[NewEntry] = field(default_factory=list)  # new discrepancy events
    resolutions: list[NewEntry] = field(default_factory=list)  # earlier ones this import resolves

    def counts(self) -> dict[str, dict[Status, int]]:
        """Per trade account: how many rows matched, are missing from the log, differ."""
        out: dict[str, dict[Status, int]] = {}
        for outcome in self.outcomes:
            row = out.setdefault(outcome.trade_account_id, {"matched": 0, "missing": 0, "differs": 0})
            row[outcome.status] += 1
        return out


def trade_account_of(row: StatementRow, names: Mapping[str, str], *, name: str = "statement") -> str:
    """The trade account a row's ``Account`` names: ``--account-name`` first, then ``Main Account`` (``0``) and
    ``Sub Account <id>`` (how tracker's export writes them)."""
    account = row.account
    if account in names:
        return names[account]
    if account.lower() == "main account":
        return MAIN_ACCOUNT
    if account.lower().startswith("sub account "):
        candidate = account[len("sub account ") :].strip()
        if is_trade_account_id(candidate):
            return candidate
    raise StatementError(
        f"{name} line {row.line}: account {account!r} is not known: pass --account-name '{account}=ID'"
        " (ID: 0 for the main account, else the sub-account's id)"
    )


def _expected(entry: LedgerEntry, fmt: bitstamp_csv.StatementLine, legacy: bool) -> StatementRow:
    cells_list = bitstamp_csv.legacy_cells(fmt, plain=True) if legacy else bitstamp_csv.new_cells(fmt, plain=True)
    header = bitstamp_csv.LEGACY_HEADER if legacy else bitstamp_csv.HEADER
    return row_of(dict(zip(header, cells_list, strict=True)), "bitstamp-legacy" if legacy else "bitstamp", line=0)


def _money_text(value: Money | None) -> str:
    if value is None:
        return ""
    return f"{format_decimal(abs(value.amount))} {value.currency}".strip()


def _same_money(a: Money | None, b: Money | None) -> bool:
    if a is None or b is None:
        return (a is None or a.amount.is_zero()) and (b is None or b.amount.is_zero())
    return abs(a.amount) == abs(b.amount) and (a.currency == b.currency or not a.currency or not b.currency)


def _truncate(moment: datetime, *, minute: bool) -> datetime:
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return moment.replace(second=0) if minute else moment


def compare(row: StatementRow, expected: StatementRow) -> tuple[Difference, ...]:
    """The fields in which a statement row and the row tracker would write differ (empty: they agree)."""
    found: list[Difference] = []
    if row.type != expected.type:
        found.append(Difference("type", row.cells.get("Type", row.type), expected.cells.get("Type", expected.type)))
    if row.subtype != expected.subtype:
        found.append(Difference("subtype", row.subtype, expected.subtype))
    for name in ("amount", "value", "rate", "fee"):
        mine, theirs = getattr(row, name), getattr(expected, name)
        if not _same_money(mine, theirs):
            found.append(Difference(name, _money_text(mine), _money_text(theirs)))
    if row.fmt == "bitstamp" and (row.order_id or None) != (expected.order_id or None):
        found.append(Difference("order id", row.order_id or "", expected.order_id or ""))
    minute = row.minute_only
    if _truncate(row.occurred_at, minute=minute) != _truncate(expected.occurred_at, minute=minute):
        found.append(Difference("datetime", row.occurred_at.isoformat(), expected.occurred_at.isoformat()))
    return tuple(found)


def _legacy_key(row: StatementRow) -> tuple[str, datetime, str, Decimal | None]:
    amount = row.amount
    return (row.type, _truncate(row.occurred_at, minute=True), amount.currency if amount else "",
            abs(amount.amount) if amount else None)  # fmt: skip


def match(
    statement: Statement, entries: Sequence[LedgerEntry], names: Mapping[str, str], *, name: str = "statement"
) -> list[Outcome]:
    """Each row of ``statement`` matched to ``entries`` (the ledger's, statement-sourced ones left out)."""
    legacy = statement.fmt == "bitstamp-legacy"
    by_id: dict[tuple[str, str], list[tuple[LedgerEntry, StatementRow]]] = {}
    by_legacy: dict[tuple[str, tuple[str, datetime, str, Decimal | None]], list[tuple[LedgerEntry, StatementRow]]] = {}
    for entry in entries:
        for line in bitstamp_csv.statement_lines(entry):
            expected = _expected(entry, line, legacy)
            by_id.setdefault((entry.trade_account_id, entry.entry_id), []).append((entry, expected))
            by_legacy.setdefault((entry.trade_account_id, _legacy_key(expected)), []).append((entry, expected))
    claimed: set[tuple[str, str, int]] = set()
    seen: dict[str, int] = {}
    outcomes = []
    for row in statement.rows:
        tai = trade_account_of(row, names, name=name)
        digest = sha256_text(dumps_canonical(row.cells))
        seen[digest] = seen.get(digest, -1) + 1
        key = row.id if row.id is not None else f"{digest[:16]}-{seen[digest]}"
        candidates: list[tuple[LedgerEntry, StatementRow]]
        if row.id is not None:
            candidates = by_id.get((tai, row.id), [])
            currency = row.amount.currency if row.amount else ""
            candidates = sorted(candidates, key=lambda c: (c[1].amount.currency if c[1].amount else "") != currency)
        else:
            pool = by_legacy.get((tai, _legacy_key(row)), [])
            candidates = [c for c in pool if (tai, c[0].entry_id, id(c[1])) not in claimed]
        if not candidates:
            outcomes.append(Outcome(row, tai, key, "missing", None))
            continue
        # The first candidate that agrees in every field, else the first (two identical legacy rows in one minute
        # with different fees each find their own entry).
        entry, expected = next(((e, x) for e, x in candidates if not compare(row, x)), candidates[0])
        claimed.add((tai, entry.entry_id, id(expected)))
        differences = compare(row, expected)
        outcomes.append(Outcome(row, tai, key, "differs" if differences else "matched", entry, differences))
    return outcomes


def fact(row: StatementRow, tai: str, *, account: str, occurrence: int, received_at: datetime) -> NewEntry:
    """The log entry of one statement row (see the module docstring for its channel and dedup key)."""
    payload = dumps_canonical(row.cells)
    digest = sha256_text(payload)
    if row.fmt == "bitstamp" and row.id is not None:
        dedup = f"statement:{account}:{tai}:{row.id}:sha256:{digest}"
    else:
        dedup = f"statement:{account}:{tai}:sha256:{digest}:{occurrence}"
    return NewEntry(
        account=account,
        source="tracker",
        channel=ledger_channel(f"statement/{row.fmt}", tai),
        event=STATEMENT_ROW,
        payload=payload,
        dedup_key=dedup,
        received_at=received_at,
        trade_id=row.id,
        order_id=row.order_id,
        exchange_ts_us=int(row.occurred_at.timestamp()) * 1_000_000,
    )


def _describe(outcome: Outcome, source: str) -> str:
    row = outcome.row
    what = f"{row.cells.get('Type', row.type)} {_money_text(row.amount)} at {row.occurred_at.isoformat()}"
    where = f"{source} line {row.line}" + (f" (ID {row.id})" if row.id else "")
    if outcome.status == "missing":
        return f"{where}: {what} is not in the log's ledger of trade account {outcome.trade_account_id}"
    entry = outcome.entry
    changes = "; ".join(f"{d.field}: statement {d.statement or '(empty)'}, log {d.log or '(empty)'}"
                        for d in outcome.differences)  # fmt: skip
    seq = f" (log seq {entry.seq})" if entry is not None else ""
    return f"{where}: {what} differs from ledger entry {entry.entry_id if entry else '?'}{seq}: {changes}"


def plan(
    statement: Statement,
    entries: Sequence[LedgerEntry],
    *,
    account: str,
    names: Mapping[str, str],
    known: Mapping[str, str],
    received_at: datetime,
    source: str = "statement",
) -> ImportPlan:
    """What ``tracker import-statement`` appends for ``statement``: its rows as facts, a discrepancy for every row
    missing or differing whose id is not ``known`` yet (``known``: discrepancy id → status in v_discrepancies), and a
    resolution for every ``known`` open one whose row now matches."""
    outcomes = match(statement, entries, names, name=source)
    facts = []
    occurrences: dict[str, int] = {}
    for outcome in outcomes:
        digest = sha256_text(dumps_canonical(outcome.row.cells))
        occurrences[digest] = occurrences.get(digest, -1) + 1
        facts.append(fact(outcome.row, outcome.trade_account_id, account=account, occurrence=occurrences[digest],
                          received_at=received_at))  # fmt: skip
    discrepancies = []
    resolutions = []
    channel = f"statement/{statement.fmt}"
    for outcome in outcomes:
        discrepancy_id = outcome.discrepancy_id
        if discrepancy_id is not None and discrepancy_id not in known:
            entity = f"statement:{outcome.trade_account_id}:{outcome.key}"
            data: dict[str, object] = {"id": discrepancy_id, "kind": discrepancy_id.split(":", 1)[0], "entity": entity,
                                       "detail": _describe(outcome, source)}  # fmt: skip
            discrepancies.append(te.tracker_entry(account=account, event=te.DISCREPANCY, data=data,
                                                  received_at=received_at, uid=f"statement:{discrepancy_id}",
                                                  channel=channel))  # fmt: skip
        if outcome.status == "matched":
            for kind in (MISSING, DIFFERS):
                earlier = f"{kind}:{outcome.trade_account_id}:{outcome.key}"
                if known.get(earlier) in ("open", "acknowledged"):
                    detail = f"{source} line {outcome.row.line} now matches ledger entry {outcome.entry.entry_id}" \
                        if outcome.entry else "matches now"  # fmt: skip
                    resolutions.append(te.tracker_entry(
                        account=account, event=te.DISCREPANCY_RESOLVED, data={"id": earlier, "detail": detail},
                        received_at=received_at, uid=f"statement-resolved:{earlier}:{received_at.isoformat()}",
                        channel=channel,
                    ))  # fmt: skip
    return ImportPlan(outcomes, facts, discrepancies, resolutions)
