"""``tracker demo`` driven for real (``tracker.cli.main`` in-process): the fake exchange on loopback port 0, the tracker
against it, the report from the views. Two short runs on one file: the second continues the first.

Rules: loopback only (the fake binds 127.0.0.1 on port 0), an absolute timeout; the run's length is the demo's own
``--duration`` (that is the feature under test), nothing waits on a sleep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracker.cli import main
from tracker.cli.report import display_rows, format_table
from tracker.fake.server import DEMO_API_SECRET
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.reports import ReportFilter, read_report

pytestmark = pytest.mark.timeout(90)

SUMMARY = re.compile(
    r"demo done: [\d.]+ s against the fake exchange \(seed \d+, account 314159\)\n"
    r"  this run: [\d,]+ events logged \(seq (\d+)\.\.(\d+)\), [\d,]+ fills, \d+ reconnects, \d+ of \d+ gaps filled"
    r" by backfill\n"
    r"  verify: ok, ([\d,]+) events intact \(hash chain from seq 1\)\n"
    r"  discrepancies: (?:none unresolved|[\d,]+ unresolved"
    r" \((?:[\d,]+ of them likely self trades whose frames were missed; )?"
    r"`tracker discrepancies --db-url sqlite:///.+` lists them\))\n"
    r"  database: (.+) \(run `tracker demo` again to continue it\)\n\Z"
)


def run_demo(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> tuple[str, str]:
    code = main(["demo", "--duration", "3", "--db", str(db), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def fee_report(db: Path) -> str:
    engine = open_engine(f"sqlite:///{db}", write=False)
    try:
        report = read_report(engine, "fees", ReportFilter())
        return format_table(report.columns, display_rows(report.columns, report.rows))
    finally:
        engine.dispose()


def test_demo_twice_continues_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "tracker-demo.db"

    out1, err1 = run_demo(capsys, db)
    first = SUMMARY.search(out1)
    assert first is not None, out1
    start1, head1 = int(first[1]), int(first[2])
    assert start1 == 1 and head1 > 1
    assert first[4] == str(db)
    filled = re.search(r"(\d+) reconnects, (\d+) of (\d+) gaps filled by backfill", out1)
    assert filled is not None
    reconnects, gaps_filled, gaps = map(int, filled.groups())
    assert reconnects >= 1  # the requested reconnect and the drop
    assert gaps >= 1 and gaps_filled == gaps  # every gap (start-up, reconnect, drop, pause) filled from REST
    assert "fault: the exchange asks for a reconnect" in err1
    assert "events," in err1 and "fills," in err1 and "gaps filled" in err1  # the progress line
    # The fee report printed is the view's content, exactly.
    assert "\nFees per day and market (v_fees_daily):\n" + fee_report(db) in out1
    assert "Open orders (v_orders where status = 'open';" in out1
    assert f'sqlite3 {db} "select * from v_fees_daily"' in out1

    out2, _err2 = run_demo(capsys, db, "--no-faults")
    second = SUMMARY.search(out2)
    assert second is not None, out2
    start2, head2 = int(second[1]), int(second[2])
    assert start2 == head1 + 1 and head2 > head1  # continued, not started over
    assert int(second[3].replace(",", "")) == head2
    assert "\nFees per day and market (v_fees_daily):\n" + fee_report(db) in out2
    # Both runs end with every balance of the three trade accounts checked against the exchange, and agreeing: the
    # second run's fake continued the first run's books.
    for out in (out1, out2):
        assert "all 9 checked balances agree with the exchange" in out, out

    engine = open_engine(f"sqlite:///{db}", write=False)
    try:
        log = EventLog(engine)
        assert log.head() == head2
        # The fake's ids were moved past the first run's, so no order or trade id clashed (no conflicts).
        assert [row for row in log.quarantined() if row.kind == "conflict"] == []
        with engine.connect() as conn:
            statuses = {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT status FROM v_balance_checks")}
            accounts = {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT trade_account_id FROM v_balances")}
            unresolved = conn.exec_driver_sql("SELECT count(*) FROM v_discrepancies WHERE status = 'open'").scalar()
        assert statuses == {"agrees"} and accounts == {"0", "1001", "1002"}
        # The summary says what the view says about unresolved discrepancies (it said nothing of them before).
        said = f"  discrepancies: {unresolved:,} unresolved (" if unresolved else "  discrepancies: none unresolved\n"
        assert said in out2, out2
    finally:
        engine.dispose()
    assert main(["verify", "--db-url", f"sqlite:///{db}"]) == 0
    verify_out = capsys.readouterr().out
    assert verify_out.startswith(f"ok: {head2} events intact")
    for text in (out1, err1, out2):
        assert DEMO_API_SECRET not in text


def test_demo_refuses_a_database_of_another_account(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from tracker.domain import tracker_events as te
    from tracker.store.migrate import upgrade

    db = tmp_path / "real.db"
    upgrade(f"sqlite:///{db}")
    engine = open_engine(f"sqlite:///{db}")
    try:
        entry = te.tracker_entry(
            account="271828", event=te.CONNECTED, data={}, received_at=datetime.now(UTC), uid="real-1"
        )
        EventLog(engine).append([entry])
    finally:
        engine.dispose()
    assert main(["demo", "--duration", "1", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"tracker: error: {db} holds account 271828, not the demo's: the demo writes fake activity only into its own"
        " database; pick another --db"
    )


def test_a_second_demo_on_a_file_being_written_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not tracker run's message (which offers PostgreSQL's hot standby): the demo's own, naming the holder."""
    import os

    from tracker.store.lease import SqliteFileLock

    db = tmp_path / "tracker-demo.db"
    lock = SqliteFileLock(db)
    lock.acquire()  # as a running demo holds it
    try:
        assert main(["demo", "--duration", "1", "--db", str(db)]) == 2
    finally:
        lock.release()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tracker: error: another tracker process (pid {os.getpid()}) is writing to tracker-demo.db: wait for it to"
        " end, or give the demo another file: --db other-demo.db"
    )
    assert not db.exists()  # nothing made meanwhile
