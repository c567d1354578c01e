"""``tracker db copy`` (``tracker/store/log_copy.py``): the truth copied row for row into another database.

- Every direction between the backends: every column of every event log and quarantine row equal, the same head
  anchor, the projections rebuilt on the target equal to the source's, and appends to the copy continue its chain
  (the quarantine's ids too, on PostgreSQL: its sequence is moved past the copied ids).
- A quarantined raw text with NUL (SQLite keeps it) arrives JSON-quoted on PostgreSQL, said in its reason.
- Refused with one line, nothing written: a target holding a log, the same database twice, a source or target a
  ``tracker run`` writes (SQLite lock, PostgreSQL lease), a source whose chain is broken, a source not migrated.
- The command: its output, the projections ready, a password on the command line refused, exit codes; after it,
  every report and export byte for byte the same on both backends.
- ``--merge``: the source appended renumbered and relinked, every other column kept, a ``log_merged`` entry per
  account with the source's anchor, a conflict's ``existing_seq`` moved, each merged account's reports the same as on
  the source, the chain going on; a source account the target tracks refused.
- The check after the commit is real: a row changed on its way (simulated) fails it, named by its seq.

Rules: local databases only; no sleeps; bounded by pytest-timeout.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import sample_ledger
from sqlalchemy import Engine, create_engine, select, text
from store_helpers import T0, entry, tampering
from test_projection_store import fake_entries

from tracker.cli import main
from tracker.domain.log import QuarantineItem
from tracker.errors import StoreError
from tracker.store import log_copy, migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.lease import PgLease, SqliteFileLock
from tracker.store.log_copy import copy_log, merge_log
from tracker.store.log_queries import run_start
from tracker.store.projections import ProjectionStore
from tracker.store.rebuild import rebuild
from tracker.store.schema import event_log, quarantine

pytestmark = pytest.mark.timeout(120)


def _engine(url: str) -> Engine:
    migrate.upgrade(url)
    return open_engine(url)


@pytest.fixture
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """(source, target) on the backends ``request.param`` names, e.g. ``("sqlite", "postgresql")``."""
    urls: list[str] = []
    for place, backend in enumerate(request.param):
        if backend == "sqlite":
            urls.append(f"sqlite:///{tmp_path / f'db{place}.db'}")
        elif not urls or urls[0].startswith("sqlite"):
            urls.append(str(request.getfixturevalue("pg_url")))
        else:  # a second PostgreSQL database: another schema of the first one's database
            urls.append(_another_schema(urls[0]))
    made = [_engine(url) for url in urls]
    try:
        yield made[0], made[1]
    finally:
        for engine in made:
            engine.dispose()


def _another_schema(url: str) -> str:
    """``url`` (a PostgreSQL test URL, ``search_path`` set to its own schema) with a new schema of its own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    other, found = re.subn(r"search_path%3D[^&]+", f"search_path%3D{schema}", url)
    assert found == 1, url
    return other


DIRECTIONS = [
    pytest.param(("sqlite", "postgresql"), id="sqlite-to-postgresql", marks=pytest.mark.postgres),
    pytest.param(("postgresql", "sqlite"), id="postgresql-to-sqlite", marks=pytest.mark.postgres),
    pytest.param(("sqlite", "sqlite"), id="sqlite-to-sqlite"),
    pytest.param(("postgresql", "postgresql"), id="postgresql-to-postgresql", marks=pytest.mark.postgres),
]


def _fill(engine: Engine) -> None:
    """Two accounts' model frames in a few appends, and two quarantined frames."""
    log = EventLog(engine)
    entries = fake_entries(11, 300) + fake_entries(12, 200, account="acc2")
    for start in range(0, len(entries), 700):
        log.append(entries[start : start + 700])
    log.append([], [QuarantineItem("malformed", "not JSON", "{", T0, account="acc", channel="private-x")])
    log.append([], [QuarantineItem("unknown", "no such event", '{"event":"x"}', T0, account="acc2")])


def _rows(engine: Engine, table: Any, order: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(table).order_by(order))]


@pytest.mark.parametrize("engines", DIRECTIONS, indirect=True)
def test_every_row_arrives_and_the_copy_goes_on_as_the_same_log(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    _fill(source)
    seen: list[int] = []
    result = copy_log(source, target, page=400, on_progress=seen.append)
    source_log, target_log = EventLog(source), EventLog(target)
    assert (result.events, result.quarantined) == (source_log.head(), 2)
    assert seen == sorted(seen) and seen[-1] == result.events and len(seen) > 2  # pages of 400
    assert target_log.head_anchor() == source_log.head_anchor()
    assert str(target_log.head_anchor()) == f"{result.head}:{result.head_hash}"
    assert _rows(target, event_log, event_log.c.seq) == _rows(source, event_log, event_log.c.seq)
    assert _rows(target, quarantine, quarantine.c.id) == _rows(source, quarantine, quarantine.c.id)

    rebuild(source, parallel=False)
    rebuild(target, parallel=False)
    assert ProjectionStore(target).all_rows() == ProjectionStore(source).all_rows()

    # The copy is the log itself, not a new one: an append continues its chain, and a quarantined frame gets a new id.
    appended = target_log.append([entry(1)], [QuarantineItem("malformed", "not JSON", "[", T0)])
    assert appended.appended == (result.head + 1,)
    assert len(_rows(target, quarantine, quarantine.c.id)) == 3
    assert main(["verify", "--db-url", target.url.render_as_string(hide_password=False)]) == 0


@pytest.mark.parametrize("engines", [DIRECTIONS[0]], indirect=True)
def test_a_raw_text_with_nul_arrives_json_quoted_on_postgresql(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    EventLog(source).append([entry(1)], [QuarantineItem("malformed", "not JSON", "a\x00b", T0, channel="c\x00")])
    copy_log(source, target)
    [row] = _rows(target, quarantine, quarantine.c.id)
    stored = dict(zip([c.name for c in quarantine.columns], row, strict=True))
    assert json.loads(stored["raw"]) == "a\x00b" and stored["channel"] is None
    assert stored["reason"].startswith("not JSON (raw text kept JSON-quoted: it contains NUL")


@pytest.mark.parametrize("engines", [DIRECTIONS[0], DIRECTIONS[2]], indirect=True)
def test_a_target_holding_a_log_is_refused_and_left_as_it_was(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    _fill(source)
    EventLog(target).append([entry(1), entry(2)])
    before = _rows(target, event_log, event_log.c.seq)
    with pytest.raises(StoreError, match=r"already holds a log \(2 events, 0 quarantined\): copy into an empty"):
        copy_log(source, target)
    assert _rows(target, event_log, event_log.c.seq) == before


def test_the_same_database_twice_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    source = _engine(sqlite_url)
    again = open_engine(f"sqlite:///{tmp_path}/./tracker.db")
    try:
        with pytest.raises(StoreError, match=r"^the source and the target are the same database"):
            copy_log(source, again)
    finally:
        source.dispose()
        again.dispose()


@pytest.mark.parametrize("engines", [DIRECTIONS[2]], indirect=True)
def test_a_sqlite_file_a_tracker_run_writes_is_refused(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    _fill(source)
    for role, engine in (("source", source), ("target", target)):
        path = Path(str(engine.url.database))
        lock = SqliteFileLock(path)
        lock.acquire()  # as tracker run holds it
        try:
            with pytest.raises(StoreError, match=rf"^a tracker run is writing to the {role}, {path.name} \(pid \d+\)"):
                copy_log(source, target)
        finally:
            lock.release()
    assert EventLog(target).head() == 0
    copy_log(source, target)  # once nobody writes
    assert EventLog(target).head() == EventLog(source).head()


@pytest.mark.parametrize("engines", [DIRECTIONS[1]], indirect=True)
def test_a_postgresql_log_whose_writer_lease_is_held_is_refused(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    _fill(source)
    lease = PgLease(source, "acc2")
    assert lease.try_acquire()
    try:
        with pytest.raises(StoreError, match=r"^account acc2's writer lease on the source is held by "):
            copy_log(source, target)
    finally:
        lease.release()
    assert EventLog(target).head() == 0


@pytest.mark.parametrize("engines", [DIRECTIONS[0], DIRECTIONS[1]], indirect=True)
def test_a_source_whose_chain_is_broken_is_not_copied(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    _fill(source)
    with tampering(source.url.render_as_string(hide_password=False)) as conn:
        conn.execute(text("UPDATE event_log SET payload = payload || ' ' WHERE seq = 7"))
    with pytest.raises(StoreError, match=r"^the source's hash chain fails at seq 7 \(content does not match"):
        copy_log(source, target)
    assert EventLog(target).head() == 0


def test_a_source_not_migrated_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(old, "0008")
    source, target = open_engine(old), _engine(sqlite_url)
    try:
        not_migrated = r"is not migrated \(at revision 0008_pg_append_function, need .*\): run `tracker db upgrade`"
        with pytest.raises(StoreError, match=not_migrated):
            copy_log(source, target)
    finally:
        source.dispose()
        target.dispose()


@pytest.mark.postgres
def test_the_command_then_every_report_reads_the_same_on_both(
    sqlite_url: str, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tracker db copy`` from SQLite to PostgreSQL, then every report and export, byte for byte the same on both:
    each report's order is total (ties broken by the view's key, NULLs first, which the backends otherwise put at
    opposite ends)."""
    source = _engine(sqlite_url)
    try:
        log = EventLog(source)
        log.append(fake_entries(31, 300) + fake_entries(32, 150, account="acc2"))
        log.append(sample_ledger("acc") + sample_ledger("acc2"))
        log.append([], [QuarantineItem("malformed", "not JSON", "{", T0)])
        anchor = log.head_anchor()
    finally:
        source.dispose()
    assert main(["rebuild", "--db-url", sqlite_url]) == 0
    capsys.readouterr()

    assert main(["db", "copy", "--db-url", sqlite_url, "--to", pg_url]) == 0
    out = capsys.readouterr().out.splitlines()
    shown = pg_url.split("?")[0]
    assert out[0].startswith(f"copied {anchor.seq:,} events and 1 quarantined frames from sqlite:///")
    assert f" to {shown}" in out[0]
    assert out[1] == f"the copy verifies: seq 1..{anchor.seq} intact, head {anchor}, the source's head"
    assert out[2].startswith(f"target: rebuilt {anchor.seq:,} events in ")
    assert out[3].startswith("next: run tracker with --db-url")
    assert main(["verify", "--anchor", "--db-url", pg_url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(anchor)

    kinds = ["fees", "fills", "orders", "positions", "ledger", "balances", "transfers", "settlements", "self-trades",
             "liquidations", "discrepancies"]  # fmt: skip
    outputs = []
    for url in (sqlite_url, pg_url):
        for kind in kinds:
            assert main(["report", kind, "--db-url", url, "--format", "csv"]) == 0
        for form in ("bitstamp", "koinly", "rotki-trades"):
            assert main(["export", "--format", form, "--db-url", url]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") > 500  # rows, not only headers

    # The ledger's legs of one entry: its amounts, then its fee (each currency's balance_after runs down the page).
    assert main(["report", "ledger", "--db-url", pg_url, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == sorted(rows, key=lambda row: (int(row["seq"]), row["entry_id"], row["leg"], row["currency"]))
    assert any(row["leg"] == "fee" for row in rows)


# -- --merge: a log appended to a database that holds another -------------------------------------------------------


@pytest.mark.parametrize("engines", [DIRECTIONS[0], DIRECTIONS[2], DIRECTIONS[1]], indirect=True)
def test_a_merge_appends_the_source_renumbered_and_records_where_it_came_from(
    engines: tuple[Engine, Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = engines
    source_log, target_log = EventLog(source), EventLog(target)
    target_log.append(fake_entries(21, 200))  # account "acc"
    target_log.append([], [QuarantineItem("malformed", "not JSON", "]", T0)])
    source_log.append(fake_entries(22, 200, account="acc2") + fake_entries(23, 100, account="acc3"))
    source_log.append([entry(1, account="acc2", key="k")])
    source_log.append([entry(2, account="acc2", key="k")])  # the same key, another payload: a conflict
    before, anchor = target_log.head_anchor(), source_log.head_anchor()
    kept = _rows(target, event_log, event_log.c.seq)
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)  # after the logged entries, before this run

    result = merge_log(source, target, page=300, clock=lambda: at)

    assert (result.offset, result.events, result.quarantined) == (before.seq, anchor.seq, 1)
    assert result.source == anchor and result.accounts == ("acc2", "acc3")
    assert result.markers == (before.seq + anchor.seq + 1, before.seq + anchor.seq + 2)
    assert target_log.head_anchor() == result.target and result.target.seq == result.markers[-1]
    assert main(["verify", "--db-url", target.url.render_as_string(hide_password=False)]) == 0
    theirs = _rows(source, event_log, event_log.c.seq)
    ours = _rows(target, event_log, event_log.c.seq)
    assert ours[: before.seq] == kept
    columns = [c.name for c in event_log.columns]
    moved = [dict(zip(columns, row, strict=True)) for row in ours[before.seq : before.seq + anchor.seq]]
    for old, new in zip(theirs, moved, strict=True):
        old = dict(zip(columns, old, strict=True))
        assert new["seq"] == old["seq"] + before.seq
        assert {k: v for k, v in new.items() if k not in ("seq", "prev_hash", "hash")} == {
            k: v for k, v in old.items() if k not in ("seq", "prev_hash", "hash")
        }
    markers = [dict(zip(columns, row, strict=True)) for row in ours[before.seq + anchor.seq :]]
    assert [(m["account"], m["source"], m["event"], m["received_at"]) for m in markers] == [
        ("acc2", "tracker", "log_merged", at),
        ("acc3", "tracker", "log_merged", at),
    ]
    data = json.loads(markers[0]["payload"])["data"]
    assert data["source_anchor"] == str(anchor) and data["source_entries"] == anchor.seq
    assert (data["first_seq"], data["last_seq"]) == (before.seq + 1, before.seq + anchor.seq)
    assert data["entries"] == sum(1 for row in theirs if row[1] == "acc2")
    [_, conflict] = _rows(target, quarantine, quarantine.c.id)
    named = dict(zip([c.name for c in quarantine.columns], conflict, strict=True))
    assert named["kind"] == "conflict"
    assert named["existing_seq"] == before.seq + anchor.seq  # the source's last seq, moved

    # A later tracker run of a merged account: the window it was not running starts at its last entry, not at the
    # merge (the log_merged entry is no run's).
    last = max(i for i, row in enumerate(theirs) if row[1] == "acc2")
    assert run_start(target_log, "acc2", datetime.now(UTC)) == (before.seq + theirs[last][0], theirs[last][12])
    assert columns[12] == "received_at"

    # Each merged account's reports on the target are its reports on the source.
    url_of = {engine: engine.url.render_as_string(hide_password=False) for engine in (source, target)}
    for engine in (source, target):
        assert main(["rebuild", "--db-url", url_of[engine]]) == 0
    capsys.readouterr()
    outputs = []
    for engine in (source, target):
        for kind in ("fills", "orders", "positions", "fees", "settlements"):
            for user in ("acc2", "acc3"):
                assert main(["report", kind, "--db-url", url_of[engine], "--user", user, "--format", "csv"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 100
    assert target_log.append([entry(99, account="acc2")]).appended == (result.target.seq + 1,)  # the chain goes on


@pytest.mark.parametrize("engines", [DIRECTIONS[0], DIRECTIONS[2]], indirect=True)
def test_a_merge_of_an_account_the_target_tracks_is_refused(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    EventLog(target).append(fake_entries(21, 50) + fake_entries(22, 50, account="acc2"))
    EventLog(source).append(fake_entries(23, 50, account="acc2") + fake_entries(24, 50, account="acc4"))
    before = _rows(target, event_log, event_log.c.seq)
    with pytest.raises(StoreError, match=r"^account acc2 is in both logs: a log is merged only into a database that"):
        merge_log(source, target)
    assert _rows(target, event_log, event_log.c.seq) == before


@pytest.mark.postgres
def test_the_merge_command(sqlite_url: str, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for url, account in ((sqlite_url, "acc2"), (pg_url, "acc")):
        engine = _engine(url)
        EventLog(engine).append(fake_entries(25, 100, account=account))
        engine.dispose()
    assert main(["db", "copy", "--db-url", sqlite_url, "--to", pg_url]) != 0
    assert "already holds a log (" in capsys.readouterr().err
    assert main(["db", "copy", "--merge", "--db-url", sqlite_url, "--to", pg_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("merged ") and "(account acc2)" in out[0]
    assert out[1].startswith("the merge verifies: the target's seq 1..")
    assert out[2].startswith("the source's head ") and " is recorded in the log: log_merged at seq " in out[2]
    assert out[3].startswith("target: rebuilt ")

    # The audit report names the merge, whatever its period: which seqs came from where, and the source's anchor.
    report = tmp_path / "audit.html"
    assert main(["audit", "--db-url", pg_url, "--out", str(report), "--until", "2026-01-01"]) == 0
    page = report.read_text()
    anchor = out[2].split()[3]
    assert "Logs merged into this one" in page and anchor in page and "sqlite:///" in page
    assert main(["audit", "--db-url", pg_url, "--out", str(report), "--user", "acc"]) == 0
    assert "Logs merged into this one" not in report.read_text()  # account acc came from no merge


@pytest.mark.parametrize("engines", [DIRECTIONS[2], DIRECTIONS[0]], indirect=True)
@pytest.mark.parametrize("merge", [False, True], ids=["copy", "merge"])
def test_a_row_that_arrives_changed_fails_the_check_after(
    engines: tuple[Engine, Engine], merge: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after the commit is real: a row whose payload the writing changed (simulated) is named."""
    source, target = engines
    _fill(source)
    if merge:
        EventLog(target).append(fake_entries(21, 20, account="other"))
    write = log_copy._write
    changed = []

    def changing(out: Any, table: Any, names: Any, rows: Any) -> None:
        if table is event_log and not changed:
            at = list(names).index("payload")
            rows = [(*rows[0][:at], rows[0][at] + " ", *rows[0][at + 1 :]), *rows[1:]]
            changed.append(rows[0][0])
        write(out, table, names, rows)

    monkeypatch.setattr(log_copy, "_write", changing)
    with pytest.raises(StoreError) as refused:
        (merge_log if merge else copy_log)(source, target)
    what = "merge into" if merge else "copy at"
    assert re.match(rf"^the {what} .* does not verify \(its chain fails at seq {changed[0]}: content does not match",
                    str(refused.value)), refused.value  # fmt: skip


@pytest.mark.postgres
def test_a_password_goes_in_the_environment_and_is_never_shown(
    sqlite_url: str, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = _engine(sqlite_url)
    EventLog(engine).append([entry(1), entry(2)])
    engine.dispose()
    with_password = pg_url.replace("postgres@", "postgres:s3cret-pw@", 1)  # trust auth: the server does not ask
    assert main(["db", "copy", "--db-url", sqlite_url, "--to", with_password]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("tracker: error: --to holds a password, which would show in the process list")
    monkeypatch.setenv("TRACKER_COPY_TO_URL", with_password)
    assert main(["db", "copy", "--db-url", sqlite_url]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("copied 2 events") and "s3cret" not in out + err
