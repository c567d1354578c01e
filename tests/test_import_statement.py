"""``tracker import-statement``: reading Bitstamp statements (both formats), matching them to the ledger, the log
entries it appends, and the command on both backends.

The pure round trip is issue 15's "bitstamp round-trips through import-statement with no discrepancy". The store
tests run on the real ``v_ledger``: ``test_export.LEGS`` appended as the log entries Bitstamp's rows would be
(``ledger_helpers.log_of_legs``) and projected by the real fold; ``FOLDED`` is what the fold gives back.

Rules: local databases only; no network.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import log_of_legs
from sqlalchemy import select
from test_export import ACCOUNT, GOLDEN, LEGS, entries, leg, trade

from tracker.bitstamp.parse import parse_entry
from tracker.cli import main
from tracker.domain.events import StatementRow
from tracker.domain.log import LogRecord, NewEntry
from tracker.export import bitstamp_csv
from tracker.export.formats import render, table
from tracker.export.ledger import LedgerLeg, group_entries
from tracker.export.statement import Money, StatementError, legacy_time, parse_statement
from tracker.export.statement_match import DIFFERS, MISSING, match, plan
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import PROJECTION_TABLES, VIEWS
from tracker.store.projections import ProjectionStore
from tracker.store.schema import quarantine

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def _edited(text: str, edit: dict[str, dict[str, str]], extra: list[dict[str, str]] | None = None) -> str:
    """``text`` (a new-format statement) with cells of the rows with these IDs replaced, and rows added."""
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row.update(edit.get(row["ID"], {}))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([*rows, *(extra or [])])
    return out.getvalue()


# --- reading -------------------------------------------------------------------------------------------------------


def test_both_formats_are_told_apart_by_their_header() -> None:
    new = parse_statement(render(table("bitstamp", entries())))
    legacy = parse_statement(render(table("bitstamp-legacy", entries())))
    assert (new.fmt, legacy.fmt) == ("bitstamp", "bitstamp-legacy")
    assert len(new.rows) == len(legacy.rows) == len(table("bitstamp", entries()).rows)


def test_a_legacy_row_as_bitstamp_wrote_it() -> None:
    text = (
        "Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type\n"
        'Market,"Jan. 05, 2024, 03:04 PM",Main Account,0.50000000 BTC,30000.25 USD,60000.50 USD,75.50 USD,Buy\n'
        'Ripple deposit,"Sept. 05, 2023, 11:59 AM",Main Account,10.00 XRP,,,,\n'
    )
    buy, ripple = parse_statement(text).rows
    assert buy.occurred_at == datetime(2024, 1, 5, 15, 4, tzinfo=UTC)
    assert (buy.type, buy.subtype, buy.amount, buy.fee) == (
        "market", "buy", Money(Decimal("0.50000000"), "BTC"), Money(Decimal("75.50"), "USD"),
    )  # fmt: skip
    assert (ripple.type, ripple.occurred_at) == ("deposit", datetime(2023, 9, 5, 11, 59, tzinfo=UTC))
    assert legacy_time("Dec. 31, 2023, 12:05 AM") == datetime(2023, 12, 31, 0, 5, tzinfo=UTC)
    assert legacy_time("March 3, 2021, 1:02 PM") == datetime(2021, 3, 3, 13, 2, tzinfo=UTC)
    assert legacy_time("2024-01-05 15:04") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("Date,Amount\n1,2\n", "line 1: not a Bitstamp statement header"),
        ("ID,Account,Type,Subtype,Datetime,Amount,Amount currency,Value,Value currency,Rate,Rate currency,Fee,"
         "Fee currency,Order ID\n1,Main Account,Deposit,,2024-01-05T15:04:05Z,1.5,BTC,,,,,,,\n"
         "2,Main Account,Deposit,,2024-01-05T15:04:05Z,one,BTC,,,,,,,\n", "line 3: column Amount: not a decimal"),
        ("ID,Account,Type,Subtype,Datetime,Amount,Amount currency,Value,Value currency,Rate,Rate currency,Fee,"
         "Fee currency,Order ID\n1,Main Account,Deposit\n", "line 2: 3 cells, the header has 14"),
        ("ID,Account,Type,Subtype,Datetime,Amount,Amount currency,Value,Value currency,Rate,Rate currency,Fee,"
         "Fee currency,Order ID\n1,Main Account,Deposit,,yesterday,1,BTC,,,,,,,\n", "line 2: column Datetime"),
        ("Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type\nDeposit,\"Jan. 05, 2024, 03:04 PM\",Main Account,"
         "1.5,,,,\n", "line 2: column Amount: expected an amount and a currency"),
        ('Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type\n"Deposit,x\n', "not valid CSV"),
    ],
)  # fmt: skip
def test_a_malformed_statement_is_one_line_naming_the_line(text: str, expected: str) -> None:
    with pytest.raises(StatementError) as caught:
        parse_statement(text, name="mine.csv")
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith("mine.csv")


# --- matching ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "plain"), [("bitstamp", False), ("bitstamp", True), ("bitstamp-legacy", False),
                                            ("bitstamp-legacy", True)])  # fmt: skip
def test_an_export_round_trips_with_no_discrepancy(fmt: str, plain: bool) -> None:
    statement = parse_statement(render(table(fmt, entries(), plain=plain)))
    outcomes = match(statement, entries(), {})
    assert [o.status for o in outcomes] == ["matched"] * len(outcomes)
    result = plan(statement, entries(), account=ACCOUNT, names={}, known={}, received_at=NOW)
    assert result.discrepancies == [] and result.resolutions == []
    assert len({f.dedup_key for f in result.facts}) == len(statement.rows)


def test_rows_the_log_lacks_and_fields_that_differ_become_discrepancies() -> None:
    text = render(table("bitstamp", entries()))
    tampered = _edited(
        text,
        {"1002": {"Fee": "75.49"}, "1003": {"Type": "Deposit", "Order ID": "999"}},
        [{"ID": "9999", "Account": "Main Account", "Type": "Deposit", "Datetime": "2023-01-01T00:00:00Z",
          "Amount": "3", "Amount currency": "BTC"}],
    )  # fmt: skip
    outcomes = {o.row.id: o for o in match(parse_statement(tampered), entries(), {})}
    assert outcomes["1002"].status == "differs"
    assert [(d.field, d.statement, d.log) for d in outcomes["1002"].differences] == [("fee", "75.49 USD", "75.5 USD")]
    assert {d.field for d in outcomes["1003"].differences} == {"type", "order id"}
    assert outcomes["9999"].status == "missing" and outcomes["9999"].trade_account_id == "0"
    result = plan(parse_statement(tampered), entries(), account=ACCOUNT, names={}, known={}, received_at=NOW)
    opened = {e.dedup_key: e for e in result.discrepancies}
    assert set(opened) == {f"tracker:statement:{DIFFERS}:0:1002", f"tracker:statement:{DIFFERS}:1234:1003",
                           f"tracker:statement:{MISSING}:0:9999"}  # fmt: skip
    assert "75.49 USD" in opened[f"tracker:statement:{DIFFERS}:0:1002"].payload
    # Known ids are not opened again; a known one whose row matches now is resolved.
    known = {f"{DIFFERS}:0:1002": "open", f"{DIFFERS}:1234:1003": "open", f"{MISSING}:0:9999": "open"}
    again = plan(parse_statement(tampered), entries(), account=ACCOUNT, names={}, known=known, received_at=NOW)
    assert again.discrepancies == [] and again.resolutions == []
    fixed = plan(parse_statement(text), entries(), account=ACCOUNT, names={}, known=known, received_at=NOW)
    assert {e.payload.split('"id":"')[1].split('"')[0] for e in fixed.resolutions} == {
        f"{DIFFERS}:0:1002", f"{DIFFERS}:1234:1003",
    }  # fmt: skip


def test_legacy_rows_match_by_type_minute_and_amount_each_entry_once() -> None:
    deposits = [e for e in entries() if e.entry_id == "1001"]
    row = bitstamp_csv.legacy_cells(bitstamp_csv.statement_lines(deposits[0])[0], plain=True)
    text = "Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type\n" + "\n".join([",".join(
        f'"{c}"' for c in row)] * 2) + "\n"  # fmt: skip
    outcomes = match(parse_statement(text), deposits, {})
    assert [o.status for o in outcomes] == ["matched", "missing"]  # two identical rows, one entry
    result = plan(parse_statement(text), deposits, account=ACCOUNT, names={}, known={}, received_at=NOW)
    keys = [f.dedup_key for f in result.facts]
    assert len(set(keys)) == 2 and keys[0].endswith(":0") and keys[1].endswith(":1")


def test_account_names_map_to_trade_accounts() -> None:
    text = render(table("bitstamp", entries(), plain=True)).replace("Sub Account 1234", "Savings")
    with pytest.raises(StatementError, match="--account-name 'Savings=ID'"):
        match(parse_statement(text), entries(), {})
    outcomes = match(parse_statement(text), entries(), {"Savings": "1234"})
    assert all(o.status == "matched" for o in outcomes)


def test_the_statement_rows_are_facts_with_stable_keys() -> None:
    statement = parse_statement(render(table("bitstamp", entries())))
    first = plan(statement, entries(), account=ACCOUNT, names={}, known={}, received_at=NOW)
    second = plan(statement, entries(), account=ACCOUNT, names={}, known={}, received_at=NOW)
    assert [f.dedup_key for f in first.facts] == [f.dedup_key for f in second.facts]
    fact = next(f for f in first.facts if f.trade_id == "1003")
    assert (fact.source, fact.event, fact.channel) == ("tracker", "statement_row", "subaccount/1234/statement/bitstamp")
    assert fact.dedup_key.startswith(f"statement:{ACCOUNT}:1234:1003:sha256:")
    assert '"Fee":"15"' in fact.payload and '"Log seq":"12"' in fact.payload


def test_a_statement_row_is_a_known_event_that_builds_no_legs() -> None:
    statement = parse_statement(render(table("bitstamp-legacy", entries())))
    facts = plan(statement, entries(), account=ACCOUNT, names={}, known={}, received_at=NOW).facts
    events = [parse_entry(_record(seq, fact)) for seq, fact in enumerate(facts, start=1)]
    assert all(isinstance(e, StatementRow) and e.statement_format == "bitstamp-legacy" for e in events)
    rows = {(e.trade_account_id, e.row_id) for e in events if isinstance(e, StatementRow)}
    assert ("1234", "1003") in rows and ("0", "1002") in rows
    odd = _record(1, dataclasses.replace(facts[0], channel="statement/csv"))
    assert "unknown channel" in getattr(parse_entry(odd), "reason", "")  # anything else stays Unknown, counted


def _record(seq: int, fact: NewEntry) -> LogRecord:
    values = {name: getattr(fact, name) for name in LogRecord._fields if hasattr(fact, name)}
    return LogRecord(seq=seq, **values)


# --- the command, on both backends -------------------------------------------------------------------------------


def _folded() -> list[LedgerLeg]:
    """``LEGS`` as the real fold gives them back (``read_legs``' order: by seq, trade account, entry, leg, currency).

    What the hand-written legs say that no Bitstamp row can: the fee currency of an entry with two assets and no pair
    (1013) or with no amount at all (1020) is unknown to the fold (``NULL``). What they leave out: ``balance_after``,
    the running balance of the trade account and currency in log order (computed here, independently of the fold).
    """
    out: list[LedgerLeg] = []
    balances: dict[tuple[str, str], Decimal] = {}
    for part in sorted(LEGS, key=lambda g: (g.seq, g.trade_account_id, g.entry_id, g.leg, g.currency or "")):
        if part.leg == "fee" and part.entry_id in ("1013", "1020"):
            part = dataclasses.replace(part, currency=None)
        after = None
        if part.currency is not None:
            key = (part.trade_account_id, part.currency)
            after = balances[key] = balances.get(key, Decimal(0)) + part.amount
        out.append(dataclasses.replace(part, balance_after=after))
    return out


FOLDED = _folded()
UNKNOWN_FEE_CURRENCY = ("1013", "1020")  # the golden files name a fee currency for these; the real ledger cannot


def _prepared(url: str) -> None:
    """A migrated database whose log holds ``LEGS`` as Bitstamp's rows (the seqs of ``LEGS``: fillers before them),
    projected by the real fold: ``v_ledger`` holds ``FOLDED``."""
    migrate.upgrade(url)
    engine = open_engine(url)
    try:
        log = EventLog(engine)
        entries_ = log_of_legs(LEGS)
        assert log.append(entries_).appended == tuple(range(1, len(entries_) + 1))  # seq 1 first: LEGS' seqs hold
        ProjectionStore(engine).catch_up(log)
    finally:
        engine.dispose()


def _discrepancies(url: str) -> dict[str, str]:
    """The statement's discrepancies (the fold's own, e.g. ``negative_balance`` of this made-up ledger, left out)."""
    engine = open_engine(url)
    try:
        view = VIEWS["v_discrepancies"]
        query = select(view.c.id, view.c.status).where(view.c.kind.in_((MISSING, DIFFERS)))
        with engine.connect() as conn:
            return {row.id: row.status for row in conn.execute(query)}
    finally:
        engine.dispose()


def _head(url: str) -> int:
    engine = open_engine(url)
    try:
        return EventLog(engine).head()
    finally:
        engine.dispose()


def test_export_then_import_statement(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _prepared(db_url)
    out = tmp_path / "bitstamp.csv"
    assert main(["export", "--db-url", db_url, "--format", "bitstamp", "--out", str(out)]) == 0
    exported = out.read_text(encoding="utf-8")
    assert exported == render(table("bitstamp", group_entries(FOLDED)))
    golden = (GOLDEN / "bitstamp.csv").read_text(encoding="utf-8").splitlines()
    differing = [line.split(",")[0] for line, want in zip(exported.splitlines(), golden, strict=True) if line != want]
    assert differing == list(UNKNOWN_FEE_CURRENCY)  # the golden file but for the fees the ledger cannot place
    capsys.readouterr()
    rows = len(table("bitstamp", group_entries(FOLDED)).rows)

    assert main(["import-statement", str(out), "--db-url", db_url, "--user", ACCOUNT]) == 0
    summary = capsys.readouterr().out
    assert f"bitstamp format, {rows} row(s)" in summary
    assert f"log: {rows} statement row(s) appended (0 already" in summary
    head = _head(db_url)
    assert main(["import-statement", str(out), "--db-url", db_url]) == 0  # one account in the log: no --user needed
    assert (
        f"log: 0 statement row(s) appended ({rows} already" in capsys.readouterr().out and _head(db_url) == head
    )  # the same file: nothing new

    tampered = tmp_path / "tampered.csv"
    tampered.write_text(_edited(out.read_text(encoding="utf-8"), {"1002": {"Fee": "75.49"}}, [
        {"ID": "9999", "Account": "Main Account", "Type": "Deposit", "Datetime": "2023-01-01T00:00:00Z",
         "Amount": "3", "Amount currency": "BTC"}]), encoding="utf-8")  # fmt: skip
    assert main(["import-statement", str(tampered), "--db-url", db_url, "--user", ACCOUNT]) == 1
    text = capsys.readouterr().out
    assert "differs  line 3 (ID 1002): fee: statement 75.49 USD, log 75.5 USD" in text
    assert f"missing  line {rows + 2} (ID 9999)" in text
    found = _discrepancies(db_url)
    assert found == {f"{DIFFERS}:0:1002": "open", f"{MISSING}:0:9999": "open"}
    head = _head(db_url)
    assert main(["import-statement", str(tampered), "--db-url", db_url, "--user", ACCOUNT]) == 1
    assert _head(db_url) == head and "0 discrepancies opened" in capsys.readouterr().out  # not reopened

    assert main(["import-statement", str(out), "--db-url", db_url, "--user", ACCOUNT]) == 0
    assert "1 resolved" in capsys.readouterr().out
    assert _discrepancies(db_url) == {f"{DIFFERS}:0:1002": "resolved", f"{MISSING}:0:9999": "open"}


def test_an_imported_statement_is_neither_unknown_nor_quarantined(db_url: str, tmp_path: Path) -> None:
    _prepared(db_url)
    for fmt in ("bitstamp", "bitstamp-legacy"):
        out = tmp_path / f"{fmt}.csv"
        assert main(["export", "--db-url", db_url, "--format", fmt, "--out", str(out)]) == 0
        assert main(["import-statement", str(out), "--db-url", db_url]) == 0
    engine = open_engine(db_url)
    try:
        counters = PROJECTION_TABLES["counters"]
        with engine.connect() as conn:
            names = set(conn.execute(select(counters.c.name)).scalars())
            held = conn.execute(select(quarantine.c.id)).all()
            legs = conn.execute(select(VIEWS["v_ledger"].c.source).distinct()).scalars().all()
        assert _head(db_url) > len(log_of_legs(LEGS)) + len(FOLDED)  # both statements are in the log
    finally:
        engine.dispose()
    assert not {n for n in names if n.startswith("unknown")} and held == []
    assert legs == ["rest"]  # a statement adds no legs


def test_import_statement_errors_are_one_line(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    migrate.upgrade(db_url)  # an empty log: the statement's own errors come first, then "name the account"
    bad = tmp_path / "bad.csv"
    bad.write_text("Type,Datetime,Account,Amount,Value,Rate,Fee,Sub Type\nDeposit,never,Main Account,1 BTC,,,,\n")
    assert main(["import-statement", str(bad), "--db-url", db_url, "--user", ACCOUNT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.csv line 2: column Datetime" in err
    assert main(["import-statement", str(tmp_path / "absent.csv"), "--db-url", db_url]) == 2
    assert "cannot read it" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text((GOLDEN / "bitstamp.csv").read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["import-statement", str(good), "--db-url", db_url]) == 2  # the log holds no account yet
    assert "--user" in capsys.readouterr().err
    assert main(["import-statement", str(good), "--db-url", db_url, "--account-name", "nameonly"]) == 2
    assert "expected NAME=ID" in capsys.readouterr().err


# --- property: any ledger round-trips ------------------------------------------------------------------------------

TYPES = [("deposit", 0), ("withdrawal", 1), ("trade", 2), ("staking_reward", 27), ("settlement_transfer", 33),
         ("instant_trade", 36), ("unknown", 77)]  # fmt: skip
AMOUNTS = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**9), places=8)


@st.composite
def ledgers(draw: st.DrawFn) -> list[LedgerLeg]:
    legs: list[LedgerLeg] = []
    for seq in range(1, draw(st.integers(min_value=1, max_value=12)) + 1):
        type_, code = draw(st.sampled_from(TYPES))
        entry_id, tai = str(1000 + seq), draw(st.sampled_from(["0", "7"]))
        minute = draw(st.integers(min_value=0, max_value=3))  # collisions in one minute on purpose (legacy matching)
        if type_ in ("trade", "instant_trade"):
            buy = draw(st.booleans())
            base, quote = draw(AMOUNTS), draw(AMOUNTS)
            moves = [("btc", str(base if buy else -base)), ("usd", str(-quote if buy else quote))]
            fee = draw(st.one_of(st.none(), AMOUNTS.map(str)))
            paired = type_ == "trade"
            legs += trade(
                seq, entry_id, moves, ("usd", fee) if fee is not None else None, type_=type_, code=code, tai=tai,
                minutes=minute, subtype=("buy" if buy else "sell") if paired else None,
                market="btcusd" if paired else None, rate="60000" if paired else None, order_id=str(seq),
            )  # fmt: skip
        else:
            amount = -draw(AMOUNTS) if type_ == "withdrawal" else draw(AMOUNTS)
            if type_ == "settlement_transfer" and draw(st.booleans()):
                amount = -amount
            currency = draw(st.sampled_from(["btc", "eth"]))
            legs.append(leg(seq, entry_id, type_, code, currency, str(amount), tai=tai, minutes=minute))
    return legs


@settings(max_examples=60, deadline=None)
@given(legs=ledgers(), fmt=st.sampled_from(["bitstamp", "bitstamp-legacy"]), plain=st.booleans())
def test_any_ledger_round_trips_through_its_statement(legs: list[LedgerLeg], fmt: str, plain: bool) -> None:
    ledger = group_entries(legs)
    statement = parse_statement(render(table(fmt, ledger, plain=plain)))
    outcomes = match(statement, ledger, {"Sub Account 7": "7"})
    assert [(o.status, o.differences) for o in outcomes] == [("matched", ())] * len(outcomes)
