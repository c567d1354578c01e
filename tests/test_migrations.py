"""Migrations: models and migrations do not drift; upgrade -> downgrade -> upgrade works; the CLIs share env.py.

Rules: local databases only (``db_url`` runs each test on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import main as alembic_main
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, Table, func, inspect, select
from store_helpers import entry, open_log

from tracker.cli import main
from tracker.errors import StoreError
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.schema import event_log, include_object_for, load_all_tables

REPO = Path(__file__).resolve().parents[1]


def _tables(url: str) -> set[str]:
    engine = open_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# SQLite cannot reflect expression indexes, so alembic warns before include_object leaves the PostgreSQL-only one out.
SKIPS_THE_DIGEST_INDEX = pytest.mark.filterwarnings(
    "ignore:autogenerate skipping metadata-specified expression-based index 'ix_event_log_dedup_digest'"
)


@SKIPS_THE_DIGEST_INDEX
def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            opts = {
                "compare_type": True,
                "compare_server_default": True,
                "include_object": include_object_for(engine.dialect.name),
            }
            context = MigrationContext.configure(conn, opts=opts)
            diff = compare_metadata(context, load_all_tables())
    finally:
        engine.dispose()
    assert diff == []


@SKIPS_THE_DIGEST_INDEX
def test_drift_check_would_see_an_unmigrated_table(sqlite_url: str) -> None:
    """The drift test above can fail: a table added to the metadata without a migration shows up."""
    migrate.upgrade(sqlite_url)
    extended = MetaData()
    for table in load_all_tables().tables.values():
        table.to_metadata(extended)
    Table("projection_orders", extended, Column("order_id", String(64), primary_key=True))
    engine = open_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": include_object_for("sqlite")})
            diff = compare_metadata(context, extended)
    finally:
        engine.dispose()
    assert [(op[0], op[1].name) for op in diff] == [("add_table", "projection_orders")]


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head_revision()
    assert {"event_log", "quarantine", "alembic_version"} <= _tables(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    assert _tables(db_url) <= {"alembic_version"}
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head_revision()
    assert {"event_log", "quarantine"} <= _tables(db_url)


def test_check_schema_names_the_fix(db_url: str) -> None:
    engine = open_engine(db_url)
    try:
        head = migrate.head_revision()
        with pytest.raises(
            StoreError, match=rf"not migrated \(at revision none, need {head}\): run `tracker db upgrade`"
        ):
            migrate.check_schema(engine)
        migrate.upgrade(engine, "0001")
        with pytest.raises(StoreError, match=rf"not migrated \(at revision 0001, need {head}\)"):
            migrate.check_schema(engine)  # 0002 (projections) exists, so 0001 is behind
        migrate.upgrade(engine)
        migrate.check_schema(engine)
    finally:
        engine.dispose()


def test_tracker_db_commands(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    head = migrate.head_revision()
    assert main(["db", "current", "--db-url", db_url]) == 1
    assert f"revision none (newest {head}): run `tracker db upgrade`" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db-url", db_url]) == 0
    assert main(["db", "current", "--db-url", db_url]) == 0
    assert f"revision {head} (newest {head}): up to date" in capsys.readouterr().out
    assert main(["db", "downgrade", "0001", "--db-url", db_url]) == 0
    assert migrate.current(db_url) == "0001"
    assert main(["db", "downgrade", "base", "--db-url", db_url]) == 0
    assert migrate.current(db_url) is None


def test_plain_alembic_cli_uses_the_same_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))  # alembic.ini's logging section reconfigures the root logger
    monkeypatch.setenv("TRACKER_DB_URL", sqlite_url)
    try:
        alembic_main(["-c", str(REPO / "alembic.ini"), "upgrade", "head"])
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert migrate.current(sqlite_url) == migrate.head_revision()
    assert {"event_log", "quarantine"} <= _tables(sqlite_url)


def test_unreachable_database_message_hides_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        open_engine("postgresql://postgres:hunter2@127.0.0.1:1/x")
    message = str(caught.value)
    assert "hunter2" not in message
    assert message.startswith("cannot connect to the database at postgresql+psycopg://postgres@127.0.0.1:1/x: ")
    assert message.endswith("; check TRACKER_DB_URL")
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested as root")
def test_unwritable_sqlite_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=r"cannot write in .*ro.*permission denied"):
            open_engine(f"sqlite:///{locked / 'tracker.db'}")
    finally:
        locked.chmod(0o700)


def test_missing_sqlite_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"directory .*missing.* does not exist"):
        open_engine(f"sqlite:///{tmp_path / 'missing' / 'tracker.db'}")


# -- the log cannot be dropped by accident (issue 14) -----------------------------------------------------------------


def _with_events(url: str, n: int = 5) -> None:
    with open_log(url) as log:
        log.append([entry(i) for i in range(1, n + 1)])


def test_downgrade_refuses_to_drop_a_non_empty_log(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _with_events(db_url)
    with pytest.raises(migrate.LogWouldBeDropped, match=r"holds 5 event\(s\) and 0 quarantined item\(s\)"):
        migrate.downgrade(db_url, "base")
    assert main(["db", "downgrade", "base", "--db-url", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tracker: error: refusing to downgrade ") and err.count("\n") == 1
    assert "--drop-log" in err
    # Nothing was touched, not even the projections (the refusal comes before the first step).
    assert migrate.current(db_url) == migrate.head_revision()
    assert {"event_log", "quarantine", "proj_orders"} <= _tables(db_url)
    # A downgrade that keeps the log needs no flag.
    assert main(["db", "downgrade", "0001", "--db-url", db_url]) == 0
    assert main(["db", "downgrade", "base", "--db-url", db_url]) == 2
    assert _row_count(db_url) == 5


def test_downgrade_to_an_unknown_revision_says_so(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A typo'd revision was answered "refusing to downgrade ... that drops the event log" on a non-empty log.
    _with_events(db_url)
    assert main(["db", "downgrade", "0009_log_digest_index", "--db-url", db_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tracker: error: Can't locate revision identified by '0009_log_digest_index' (revisions: ")
    assert "event log" not in err
    assert migrate.current(db_url) == migrate.head_revision()
    assert main(["db", "downgrade", "0009", "--db-url", db_url]) == 0  # a revision's prefix names it
    assert migrate.current(db_url) == "0009_log_indexes"


def test_drop_log_writes_a_backup_first(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with_events(db_url)
    backup = tmp_path / ("backup.db" if db_url.startswith("sqlite") else "backup.jsonl")
    assert main(["db", "downgrade", "base", "--drop-log", "--backup", str(backup), "--db-url", db_url]) == 0
    assert f"backup of the event log written to {backup}\n" in capsys.readouterr().out
    assert _tables(db_url) <= {"alembic_version"}
    if db_url.startswith("sqlite"):
        assert main(["verify", "--db-url", f"sqlite:///{backup}"]) == 0  # a consistent, self-contained copy
        assert capsys.readouterr().out.startswith("ok: 5 events intact (seq 1..5)")
        assert not Path(f"{backup}-wal").exists()
    else:
        rows = [json.loads(line) for line in backup.read_text().splitlines()]
        assert [(row["table"], row["seq"]) for row in rows] == [("event_log", seq) for seq in range(1, 6)]
        assert rows[2]["payload"] == entry(3).payload  # byte for byte


def test_drop_log_default_backup_sits_beside_the_sqlite_file(sqlite_url: str) -> None:
    _with_events(sqlite_url)
    written = migrate.downgrade(sqlite_url, "base", drop_log=True)
    assert written is not None and written.parent == Path(sqlite_url.removeprefix("sqlite:///")).parent
    assert written.name.startswith("tracker.db.before-downgrade-") and written.suffix == ".db"


def test_backup_refuses_to_overwrite(sqlite_url: str, tmp_path: Path) -> None:
    _with_events(sqlite_url)
    taken = tmp_path / "taken.db"
    taken.write_text("mine")
    with pytest.raises(StoreError, match="exists already"):
        migrate.downgrade(sqlite_url, "base", drop_log=True, backup_to=taken)
    assert taken.read_text() == "mine"
    assert _row_count(sqlite_url) == 5


def test_plain_alembic_cannot_drop_the_log_either(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 0001 guards itself: the plain ``alembic`` CLI needs ``-x drop_log=yes``."""
    _with_events(sqlite_url)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    monkeypatch.setenv("TRACKER_DB_URL", sqlite_url)
    try:
        with pytest.raises(StoreError, match=r"refusing to drop the event log: it holds 5 event\(s\)"):
            alembic_main(["-c", str(REPO / "alembic.ini"), "downgrade", "base"])
        assert _row_count(sqlite_url) == 5
        alembic_main(["-c", str(REPO / "alembic.ini"), "-x", "drop_log=yes", "downgrade", "base"])
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert _tables(sqlite_url) <= {"alembic_version"}


def _row_count(url: str) -> int:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(event_log)).scalar_one())
    finally:
        engine.dispose()
