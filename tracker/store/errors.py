"""Database errors as the rest of tracker sees them: SQLAlchemy's and the drivers' exceptions are judged here, once.

    TrackerError                     (tracker/errors.py) printed as one ``tracker: error:`` line
    └── StoreError                   the database refused or is unusable: the message says what to do (exit 2)
        ├── DatabaseUnavailable      the connection was lost or refused, SQLite stayed locked past its busy
        │                            timeout, or the disk is full: transient, the runtime retries (writer, lease,
        │                            restarted tasks) with what it holds
        ├── DatabaseDamaged          a damaged file or page (``is_damage``): never retried, never written over;
        │                            restore it from a backup (store/integrity.py checks a whole file)
        └── LeaseLost                another process took this account's writer lease (store/lease.py)

``translate_db_errors`` turns a transient ``sqlalchemy.exc.DBAPIError`` into ``DatabaseUnavailable`` (``raise ...
from``: the original stays as ``__cause__``) at the entry points the long-running tasks call; everything else (an
integrity error, a missing table, a damaged file) passes through unchanged, as the programming or data error it is.
``is_transient`` answers the one question the runtime asks ("retry this?") for either form, so no code outside
``store/`` looks at a driver's exception.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc

from tracker.errors import StoreError

SQLITE_CORRUPT = 11
SQLITE_FULL = 13  # "database or disk is full": the disk, or the file's page limit (``PRAGMA max_page_count``)
SQLITE_NOTADB = 26
PG_DAMAGE_STATES = ("XX001", "XX002")  # data_corrupted, index_corrupted
PG_DISK_FULL = "53100"  # disk_full: the server could not extend a file


class DatabaseUnavailable(StoreError):
    """The database cannot be reached right now (connection lost or refused, or locked past the busy timeout)."""


class DatabaseDamaged(StoreError):
    """The database file (or a page of it) is damaged: restore it from a backup."""


def is_damage(error: BaseException) -> bool:
    """True for a damaged file or page, on either backend (wrapped by SQLAlchemy or not)."""
    orig = error.orig if isinstance(error, exc.DBAPIError) else error
    if isinstance(orig, sqlite3.DatabaseError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
        text_ = str(orig)
        return "malformed" in text_ or "file is not a database" in text_
    return getattr(orig, "sqlstate", None) in PG_DAMAGE_STATES


def is_disk_full(error: BaseException) -> bool:
    """True for a full disk, on either backend and wrapped or not: ``ENOSPC``, SQLite's ``SQLITE_FULL``, PostgreSQL's
    ``disk_full``, or a rebuild worker's report of one (it arrives as text: ``rebuild_parallel.run_worker``)."""
    for cause in (error, getattr(error, "orig", None), error.__cause__):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        if isinstance(cause, sqlite3.Error) and (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF == SQLITE_FULL:
            return True
        if getattr(cause, "sqlstate", None) == PG_DISK_FULL:
            return True
    return isinstance(error, StoreError) and "database or disk is full" in str(error)


def first_line(error: BaseException) -> str:
    """The first non-blank line of a (driver's) error message: no parameters, which may hold frames."""
    orig = error.orig if isinstance(error, exc.DBAPIError) else error
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def _transient_dbapi(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return isinstance(error, (exc.OperationalError, exc.InterfaceError))
    return False


def describe_db_error(error: BaseException) -> str:
    """One line about a database error, never the parameters (which may hold frames) or a password."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    if isinstance(error, DatabaseUnavailable) and error.__cause__ is not None:
        error = error.__cause__
    orig: Any = getattr(error, "orig", None) or error
    return f"{type(orig).__name__}: {first_line(orig)}"


def why_unavailable(error: BaseException) -> str:
    """What a transient failure means for the log line of a task that waits it out: a full disk says what to do (the
    database cannot write until space is freed: SQLite's file's disk, or the PostgreSQL server's)."""
    if is_disk_full(error):
        return f"the database's disk is full ({describe_db_error(error)}): free space on it"
    return f"database unavailable ({describe_db_error(error)})"


def is_transient(error: BaseException) -> bool:
    """A database failure worth retrying: ``DatabaseUnavailable``, or an untranslated driver error of that kind. An
    exception group is transient when every failure in it is. Integrity errors, missing tables and programming errors
    are not."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_transient(inner) for inner in error.exceptions)
    return isinstance(error, DatabaseUnavailable) or _transient_dbapi(error)


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Raise a transient driver error as ``DatabaseUnavailable`` (one line, no parameters), anything else as it is."""
    try:
        yield
    except exc.DBAPIError as error:
        if _transient_dbapi(error):
            raise DatabaseUnavailable(why_unavailable(error)) from error
        raise
