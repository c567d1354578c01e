"""A damaged database file (issue 14): ``verify`` says BROKEN with the page and its table, ``run`` refuses to start,
and a page damaged under a running writer stops it with one error while every frame not committed lands in a side file.

Damage is made as a user would find it: the page that holds part of a table or index (``dbstat``, or the schema's
root page) is overwritten on disk while no connection is open. Rules: local files only (SQLite; PostgreSQL pages cannot
be damaged from here, so the PostgreSQL test checks what ``verify`` reports about its own check), an absolute timeout
on every test, no sleeps.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import trio
from sqlalchemy import exc, text
from store_helpers import entry, open_log

from tracker.cli import main
from tracker.cli.run import damage_in
from tracker.domain.log import NewEntry
from tracker.runtime.writer import Item, run_writer
from tracker.store.engine import open_engine
from tracker.store.errors import DatabaseDamaged, is_damage
from tracker.store.integrity import check_integrity

pytestmark = pytest.mark.timeout(60)

ROWS = 600  # enough for event_log and its indexes to span many pages
DEDUP_INDEX = "sqlite_autoindex_event_log_1"  # the unique dedup_key index: the largest, many pages at 600 rows


def make_log(url: str, rows: int = ROWS) -> Path:
    with open_log(url) as log:
        log.append([entry(i) for i in range(1, rows + 1)])
    return Path(url.removeprefix("sqlite:///"))


def pages_of(path: Path, name: str) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,))]


def root_page(path: Path, name: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])


def damage(path: Path, page: int, *, offset: int = 0, size: int = 512) -> None:
    """Overwrite ``size`` bytes of ``page`` (1-based) from ``offset``: what a bad sector or a stray write leaves."""
    with closing(sqlite3.connect(path)) as conn:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    with path.open("r+b") as file:
        file.seek((page - 1) * page_size + offset)
        file.write(b"\xff" * size)


def middle(pages: list[int]) -> int:
    return pages[len(pages) // 2]


# -- tracker verify ----------------------------------------------------------------------------------------------------


def test_verify_names_a_damaged_data_page(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(sqlite_url)
    page = middle(pages_of(path, "event_log"))
    damage(path, page, offset=100, size=300)
    assert main(["verify", "--db-url", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN: the database file is damaged (SQLite integrity_check found ")
    assert f"  page {page} (table event_log): " in out
    assert "Traceback" not in out


def test_verify_sees_damaged_index_pages_the_chain_cannot(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The chain reads only the table, so it stays intact; the database's own check still fails, and so does verify."""
    path = make_log(sqlite_url)
    page = middle(pages_of(path, DEDUP_INDEX))
    damage(path, page, offset=100, size=300)
    with closing(sqlite3.connect(path)) as conn:  # SQLite's own check fails too: it lists cells, or it gives up
        try:
            own = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as error:
            own = [(str(error),)]
    assert own != [("ok",)]
    assert main(["verify", "--db-url", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert f"  page {page} (index {DEDUP_INDEX}): " in out
    assert f"the chain itself reads intact: {ROWS} events intact" in out


def test_verify_on_a_file_that_is_no_database_is_broken(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_log(sqlite_url, rows=3)
    damage(path, 1, size=100)  # the header
    assert main(["verify", "--db-url", sqlite_url]) == 1
    assert capsys.readouterr().out == (
        f"BROKEN: {path} is not a SQLite database, or its header is damaged (file is not a database): check the path"
        " (--db-url); if it is your database, restore it from a backup\n"
    )


def test_a_file_that_is_no_database_says_check_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV given as the database: not only "restore it from a backup", which is the wrong advice for a wrong path."""
    path = tmp_path / "fills.csv"
    path.write_text("trade_id,amount\n1,0.1\n")
    assert main(["status", "--db-url", f"sqlite:///{path}"]) == 2
    assert capsys.readouterr().err == (
        f"tracker: error: {path} is not a SQLite database, or its header is damaged (file is not a database): check"
        " the path (--db-url); if it is your database, restore it from a backup\n"
    )


def test_verify_reports_the_database_check(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_log(db_url) as log:
        log.append([entry(i) for i in range(1, 4)])
    assert main(["verify", "--db-url", db_url]) == 0
    out = capsys.readouterr().out
    if db_url.startswith("sqlite"):
        assert out.endswith("; SQLite integrity_check ok\n")
        return
    engine = open_engine(db_url)
    try:
        before = check_integrity(engine)
        if before.method == "":  # not installed yet in this run's database: said plainly, then installed
            assert before.note is not None and before.note.startswith("pages not checked: amcheck ")
            assert out.endswith(f"; {before.note}\n")
            with engine.begin() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public"))
        after = check_integrity(engine)
    finally:
        engine.dispose()
    assert (after.method, after.problems) == ("PostgreSQL amcheck", ())
    assert main(["verify", "--db-url", db_url]) == 0
    assert capsys.readouterr().out.endswith("; PostgreSQL amcheck ok\n")


# -- tracker run -------------------------------------------------------------------------------------------------------


def test_run_refuses_a_damaged_file(sqlite_url: str, tmp_path: Path) -> None:
    path = make_log(sqlite_url)
    damage(path, middle(pages_of(path, "event_log")), offset=100, size=300)
    env = {"PATH": "/usr/bin:/bin", "BITSTAMP_API_KEY": "abcdefgh", "BITSTAMP_API_SECRET": "secretvalue"}
    result = subprocess.run(
        [sys.executable, "-m", "tracker", "run", "--db-url", sqlite_url, "--markets", "btcusd"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tracker: error: the database at {sqlite_url} is damaged (SQLite quick_check: page ")
    assert lines[0].endswith("restore it from a backup; `tracker verify` shows the details")


async def test_damage_under_a_running_writer_loses_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """The writer commits, then the log's root page is damaged on disk: the next append fails, the run stops with
    DatabaseDamaged naming the side file, and the side file holds every frame sent after the damage, batch and buffer.
    """
    path = make_log(sqlite_url, rows=50)
    spill = tmp_path / "unsaved.jsonl"
    engine = open_engine(sqlite_url)
    from tracker.store.event_log import EventLog

    log = EventLog(engine)
    send, receive = trio.open_memory_channel[Item](100)
    caught: list[BaseException] = []
    later = [entry(i) for i in range(52, 72)]
    try:
        async with trio.open_nursery() as nursery:
            stats = await nursery.start(
                lambda task_status: run_writer(
                    log.append, receive, max_batch=5, spill_to=lambda: spill, task_status=task_status
                )
            )
            await send.send((entry(51), trio.current_time()))
            await stats.wait_items(1)
            engine.dispose()  # no connection keeps the old pages in its cache
            damage(path, root_page(path, "event_log"))
            for item in later:
                send.send_nowait((item, trio.current_time()))  # all buffered before the writer wakes: 5 + 15
    except* DatabaseDamaged as group:
        caught.extend(group.exceptions)
    finally:
        engine.dispose()
    assert len(caught) == 1
    message = str(caught[0])
    assert message.startswith("the database is damaged (database disk image is malformed): the run stopped; the 20 ")
    assert f"saved in {spill} (JSON lines)" in message
    saved = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [row["dedup_key"] for row in saved] == [item.dedup_key for item in later]
    assert saved[0]["kind"] == "entry" and saved[0]["payload"] == later[0].payload
    assert (
        NewEntry(
            **{k: v for k, v in saved[0].items() if k not in ("kind", "received_at")}, received_at=later[0].received_at
        )
        == later[0]
    )


def test_damage_seen_by_another_task_is_one_line(sqlite_url: str, tmp_path: Path) -> None:
    """When a reader (projector, backfill) meets the damage first, the run still ends with one ``tracker: error``."""
    make_log(sqlite_url, rows=1)
    engine = open_engine(sqlite_url)
    try:
        hit = exc.DatabaseError("SELECT 1", {}, sqlite3.DatabaseError("database disk image is malformed"))
        assert is_damage(hit)
        found = damage_in(BaseExceptionGroup("run", [BaseExceptionGroup("projector", [hit])]), engine, 0.0)
        assert found is not None
        assert str(found).startswith(f"the database at {sqlite_url} is damaged (database disk image is malformed)")
        assert damage_in(BaseExceptionGroup("run", [ValueError("bug")]), engine, 0.0) is None
    finally:
        engine.dispose()
