"""Migrations: models and migrations do not drift; upgrade -> downgrade -> upgrade works; the CLIs share env.py.

Rules: local databases only (``db_url`` runs each test on SQLite and PostgreSQL).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import main as alembic_main
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, Table, inspect

from tracker.cli import main
from tracker.errors import StoreError
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.schema import load_all_tables

REPO = Path(__file__).resolve().parents[1]


def _tables(url: str) -> set[str]:
    engine = open_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, load_all_tables())
    finally:
        engine.dispose()
    assert diff == []


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
            diff = compare_metadata(MigrationContext.configure(conn), extended)
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
