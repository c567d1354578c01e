"""``tracker audit`` without a browser: the ledger branch (the ledger views of migration 0006), an empty log, the
coverage fold, the period bounds, and pygal's import hook gone. The browser test (test_audit_browser.py) covers a
real run."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_helpers import balances_entry, ledger_entry

from tracker.audit.coverage import Interval, gaps, live_intervals
from tracker.audit.model import Period, TrackerEntry
from tracker.cli import main
from tracker.cli.audit import write_audit
from tracker.domain import tracker_events as te
from tracker.domain.log import NewEntry
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore

T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


def test_an_empty_log_says_so_and_the_ledger_is_empty(db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    data = write_audit(db, out)
    html = out.read_text(encoding="utf-8")
    assert data.integrity.ok and data.integrity.head_seq == 0
    assert "ok: the event log is empty" in html
    assert "no ledger views" not in html  # migration 0006 made them: present, and empty
    assert data.balances.series is not None and not data.balances.series.rows
    assert "No subscription in the log" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_ledger_views_are_shown_when_present(db: str, tmp_path: Path) -> None:
    def row(entry_id: int, at: str, type_code: int, usd: str) -> NewEntry:
        return ledger_entry({"id": entry_id, "datetime": at, "type": type_code, "usd": usd, "fee": "0"})

    def snapshot(at: datetime, total: str) -> NewEntry:
        return balances_entry([{"currency": "usd", "total": total}], received_at=at)

    engine = open_engine(db)
    try:
        log = EventLog(engine)
        log.append(
            [
                row(1, "2026-11-29 10:00:00", 0, "100.10"),
                row(2, "2026-11-29 18:00:00", 0, "0.20"),
                snapshot(datetime(2026, 11, 29, 18, 0, 1, tzinfo=UTC), "100.30"),
                row(3, "2026-11-30 09:00:00", 1, "-1.29999999"),
                snapshot(datetime(2026, 11, 30, 9, 0, 1, tzinfo=UTC), "99"),
            ]
        )
        ProjectionStore(engine).catch_up(log)
    finally:
        engine.dispose()
    out = tmp_path / "report.html"
    data = write_audit(db, out)
    assert data.balances.series is not None and data.balances.checks is not None
    # The series is the last balance_after of each UTC day (v_ledger), exact.
    assert [(str(r[2]), r[3]) for r in data.balances.series.rows] == [
        ("2026-11-29", Decimal("100.30")),
        ("2026-11-30", Decimal("99.00000001")),
    ]
    html = out.read_text(encoding="utf-8")
    assert '<span class="bad" data-figure="balance-differences">1</span>' in html
    assert "-0.00000001" in html and "99.00000001" in html
    assert html.count('class="pygal-chart"') == 1  # the balance chart (no activity, no coverage in this log)


def test_the_period_bounds_and_the_cli(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    code = main(["audit", "--db-url", db, "--since", "2026-11-01", "--until", "2026-11-30", "--out", str(out)])
    assert code == 0
    assert f"audit report written to {out.resolve()}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "2026-11-01 to 2026-12-01" in html  # --until is inclusive: the bound is the next midnight
    assert "&#x27;2026-11-01 00:00:00.000000&#x27;" in html  # the SQL shows the bound it ran with
    assert main(["audit", "--db-url", db, "--since", "2026-11-30", "--until", "2026-11-01"]) == 2


def _entry(at_seq: int, event: str, conn: str, at: datetime, **data: object) -> TrackerEntry:
    return TrackerEntry(at_seq, event, conn, at, data)


def test_live_intervals_follow_make_before_break_stalls_and_closes() -> None:
    s = timedelta(seconds=1)
    entries = [
        _entry(1, te.SUBSCRIBED, "a", T0, channels=["x", "y"]),
        _entry(2, te.RECONNECT_REQUESTED, "a", T0 + 10 * s),
        _entry(3, te.SUBSCRIBED, "b", T0 + 11 * s, channels=["x", "y"]),
        _entry(4, te.CLOSED, "a", T0 + 12 * s, reason="replaced"),
        _entry(5, te.STALLED, "b", T0 + 30 * s, silent_for_s=5),
        _entry(6, te.CLOSED, "b", T0 + 31 * s, reason="stalled"),
    ]
    lanes = live_intervals(entries, None, T0 + 60 * s)
    assert lanes["x"] == [Interval(T0, T0 + 10 * s), Interval(T0 + 11 * s, T0 + 25 * s)]
    assert lanes["x"] == lanes["y"]
    assert live_intervals(entries, T0 + 20 * s, T0 + 60 * s)["x"] == [Interval(T0 + 20 * s, T0 + 25 * s)]


def test_gaps_are_joined_with_the_backfill_naming_them() -> None:
    entries = [
        _entry(1, te.GAP_DETECTED, "", T0, gap_id="g1", reason="closed", start="s", end="e", channels=["x"]),
        _entry(2, te.GAP_DETECTED, "", T0, gap_id="g2", reason="chain_break", event_id="E", pre_event_id="P", seq=9),
        _entry(3, te.BACKFILL_COMPLETED, "", T0 + timedelta(seconds=2), gap_ids=["g1"], found={"user_transactions": 3}),
    ]
    g1, g2 = gaps(entries)
    assert (g1.cause, g1.filled_seq, g1.filled_after, g1.found) == (
        "reconnect (connection closed)", 3, timedelta(seconds=2), {"user_transactions": 3}
    )  # fmt: skip
    assert (g2.cause, g2.filled_seq) == ("chain break", None) and "seq 9" in g2.detail


def test_pygal_import_hook_is_removed() -> None:
    import pygal

    import tracker.audit.charts  # noqa: F401

    assert not any(isinstance(finder, pygal.PluginImportFixer) for finder in sys.meta_path)


def test_period_is_whole_days() -> None:
    assert Period(date(2026, 11, 1), date(2026, 12, 1)).until == date(2026, 12, 1)


def test_account_is_the_trade_account(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--account`` narrows the views' sections to one trade account (as report and export do); ``--user`` is the
    Bitstamp account; a user id given as ``--account`` is refused with a line saying so."""
    engine = open_engine(db)
    try:
        log = EventLog(engine)
        log.append(
            [
                ledger_entry({"id": 1, "datetime": "2026-11-29 10:00:00", "type": 0, "usd": "5", "fee": "0"}),
                ledger_entry(
                    {"id": 2, "datetime": "2026-11-29 10:00:01", "type": 0, "eur": "7", "fee": "0"}, tai="1001"
                ),
            ]
        )
        ProjectionStore(engine).catch_up(log)
    finally:
        engine.dispose()
    out = tmp_path / "sub.html"
    assert main(["audit", "--db-url", db, "--account", "1001", "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert 'data-figure="current-balance-1001-eur"' in html and "current-balance-0-usd" not in html
    assert "trade account 1001" in html
    assert main(["audit", "--db-url", db, "--account", "acc-1", "--out", str(out)]) == 2
    assert "the Bitstamp account is --user" in capsys.readouterr().err
