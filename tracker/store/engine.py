"""Engine set-up for SQLite and PostgreSQL, and the one place database connection failures become ``StoreError``.

SQLite: WAL (readers never block the writer), ``busy_timeout`` 30 s, foreign keys on, ``synchronous=FULL`` (a
committed append survives power loss; NORMAL is faster but may lose the last commits). pysqlite's own transaction
handling is switched off (``isolation_level=None``) and we emit ``BEGIN`` ourselves, the recipe in SQLAlchemy's
"Serializable isolation / Savepoints / Transactional DDL" section. A connection with the execution option
``tracker_write=True`` (see ``writer()``) begins with ``BEGIN IMMEDIATE``: it takes the write lock before it reads the
head, so two appenders cannot both read the same head (a deferred transaction would fail with SQLITE_BUSY on upgrade).
Every SQLite connection also gets exact ``sum``/``total``/``decimal_sum`` over decimal text (``sqlite_money.py``).

PostgreSQL: ``pool_pre_ping``; the appender serialises itself with a table lock (see ``event_log.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from sqlalchemy import Engine as Engine  # re-exported: the database handle the other layers pass around, opaque
from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, make_url

from tracker.errors import StoreError
from tracker.store.errors import DatabaseDamaged, first_line, is_damage
from tracker.store.sqlite_money import register_exact_sums

log = logging.getLogger("tracker.store")

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "tracker_write"
SCRATCH_CACHE_MIB = 32  # page cache of a scratch database (SQLite's default is 2 MiB)
SQLITE_PAGE_SIZE = 8192  # bytes, for new files (SQLite's default: 4096); see _setup_sqlite


def display_url(url: str | URL) -> str:
    """The URL without its password, for messages."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "(unparsable URL)"
    return parsed._replace(password=None).render_as_string(hide_password=False)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL (``None`` for other backends and in-memory databases)."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _check_sqlite_path(url: URL, *, write: bool) -> None:
    path = sqlite_path(url)
    if path is None:
        return
    directory = path.parent if str(path.parent) else Path()
    if not directory.is_dir():
        raise StoreError(f"cannot open the SQLite database {path}: the directory {directory} does not exist")
    if not write:
        if not path.exists():
            raise StoreError(
                f"the SQLite database {path} does not exist: run `tracker db upgrade` (or check TRACKER_DB_URL)"
            )
        return
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"cannot write the SQLite database {path}: permission denied (check the file's owner and mode)"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite needs the directory too: for the file itself, the WAL and the shared-memory index.
        raise StoreError(f"cannot write in {directory}, where the SQLite database {path} lives: permission denied")


def read_only_opener(path: Path) -> Callable[[], sqlite3.Connection]:
    """Connections that never write ``path`` and work where its directory is read-only (an audit copy on read-only
    media, a snapshot): ``file:...?mode=ro``, which still needs the WAL's companions. Where they cannot be made:

    - no ``-wal`` file and a directory we cannot write: ``immutable=1``. A WAL database that nobody has open has no
      ``-wal`` file (the last connection checkpoints and removes it), so the main file is the whole database. Immutable
      also means SQLite will not notice a writer that starts meanwhile: we say so in a warning.
    - a ``-wal`` file but no ``-shm`` and a directory we cannot write: SQLite cannot read the WAL (and ``immutable``
      would silently ignore the commits in it), so the two files are copied into a private temporary directory and the
      copy is read; we say so. The copy lives as long as the engine and the process.
    """
    directory = path.parent if str(path.parent) else Path()
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    query = "mode=ro"
    source = path
    scratch = None
    if not os.access(directory, os.W_OK | os.X_OK) and not (wal.exists() and shm.exists()):
        if not wal.exists():
            query = "mode=ro&immutable=1"
            log.warning(
                "%s: the directory is read-only and there is no -wal file: reading the file as immutable"
                " (correct while nothing writes it; a tracker run that starts meanwhile would not be seen)",
                path,
            )
        else:
            scratch = tempfile.TemporaryDirectory(prefix="tracker-ro-")
            source = Path(scratch.name) / path.name
            shutil.copyfile(path, source)
            shutil.copyfile(wal, Path(f"{source}-wal"))
            log.warning(
                "%s: the directory is read-only and has a -wal file but no -shm: reading a private copy in %s",
                path,
                scratch.name,
            )
    return _Opener(f"file:{quote(str(source.resolve()))}?{query}", scratch)


@dataclass(frozen=True)
class _Opener:
    uri: str
    scratch: tempfile.TemporaryDirectory[str] | None  # the private copy, kept as long as the engine can connect

    def __call__(self) -> sqlite3.Connection:
        return sqlite3.connect(self.uri, uri=True, check_same_thread=False)


def open_scratch(path: Path) -> Engine:
    """A throwaway SQLite database at ``path`` (``tracker rebuild``'s shadow tables): the rollback journal in memory
    and no fsync, so a crash may leave it corrupt. Only for files that are deleted after use and before reuse."""
    engine = create_engine(URL.create("sqlite", database=str(path)))
    _setup_sqlite(engine, "OFF", journal="MEMORY", cache_mib=SCRATCH_CACHE_MIB)
    return engine


def _setup_sqlite(
    engine: Engine, synchronous: str, *, journal: str | None = "WAL", cache_mib: int | None = None
) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see the module docstring)
        cursor = dbapi_connection.cursor()
        if journal is not None:  # None: a read-only connection, which must not (and cannot) change the file's mode
            # A new file gets 8 KiB pages (before anything is written, the journal mode included; on a file with
            # content this is a no-op): rows of ~1 KB leave less slack in 8 KiB pages, 1,037 -> 982 bytes per event
            # of the event log's table, and one 2-row append costs 0.46 -> 0.49 ms p50 (p99 2.4 -> 1.1-1.8 ms):
            # docs/storage.md "What the log costs on disk".
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE:d}")
            cursor.execute(f"PRAGMA journal_mode={journal}")
        if cache_mib is not None:
            cursor.execute(f"PRAGMA cache_size=-{cache_mib * 1024:d}")  # negative: KiB
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()
        register_exact_sums(dbapi_connection)  # exact SUM over money stored as decimal text (docs/sql.md)

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _setup_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect", insert=True)
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # psycopg prepares a statement after 5 runs and PostgreSQL may then keep a generic plan made while the log
        # was empty (a sequential scan), so the per-batch dedup lookup grew to ~30 ms at 20k rows in the benchmark.
        # Custom plans see the real key list and use the unique index; planning these small queries is cheap.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.autocommit = autocommit


def open_engine(url: str | URL, *, write: bool = True, sqlite_synchronous: str = "FULL", accounts: int = 1) -> Engine:
    """An engine for ``url``, checked by one connection; failures raise ``StoreError`` with the fix in one line.

    ``write=False`` (for read-only commands like ``tracker verify``) does not require write permission and does not
    create a missing SQLite file. ``accounts``: how many accounts this process tracks (``tracker run`` with several):
    on PostgreSQL each holds a connection for its lease while it runs, so the pool holds that many more than
    SQLAlchemy's default (5, and 10 more when busy).
    """
    if sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA, got {sqlite_synchronous!r}")
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise StoreError(
            f"TRACKER_DB_URL is not a database URL ({error}): use sqlite:///path or postgresql://..."
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _check_sqlite_path(parsed, write=write)
        path = sqlite_path(parsed)
        if write or path is None:
            engine = create_engine(parsed)
            _setup_sqlite(engine, sqlite_synchronous.upper())
        else:
            engine = create_engine(parsed, creator=read_only_opener(path))
            _setup_sqlite(engine, sqlite_synchronous.upper(), journal=None)
    elif backend == "postgresql":
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=4 + accounts, max_overflow=10)
        _setup_postgres(engine)
    else:
        raise StoreError(f"unsupported database {backend!r} in {display_url(parsed)}: use sqlite:/// or postgresql://")
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as error:
        engine.dispose()
        if is_damage(error) and path is not None and not _sqlite_header(path):
            raise DatabaseDamaged(
                f"{path} is not a SQLite database, or its header is damaged ({first_line(error)}): check the path"
                " (TRACKER_DB_URL); if it is your database, restore it from a backup"
            ) from None
        if is_damage(error):
            raise DatabaseDamaged(
                f"the database at {display_url(parsed)} is damaged ({first_line(error)}): restore it from a backup"
            ) from None
        raise StoreError(
            f"cannot connect to the database at {display_url(parsed)}: {_reason(error, parsed)}; check TRACKER_DB_URL"
        ) from None
    return engine


SQLITE_HEADER: Final = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def _sqlite_header(path: Path) -> bool:
    """Whether ``path`` starts as a SQLite database does (a damaged one still does; a CSV or a log file does not). An
    empty file is a new database, which SQLite makes its own."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:
        return True  # unreadable: the error is SQLite's to tell
    return head in (b"", SQLITE_HEADER)


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock at BEGIN on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _reason(error: exc.DBAPIError, url: URL) -> str:
    """The driver's message, one line, never the password."""
    lines = [line.strip() for line in str(error.orig).splitlines() if line.strip()]
    text = lines[0] if lines else type(error.orig).__name__
    if (
        "failed:" in text
    ):  # psycopg: 'connection failed: connection to server at "...", port 1 failed: Connection refused'
        text = text.rsplit("failed:", 1)[1].strip() or text
    if url.password:
        text = text.replace(url.password, "***")
    return text.rstrip(".").lower() if text[:1].isupper() and text[1:2].islower() else text.rstrip(".")
