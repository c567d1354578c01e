"""Shared fixtures. Rules for every test module here:

- Loopback only, port 0 for every server, an absolute timeout on every I/O test (pytest-timeout), no sleep used as
  synchronisation, ``autojump_clock`` for anything timed.
- Storage tests take ``db_url``, parametrised over SQLite and PostgreSQL (or ``migrated_engine``: an engine on it,
  migrated). Each PostgreSQL test gets its own schema in a database created for this pytest run, so concurrent runs
  never collide. Under ``CI=true`` an unreachable PostgreSQL fails the test; elsewhere it is skipped with the reason.
- Every test may run beside any other: the README's command runs the suite in two pytest-xdist workers (each worker
  its own PostgreSQL database, every test its own directory and ports), the longest tests first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from store_helpers import PG_ADMIN_URL, open_log, upgrade_fresh

from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _pg_connect(dbname: str | None = None):  # type: ignore[no-untyped-def]
    import psycopg

    url = PG_ADMIN_URL if dbname is None else PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_database() -> str:
    """A fresh PostgreSQL database for this pytest run; dropped at the end."""
    try:
        admin = _pg_connect()
    except Exception as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must not be skipped)")
        pytest.skip(message)
    name = f"tracker_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    _CREATED.append(name)
    return name


# Dropped in ``pytest_sessionfinish``, not in the fixture's teardown: a session fixture's teardown runs inside the last
# test's, under that test's pytest-timeout, and ``DROP DATABASE`` waits for a checkpoint, which took over 20 s on a
# loaded machine (the last test then failed at its teardown).
_CREATED: list[str] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _CREATED:
        with _pg_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{_CREATED.pop()}" WITH (FORCE)')


def pg_url_for_schema(database: str, schema: str) -> str:
    base = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0]
    return f"{base}/{database}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    database = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with _pg_connect(database) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return pg_url_for_schema(database, schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracker.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend (not migrated: tests/store_helpers.py has open_log, which migrates)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def migrated_engine(db_url: str) -> Iterator[Engine]:
    """Tracker's engine on ``db_url``'s database, migrated to the head revision (so on each backend)."""
    upgrade_fresh(db_url)  # SQLite: a copy of a file this process migrated once (store_helpers.py)
    engine = open_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def pg_log(pg_url: str) -> Iterator[EventLog]:
    """An event log on a freshly migrated PostgreSQL schema."""
    with open_log(pg_url) as log:
        yield log


# The longest tests, started first: with ``-n`` (pytest-xdist, two workers in CI) a 2-minute soak collected last would
# run alone at the end; first, the other worker runs the rest beside it. Their order among themselves is kept. With
# this order the default ``--dist load`` ends within ~10 s of half the tests' summed time (360.8 s for 701 s, measured
# 2026-12-07): ``--dist worksteal`` took the same (362.3 s for 703 s), so the README's command keeps the default.
_LONGEST = ("tests/test_soak.py", "tests/test_crash_recovery.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(_LONGEST))
