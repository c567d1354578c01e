"""``tracker report``: pure formatting (exact decimals in every format), time arguments, filters, and the command on
both backends giving the same output.

Rules: local databases only; no network.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from test_projection_store import fake_entries

from tracker.cli import main
from tracker.cli.report import format_csv, format_json, format_table, format_value, parse_moment, parse_until
from tracker.domain.events import Fill
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore
from tracker.store.reports import ReportFilter, read_report

COLUMNS = ("day", "market", "fills", "fees", "at", "flag", "note")
ROWS = [
    ("2026-11-29", "btcusd", 3, Decimal("1E-8"), datetime(2026, 11, 29, 13, 49, 1, 123456, tzinfo=UTC), True, None),
    ("2026-11-30", "ethusd-perp", 12, Decimal("300.00000000"), datetime(2026, 11, 30, tzinfo=UTC), False, "x,y"),
]


def test_format_value_is_exact() -> None:
    assert format_value(Decimal("1E-8")) == "0.00000001"
    assert format_value(Decimal("300.00000000")) == "300"
    assert format_value(Decimal("12345678901234567890.123456789012345678")) == "12345678901234567890.123456789012345678"
    assert format_value(datetime(2026, 11, 29, 13, 49, 1, 123456, tzinfo=UTC)) == "2026-11-29T13:49:01.123456Z"
    assert format_value(None) is None
    assert format_value(True) == "true"


def test_format_table_aligns_for_people() -> None:
    lines = format_table(COLUMNS, ROWS).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[:4] == ["2026-11-29", "btcusd", "3", "0.00000001"]
    assert lines[-1] == "(2 rows)"
    # numbers right-aligned: the fees column ends at the same position on every line
    ends = {line.index(value) + len(value) for line, value in zip(lines[2:4], ("0.00000001", "300"), strict=True)}
    assert len(ends) == 1


def test_format_csv_for_machines() -> None:
    parsed = list(csv.reader(io.StringIO(format_csv(COLUMNS, ROWS))))
    assert parsed[0] == list(COLUMNS)
    assert parsed[1] == ["2026-11-29", "btcusd", "3", "0.00000001", "2026-11-29T13:49:01.123456Z", "true", ""]
    assert parsed[2][3] == "300"
    assert parsed[2][6] == "x,y"


def test_format_json_keeps_decimals_as_strings() -> None:
    items = json.loads(format_json(COLUMNS, ROWS))
    assert items[0] == {
        "day": "2026-11-29", "market": "btcusd", "fills": 3, "fees": "0.00000001",
        "at": "2026-11-29T13:49:01.123456Z", "flag": True, "note": None,
    }  # fmt: skip
    assert Decimal(items[1]["fees"]) == Decimal(300)


def test_time_arguments() -> None:
    assert parse_moment("2026-11-29") == datetime(2026, 11, 29, tzinfo=UTC)
    assert parse_moment("2026-11-29T13:00") == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert parse_moment("2026-11-29T15:00+02:00") == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert parse_moment("2026-11-29T13:00:00Z") == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert parse_until("2026-11-29") == datetime(2026, 11, 30, tzinfo=UTC)  # a bare date includes that day
    assert parse_until("2026-11-29T13:00") == datetime(2026, 11, 29, 13, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_moment("yesterday")


def _fill(seq: int, day: int, market: str, fee: str, position_id: str | None = None) -> Fill:
    return Fill(
        seq=seq, account="acc" if seq % 5 else "other", source="ws", trade_id=f"t{seq}", order_id=f"o{seq}",
        market=market, side="buy", amount=Decimal("0.1"), price=Decimal(100), fee=Decimal(fee),
        executed_at=datetime(2026, 11, day, 12, tzinfo=UTC), position_id=position_id, is_liquidation=False,
    )  # fmt: skip


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    migrate.upgrade(engine)
    events = [_fill(seq, 20 + seq % 5, ("btcusd", "ethusd-perp")[seq % 2], "0.0000001", f"p{seq % 3}") for seq in
              range(1, 41)]  # fmt: skip
    ProjectionStore(engine).project_events(events)
    try:
        yield engine
    finally:
        engine.dispose()


def test_filters(engine: Engine) -> None:
    everything = read_report(engine, "fees", ReportFilter())
    assert sum(row[everything.columns.index("fills")] for row in everything.rows) == 40
    only = read_report(engine, "fees", ReportFilter(account="acc", market="btcusd"))
    assert {(row[0], row[2]) for row in only.rows} == {("acc", "btcusd")}
    days = read_report(engine, "fees", ReportFilter(since=parse_moment("2026-11-21"), until=parse_until("2026-11-22")))
    assert {row[1] for row in days.rows} == {"2026-11-21", "2026-11-22"}
    fills = read_report(engine, "fills", ReportFilter(since=parse_moment("2026-11-21T12:00"), until=parse_moment(
        "2026-11-22T12:00")))  # fmt: skip
    assert {row[fills.columns.index("executed_at")] for row in fills.rows} == {datetime(2026, 11, 21, 12, tzinfo=UTC)}
    positions = read_report(engine, "positions", ReportFilter(since=parse_moment("2026-11-24")))
    assert {row[1] for row in positions.rows} == {"p0", "p1", "p2"}
    assert read_report(engine, "positions", ReportFilter(since=parse_moment("2027-01-01"))).rows == []
    fees = sum(Decimal(row[everything.columns.index("fees")]) for row in everything.rows)
    assert fees == Decimal("0.000004")


def test_report_command_same_on_both_backends(sqlite_url: str, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for url in (sqlite_url, pg_url):
        engine = open_engine(url)
        migrate.upgrade(engine)
        log = EventLog(engine)
        log.append(fake_entries(31, 300))
        ProjectionStore(engine).catch_up(log)
        engine.dispose()
        for kind in ("fees", "fills", "orders", "positions"):
            for fmt in ("table", "csv", "json"):
                assert main(["report", kind, "--db-url", url, "--format", fmt, "--market", "btcusd-perp"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "E-" not in outputs[0]


# -- issue 14.10: markets case-insensitive, an unknown market is an error, the table at the market's decimals -------


def _position_fill(seq: int, price: str, market: str = "btcusd-perp") -> Fill:
    return Fill(
        seq=seq, account="acc", source="ws", trade_id=f"t{seq}", order_id=f"o{seq}", market=market, side="buy",
        amount=Decimal("0.1"), price=Decimal(price), fee=Decimal("0.0123"),
        executed_at=datetime(2026, 11, 20, 12, seq, tzinfo=UTC), position_id="p1", is_liquidation=False,
    )  # fmt: skip


@pytest.fixture
def positions_url(sqlite_url: str) -> str:
    """One perpetual position bought at 100, 101 and 103: its volume-weighted entry price is 101.333…"""
    engine = open_engine(sqlite_url)
    migrate.upgrade(engine)
    ProjectionStore(engine).project_events(
        [_position_fill(1, "100"), _position_fill(2, "101"), _position_fill(3, "103")]
    )
    engine.dispose()
    return sqlite_url


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_market_names_are_case_insensitive(positions_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lower, _ = report(capsys, "fills", "--db-url", positions_url, "--market", "btcusd-perp")
    assert code == 0 and lower.endswith("(3 rows)\n")
    for spelling in ("BTCUSD-PERP", "BTC/USD-PERP", " btcusd-perp "):
        assert report(capsys, "fills", "--db-url", positions_url, "--market", spelling)[1] == lower


def test_an_unknown_market_is_an_error_listing_the_known_ones(
    positions_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = report(capsys, "fills", "--db-url", positions_url, "--market", "BTCUSD")
    assert code == 2
    assert out == ""
    assert err == "tracker: error: --market BTCUSD: this database has no market 'btcusd' (known: btcusd-perp)\n"


def test_an_empty_window_is_an_error_as_for_audit(positions_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # report and export printed an empty table or file for --until before --since; audit already refused it.
    for command in (["report", "fills"], ["export", "--format", "koinly"]):
        argv = [*command, "--db-url", positions_url, "--since", "2026-12-08", "--until", "2026-12-01"]
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("tracker: error: --until is not after --since: the window is empty")
    # A bare --until date includes that day: the same day for both is a one-day window.
    assert main(["report", "fills", "--db-url", positions_url, "--since", "2026-11-29", "--until", "2026-11-29"]) == 0


def test_the_table_shows_the_markets_decimals_and_the_machines_the_exact_value(
    positions_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, table, _ = report(capsys, "positions", "--db-url", positions_url)
    assert code == 0
    header, _rule, row = table.splitlines()[:3]
    shown = dict(zip(header.split(), row.split(), strict=False))
    assert shown["entry_price"] == "101.33"  # counter decimals of btcusd-perp; was 101.3333333333333333333333333
    assert shown["size"] == "0.30000000"  # base decimals
    assert shown["fees"] == "0.04"  # 0.0369 in USD, at the quote currency's 2 places
    code, text, _ = report(capsys, "positions", "--db-url", positions_url, "--format", "json")
    exact = json.loads(text)[0]
    assert exact["entry_price"].startswith("101.3333333333")  # the database's value, unrounded
    assert exact["fees"] == "0.0369"
    assert "E" not in exact["entry_price"]


def test_display_decimals() -> None:
    from tracker.cli.report import display_decimal, display_rows

    assert display_decimal(Decimal("1E-8"), None) == "0.00000001"
    assert display_decimal(Decimal("1E+3"), None) == "1000"
    assert display_decimal(Decimal("-0.001"), 2) == "0.00"  # never "-0.00"
    assert display_decimal(Decimal("2.675"), 2) == "2.68"
    assert display_decimal(Decimal("0.3"), 8) == "0.30000000"
    rows = display_rows(("market", "price", "amount", "fills"), [("unknownpair", Decimal("1.50"), Decimal("2E-9"), 3)])
    assert rows == [("unknownpair", "1.5", "0.000000002", 3)]
