"""Schema migrations through Alembic's command API, sharing ``migrations/env.py`` with the plain ``alembic`` CLI.

The migrations live in the repository's top-level ``migrations/`` directory, found relative to this package: that
works from a checkout and an editable install (a wheel would need them packaged; not done yet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from tracker.errors import StoreError
from tracker.store.backup import back_up_truth, default_backup_path, truth_counts
from tracker.store.engine import display_url, open_engine, sqlite_path, writer

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreError(f"the migrations directory {MIGRATIONS_DIR} is missing: install tracker from its repository")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


@contextmanager
def _engine(target: str | URL | Engine, *, write: bool = True) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = open_engine(target, write=write)
    try:
        yield engine
    finally:
        engine.dispose()


def _run(target: str | URL | Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with _engine(target) as engine, writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    _run(target, "upgrade", revision)


# Set in the Alembic config's attributes when the caller has written a backup and may drop the log; migration 0001's
# downgrade refuses to drop a non-empty log without it (the plain ``alembic`` CLI: ``-x drop_log=yes``).
DROP_LOG_ATTRIBUTE = "tracker_drop_log"
LOG_REVISION = "0001"  # the revision whose downgrade drops event_log and quarantine


class LogWouldBeDropped(StoreError):
    """A downgrade would drop a non-empty event log and ``drop_log`` was not given."""


def _drops_log(config: Config, have: str | None, revision: str) -> bool:
    if have is None:
        return False
    try:
        steps = ScriptDirectory.from_config(config).iterate_revisions(have, revision)
        return any(step.revision == LOG_REVISION for step in steps)
    except Exception:  # a relative or unusual target alembic resolves later: assume the worst, check the rows
        return True


def downgrade(
    target: str | URL | Engine, revision: str, *, drop_log: bool = False, backup_to: Path | None = None
) -> Path | None:
    """Migrate back to ``revision``. Dropping a non-empty log (``base``) needs ``drop_log=True``; then a backup is
    written first (``backup.py``, in the same transaction) and its path returned. Raises ``LogWouldBeDropped``
    otherwise. Projections are derived data and are dropped without asking (``tracker rebuild`` makes them again)."""
    config = alembic_config()
    with _engine(target) as engine, writer(engine).begin() as connection:
        written = None
        if _drops_log(config, current_of(connection), revision):
            counts = truth_counts(connection)
            if not counts.empty:
                if not drop_log:
                    raise LogWouldBeDropped(
                        f"refusing to downgrade {display_url(engine.url)} to {revision}: that drops the event log,"
                        f" which holds {counts.describe()} (the log is the truth; projections can be rebuilt, the"
                        " log cannot). To drop it anyway add --drop-log: tracker first writes a backup and names it"
                    )
                written = back_up_truth(connection, backup_to or default_backup_path(connection), counts)
                config.attributes[DROP_LOG_ATTRIBUTE] = True
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
    return written


def current_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current(target: str | URL | Engine) -> str | None:
    """The database's revision, ``None`` when it was never migrated (or, for SQLite, does not exist yet)."""
    if not isinstance(target, Engine) and (path := sqlite_path(target)) is not None and not path.exists():
        return None
    with _engine(target, write=False) as engine, engine.connect() as connection:
        return current_of(connection)


def check_schema(engine: Engine) -> None:
    """Raise ``StoreError`` unless the database is at the newest revision."""
    need = head_revision()
    have = current(engine)
    if have != need:
        raise StoreError(
            f"the database at {display_url(engine.url)} is not migrated (at revision {have or 'none'}, need {need}):"
            " run `tracker db upgrade`"
        )
