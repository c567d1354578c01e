"""``tracker rebuild``: equals the incremental projection, swaps atomically, leaves nothing behind on failure, and a
live projector continues correctly after a swap under it.

Rules: local databases only (``db_url``: SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, event, exc, inspect, select, update
from test_projection_store import fake_entries

from tracker.cli import main
from tracker.errors import StoreError
from tracker.store import migrate
from tracker.store import rebuild as rebuild_module
from tracker.store.engine import open_engine, open_scratch, sqlite_path, writer
from tracker.store.errors import is_disk_full, why_unavailable
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import PROJECTION_TABLES, VIEWS, shadow_tables
from tracker.store.projections import ProjectionStore
from tracker.store.rebuild import (
    SCRATCH_SUFFIX,
    _indexes_to_remake,
    _temporary_directory,
    rebuild,
)


@contextmanager
def seeded_log(url: str) -> Iterator[Engine]:
    """A migrated database at ``url`` whose log holds ``fake_entries(11, 600)``; disposed after (the rebuild tests'
    log: ``tests/test_rebuild_reader.py`` uses it too)."""
    engine = open_engine(url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(11, 600))
        yield engine
    finally:
        engine.dispose()


def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the test's own as ``tempfile``'s: a PostgreSQL rebuild's scratch file goes there."""
    directory = tmp_path / "temporary"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with seeded_log(db_url) as engine:
        yield engine


@pytest.fixture(autouse=True)
def temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory (``tempfile``'s): a PostgreSQL rebuild's scratch file goes there, one per test."""
    return private_tempdir(tmp_path, monkeypatch)


def _scratch(engine: Engine) -> Path | None:
    """The scratch database a rebuild builds in: beside a SQLite file; for PostgreSQL in a directory of its own in
    the temporary directory, while the rebuild runs (``None`` when there is none)."""
    path = sqlite_path(engine.url)
    if path is not None:
        return path.with_name(path.name + SCRATCH_SUFFIX)
    found = sorted(Path(tempfile.gettempdir()).glob("tracker-rebuild-*/shadow.db"))
    assert len(found) <= 1
    return found[0] if found else None


def _shadow_tables(engine: Engine) -> list[str]:
    """The shadow tables there are now: in the scratch file (SQLite and PostgreSQL alike), never beside the live
    tables."""
    assert not [name for name in inspect(engine).get_table_names() if name.startswith("rebuild_")]
    scratch = _scratch(engine)
    if scratch is None or not scratch.exists():
        return []
    with sqlite3.connect(f"file:{scratch}?mode=ro", uri=True) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [name for name in names if name.startswith("rebuild_")]


def _tamper(engine: Engine) -> None:
    """Make the live rows wrong, so only a real swap can make them right again."""
    fills = PROJECTION_TABLES["fills"]
    with writer(engine).begin() as conn:
        conn.execute(update(fills).values(source="tampered"))


def test_rebuild_equals_incremental_and_swaps_in(engine: Engine) -> None:
    log = EventLog(engine)
    store = ProjectionStore(engine)
    store.catch_up(log, batch=250)
    incremental = store.all_rows()
    _tamper(engine)
    seen_before_swap: list[set[str]] = []

    def before_swap() -> None:  # the shadow is complete; the live tables are still the old ones
        with engine.connect() as conn:
            seen_before_swap.append(set(conn.scalars(select(VIEWS["v_fills"].c.source))))
        assert set(_shadow_tables(engine)) == {"rebuild_" + name for name in PROJECTION_TABLES}

    result = rebuild(engine, batch=97, before_swap=before_swap)
    assert seen_before_swap == [{"tampered"}]
    assert store.all_rows() == incremental
    assert result.checkpoint == log.head() == store.load_checkpoint()
    assert result.events == log.head()
    assert result.rows["fills"] == len(incremental["fills"])
    assert _shadow_tables(engine) == []


def _live_indexes(engine: Engine) -> dict[str, list[tuple[str, tuple[str, ...], bool]]]:
    found = inspect(engine)
    return {
        name: sorted((i["name"] or "", tuple(c or "" for c in i["column_names"]), bool(i["unique"]))
                     for i in found.get_indexes(table.name))
        for name, table in PROJECTION_TABLES.items()
    }  # fmt: skip


def test_rebuild_keeps_the_live_tables_indexes(engine: Engine) -> None:
    """The swap may drop and remake the live tables' secondary indexes (SQLite); they are the same afterwards."""
    before = _live_indexes(engine)
    assert any(before.values())
    rebuild(engine, batch=200)
    assert _live_indexes(engine) == before
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"


def test_the_swap_remakes_only_the_indexes_the_shadow_lacks(tmp_path: Path) -> None:
    """SQLite: a live index like one of the shadow's (the fills' (account, position_id) and (account, order_id)) is
    kept and filled by the transfer; the others, and one a user added that the shadow has no like of (here partial),
    are made again, and every one is there after a rebuild."""
    engine = open_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    migrate.upgrade(engine)
    EventLog(engine).append(fake_entries(5, 300))
    _, shadow = shadow_tables("rebuild_")
    with writer(engine).begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_mine ON proj_fills (account, position_id) WHERE position_id IS NOT NULL")
        remade = {name: sorted(index for index, _ in _indexes_to_remake(conn, PROJECTION_TABLES[name], table))
                  for name, table in shadow.items()}  # fmt: skip
    assert remade["fills"] == ["ix_mine", "ix_proj_fills_account_executed_at"]
    assert remade["orders"] == ["ix_proj_orders_account_created_at"]
    before = _live_indexes(engine)
    rebuild(engine, batch=100)
    assert _live_indexes(engine) == before
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        assert (
            conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_mine'")
            .scalar_one()
            .endswith("WHERE position_id IS NOT NULL")
        )
    engine.dispose()


def test_a_temporary_scratch_directory_is_locked_and_a_killed_rebuilds_is_removed(temporary: Path) -> None:
    """PostgreSQL's scratch directories: the next rebuild removes one whose lock nobody holds (its rebuild was
    killed), never one a running rebuild holds, nor one without a lock file yet; its own goes when it ends."""
    for name in ("tracker-rebuild-killed", "tracker-rebuild-running", "tracker-rebuild-new", "someone-elses"):
        (temporary / name).mkdir()
        (temporary / name / "shadow.db").write_bytes(b"half a scratch file")
    (temporary / "tracker-rebuild-killed" / "lock").touch()
    (temporary / "tracker-rebuild-running" / "lock").touch()
    (temporary / "someone-elses" / "lock").touch()
    running = os.open(temporary / "tracker-rebuild-running" / "lock", os.O_RDWR)
    try:
        fcntl.flock(running, fcntl.LOCK_EX)
        with _temporary_directory() as directory:
            assert sorted(path.name for path in temporary.iterdir()) == sorted(
                [directory.name, "someone-elses", "tracker-rebuild-new", "tracker-rebuild-running"]
            )
            assert directory.parent == temporary and directory.name.startswith("tracker-rebuild-")
            probe = os.open(directory / "lock", os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(probe)
        assert not directory.exists()
    finally:
        os.close(running)


def test_a_full_disk_for_the_scratch_files_is_one_line_and_changes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scratch file fills its disk (here: SQLite's page limit, which fails the same way, ``SQLITE_FULL``): a
    ``StoreError`` that says where and what to do (on PostgreSQL: ``TMPDIR``), the live projection as it was, and
    no scratch file left."""
    store = ProjectionStore(engine)
    store.catch_up(EventLog(engine))
    before = store.all_rows()

    def small_scratch(path: Path) -> Engine:
        scratch = open_scratch(path)
        event.listen(scratch, "connect", lambda dbapi, _: dbapi.execute("PRAGMA max_page_count = 12"))
        return scratch

    monkeypatch.setattr(rebuild_module, "open_scratch", small_scratch)
    with pytest.raises(StoreError, match="ran out of disk space for its scratch files in") as raised:
        rebuild(engine, batch=50, parallel=False)
    assert "the projection is unchanged" in str(raised.value)
    assert ("TMPDIR" in str(raised.value)) == (engine.dialect.name == "postgresql")
    assert store.all_rows() == before
    assert _shadow_tables(engine) == []


def test_a_full_disk_in_the_swap_is_one_line_and_changes_nothing(sqlite_url: str) -> None:
    """The live database's own disk fills up while the swap writes the new projection into it (SQLite's page limit
    on the live file, set once the shadow is complete; it fails as a full disk does, ``SQLITE_FULL``): one line that
    says where and what to do, the swap rolled back (the live projection and checkpoint as they were), no scratch
    file left. The live projection holds half the log, so the swap needs pages the file does not have."""
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        entries = fake_entries(11, 600)
        EventLog(engine).append(entries[: len(entries) // 2])
        store = ProjectionStore(engine)
        store.catch_up(EventLog(engine))
        before, checkpoint = store.all_rows(), store.load_checkpoint()
        EventLog(engine).append(entries[len(entries) // 2 :])

        def fill_the_disk() -> None:
            engine.dispose()  # the swap's connection is a new one, capped at the file's size
            event.listen(engine, "connect", lambda dbapi, _: dbapi.execute(
                f"PRAGMA max_page_count = {dbapi.execute('PRAGMA page_count').fetchone()[0]}"))  # fmt: skip

        with pytest.raises(StoreError, match="ran out of disk space writing the new projection") as raised:
            rebuild(engine, batch=50, parallel=False, before_swap=fill_the_disk)
        message = str(raised.value)
        assert f"free space on the disk of {sqlite_path(sqlite_url)}" in message
        assert message.endswith("the projection is unchanged") and "\n" not in message
    finally:
        engine.dispose()
    engine = open_engine(sqlite_url)  # without the cap
    try:
        store = ProjectionStore(engine)
        assert store.all_rows() == before and store.load_checkpoint() == checkpoint
        assert _shadow_tables(engine) == []
        rebuild(engine, batch=50, parallel=False)  # with room again, it goes through
        assert store.load_checkpoint() == EventLog(engine).head()
    finally:
        engine.dispose()


def test_what_counts_as_a_full_disk() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # as the sqlite3 module sets it (SQLITE_FULL)
    assert is_disk_full(full)
    assert is_disk_full(exc.OperationalError("INSERT", {}, full))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(StoreError("a rebuild worker failed: OperationalError: database or disk is full"))
    pg_full = psycopg.errors.DiskFull('could not extend file "base/16384/16397": No space left on device')
    assert is_disk_full(exc.OperationalError("INSERT", {}, pg_full))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(StoreError("a rebuild worker failed: ValueError: bad"))
    assert not is_disk_full(exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")))
    assert not is_disk_full(exc.OperationalError("INSERT", {}, psycopg.errors.AdminShutdown("terminating")))
    # what a task that waits an outage out logs (tracker.runtime.db_retry): what to do, for a full disk
    assert why_unavailable(exc.OperationalError("INSERT", {}, full)) == (
        "the database's disk is full (OperationalError: database or disk is full): free space on it"
    )
    assert why_unavailable(exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))) == (
        "database unavailable (OperationalError: database is locked)"
    )


def test_failed_rebuild_leaves_live_tables_and_no_shadows(engine: Engine) -> None:
    store = ProjectionStore(engine)
    store.catch_up(EventLog(engine))
    before = store.all_rows()

    def fail() -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        rebuild(engine, before_swap=fail)
    assert store.all_rows() == before
    assert _shadow_tables(engine) == []
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
    assert store.load_checkpoint() == EventLog(engine).head()


def test_live_projector_continues_after_a_swap_under_it(engine: Engine) -> None:
    log = EventLog(engine)
    live = ProjectionStore(engine)
    live.catch_up(log, until=400)
    entries = log.read_after(400, 300)
    # The live projector read its batch, then a rebuild swapped in rows up to the head before it could write.
    events_state_checkpoint = live.load_checkpoint()
    rebuild(engine)
    assert live.load_checkpoint() == log.head() != events_state_checkpoint
    result = live.project(entries)  # all at or below the new checkpoint: folded already, nothing written
    assert result is not None
    assert result.events == 0
    # Its next round starts from the swapped-in checkpoint: nothing applied twice, nothing lost.
    more = fake_entries(12, 50, account="later")
    log.append(more)
    live.catch_up(log)
    reference = ProjectionStore(engine)
    rebuilt_again = rebuild(engine)
    assert rebuilt_again.checkpoint == log.head()
    assert live.all_rows() == reference.all_rows()


def test_stale_batch_is_refused_after_a_swap(engine: Engine) -> None:
    log = EventLog(engine)
    live = ProjectionStore(engine)
    live.catch_up(log, until=100)
    rebuild(engine)  # checkpoint jumps from 100 to the head
    state_rows = live.all_rows()
    assert live.write_batch({"fills": state_rows["fills"][:1]}, 101, expected=100) is None
    assert live.load_checkpoint() == log.head()


def test_sqlite_scratch_is_removed_and_leftovers_replaced(sqlite_url: str) -> None:
    """A crashed rebuild's scratch file (here: garbage) is replaced by the next rebuild, which removes its own."""
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(3, 200))
        scratch = _scratch(engine)
        assert scratch is not None
        scratch.write_bytes(b"not a database, left by a rebuild killed half-way")
        scratch.with_name(scratch.name + "-journal").write_bytes(b"stale journal")
        seen: list[bool] = []
        result = rebuild(engine, batch=50, before_swap=lambda: seen.append(scratch.exists()))
        assert seen == [True]
        assert result.checkpoint == EventLog(engine).head()
        assert not scratch.exists()
        assert not scratch.with_name(scratch.name + "-journal").exists()
        assert ProjectionStore(engine).all_rows()["fills"]
    finally:
        engine.dispose()


def test_second_rebuild_of_one_sqlite_file_is_refused(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(4, 100))
        refused: list[str] = []

        def second_rebuild() -> None:  # runs while the first one holds the scratch file
            with pytest.raises(StoreError) as caught:
                rebuild(engine)
            refused.append(str(caught.value))

        rebuild(engine, before_swap=second_rebuild)
        assert len(refused) == 1
        assert "another tracker rebuild is running on this database" in refused[0]
        assert ProjectionStore(engine).load_checkpoint() == EventLog(engine).head()
    finally:
        engine.dispose()


def test_tracker_rebuild_command(engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "--db-url", db_url, "--batch", "500"]) == 0
    out = capsys.readouterr().out
    head = EventLog(engine).head()
    assert out.startswith(f"rebuilt {head:,} events in ")
    assert out.rstrip().endswith(f"checkpoint at seq {head}")
    assert out.count("\n") == 1
    assert ProjectionStore(engine).load_checkpoint() == head


def test_tracker_rebuild_needs_a_migrated_database(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "--db-url", sqlite_url]) != 0
    assert "`tracker db upgrade`" in capsys.readouterr().err
