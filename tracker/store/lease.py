"""The writer's lease: at most one ``tracker run`` writes an account's frames at a time.

- **PostgreSQL**: a session-level advisory lock, key = a stable 64-bit hash of ``tracker:<account>``, held on a
  connection of its own for the life of the run. Several accounts can share one database (different keys); a second
  ``tracker run`` for the same account polls ``pg_try_advisory_lock`` as a hot standby. When the holder dies, even by
  ``kill -9``, the kernel closes its socket, PostgreSQL ends the session and releases the lock, and the standby's next
  poll gets it. The lock is never taken inside a transaction (it would not outlive it otherwise, and a transaction
  would pin the connection); the connection runs in autocommit.
- **SQLite**: one writer per database file: an exclusive ``flock`` on ``<db>.lock`` (with the holder's pid written in
  it for the message). The kernel drops a ``flock`` when the process dies, so a crash never leaves a stale lock.
  There is no standby on SQLite: a second writer is refused at once.

These are blocking calls: the runtime runs them in worker threads (``tracker/runtime/lease.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, exc, text

from tracker.errors import StoreError
from tracker.store.engine import sqlite_path
from tracker.store.errors import translate_db_errors


class LeaseLost(StoreError):
    """Another process holds the lease this run had: it must stop writing at once."""


def lease_key(account: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (the same in every process and Python version)."""
    digest = hashlib.blake2b(f"tracker:{account}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The holder's session as pg_locks shows it: a bigint advisory key is split into classid (high 32 bits) and objid
# (low 32 bits), with objsubid 1. pg_locks and pg_stat_activity show the whole server; an advisory lock is one
# database's (the same key in another database is another lock, another tracker's), so both are narrowed to this one.
_THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"
_HOLDER = text(
    "SELECT a.pid, a.application_name, a.client_addr::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    f" WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = {_THIS_DATABASE}"
    " AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid) LIMIT 1"
)


class PgLease:
    """The advisory lock of one account, on a dedicated autocommit connection (opened lazily, reopened after a loss)."""

    def __init__(self, engine: Engine, account: str) -> None:
        self.engine = engine
        self.account = account
        self.key = lease_key(account)
        self._conn: Connection | None = None
        self.held = False

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                # Shown to a standby (and in pg_stat_activity): which process holds the account.
                conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": self.label()})
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def label(self) -> str:
        return f"tracker run pid {os.getpid()} account {self.account}"

    @contextlib.contextmanager
    def _lease_call(self) -> Iterator[None]:
        """A call on the lease connection: a failure forgets the connection (the next call opens a new one) and is
        raised as ``store.errors`` judges it (``DatabaseUnavailable`` while the database is down)."""
        try:
            with translate_db_errors():
                yield
        except Exception:
            self._drop()
            raise

    def try_acquire(self) -> bool:
        """Take the lock if it is free (never blocks); True when this process holds it."""
        if self.held:
            return True
        with self._lease_call():
            got = self._connection().execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one()
        self.held = bool(got)
        return self.held

    def holder(self) -> str | None:
        """Who holds the lock now (its ``application_name`` and backend pid), for the standby's message."""
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        params = {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF}
        with self._lease_call():
            row = self._connection().execute(_HOLDER, params).first()
        if row is None:
            return None
        pid, name, addr = row
        return f"{name or 'a session'} (backend pid {pid}{', from ' + addr if addr else ''})"

    def check(self) -> bool:
        """True while the lease connection is alive and still holds the lock; False (and forgets the connection) when
        it is gone: a session that ended has lost its advisory locks with it."""
        if self._conn is None or not self.held:
            return False
        try:
            alive = self._conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
                    " AND objsubid = 1 AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid)"
                ),
                {"hi": (self.key & 0xFFFF_FFFF_FFFF_FFFF) >> 32, "lo": self.key & 0xFFFF_FFFF},
            ).scalar_one()
        except exc.DBAPIError:
            self._drop()
            return False
        if not alive:
            self._drop()
        return bool(alive)

    def _drop(self) -> None:
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except exc.DBAPIError:
                pass

    def release(self) -> None:
        if self._conn is not None and self.held:
            with contextlib.suppress(exc.DBAPIError):  # the session is gone: so is the lock
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        self.held = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(exc.DBAPIError):
                # The connection goes back to the engine's pool: without its name, which says "a tracker run's lease
                # connection" to `tracker status` (a standby) and to a standby (the holder).
                conn.execute(text("RESET application_name"))
            with contextlib.suppress(exc.DBAPIError):
                conn.close()


class SqliteFileLock:
    """One writer per SQLite file: an exclusive ``flock`` on ``<db>.lock``, released when the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreError`` naming the process that holds it."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise StoreError(
                f"another tracker run is writing to {self.path.name}{who}: stop it first, "
                "or use PostgreSQL for a hot standby"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Only the holder writes the file, after it has the lock: a refused process never truncates it.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


@dataclass(frozen=True, slots=True)
class Writer:
    """Who holds a writer lock now, as ``tracker status`` shows it: the SQLite file's, or an account's lease on
    PostgreSQL. ``pid`` and ``backend_pid`` None: nobody does (no ``tracker run`` writes it)."""

    pid: int | None  # the holding ``tracker run`` (None with a ``backend_pid``: a session whose name is hidden)
    backend_pid: int | None = None  # PostgreSQL: the holder's session
    standbys: tuple[int, ...] = ()  # PostgreSQL: ``tracker run`` processes waiting for the lease (their pids)


_TRACKER_SESSION = re.compile(r"^tracker run pid (\d+) account (\S+)$")  # ``PgLease.label``


def lease_writers(conn: Connection, accounts: Iterable[str]) -> dict[str, Writer]:
    """Per account, who holds its lease now and which ``tracker run`` sessions wait for it (their lease connections
    are named by ``PgLease.label``). Read from ``pg_locks`` and ``pg_stat_activity`` in one query each, this
    database's only: a holder whose session name another role cannot read (``pg_stat_activity`` hides it) shows with
    its backend pid only."""
    wanted = {lease_key(account) & 0xFFFF_FFFF_FFFF_FFFF: account for account in accounts}
    held = conn.execute(
        text(
            "SELECT l.classid::bigint, l.objid::bigint, l.pid, a.application_name"
            " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid IS NOT NULL"
            f" AND l.database = {_THIS_DATABASE}"
        )
    ).all()
    holders: dict[str, tuple[int | None, int]] = {}
    for hi, lo, backend, name in held:
        account = wanted.get((int(hi) << 32) | int(lo))
        if account is not None:
            found = _TRACKER_SESSION.match(name or "")
            holders[account] = (int(found.group(1)) if found else None, int(backend))
    waiting: dict[str, list[int]] = {}
    holder_backends = {backend for _, backend in holders.values()}
    sessions = conn.execute(
        text(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE 'tracker run pid %'"
            " AND datname = current_database()"
        )
    ).all()
    for backend, name in sessions:
        found = _TRACKER_SESSION.match(name or "")
        if found and backend not in holder_backends and found.group(2) in wanted.values():
            waiting.setdefault(found.group(2), []).append(int(found.group(1)))
    out = {}
    for account in wanted.values():
        pid, backend = holders.get(account, (None, None))
        out[account] = Writer(pid, backend, tuple(sorted(waiting.get(account, ()))))
    return out


def file_writer(path: Path, *, locks: Path = Path("/proc/locks")) -> Writer:
    """Who holds the SQLite file's writer lock now (``SqliteFileLock``). The holder writes its pid in the lock file
    and empties it at its stop; after a ``kill -9`` the pid stays but the kernel has dropped the lock, so the lock
    itself is looked up in ``/proc/locks`` (Linux); elsewhere, whether that pid is still a process."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        written = lock_path.read_text(errors="replace").strip()
        stat = lock_path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return Writer(None)
    pid = int(written) if written.isdigit() else None
    try:
        table = locks.read_text()
    except OSError:
        return Writer(pid if pid is not None and _alive(pid) else None)
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}"
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (a blocked waiter's line has "->" after the number)
        fields = line.split()
        if "FLOCK" not in fields or "->" in fields or len(fields) < 6:
            continue
        holder, (on, _, inode) = fields[4], fields[5].rpartition(":")
        if inode != str(stat.st_ino) or not holder.isdigit():
            continue
        # The device as the kernel names it can differ from stat's on a stacked filesystem (overlayfs): the same inode
        # with the pid the holder wrote is the lock too.
        if on == device or int(holder) == pid:
            return Writer(int(holder))
    return Writer(None)


def file_lock_taken_at(path: Path) -> datetime | None:
    """When the SQLite file's writer lock was last taken: its holder writes its pid in the lock file on taking it
    and nothing writes it while held, so the file's modification time (None: no lock file). Tells a holder's own
    records from a dead process's that had the same pid (a restarted container's tracker is often pid 1 again): those
    are older. The kernel stamps files with a coarse clock, never ahead of the writer's own later ``now()``."""
    try:
        mtime_ns = path.with_name(path.name + ".lock").stat().st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_lock_for(engine: Engine) -> SqliteFileLock | None:
    """The per-file writer lock of a SQLite engine; None for PostgreSQL and in-memory databases."""
    path = sqlite_path(engine.url)
    return None if path is None else SqliteFileLock(path)


def account_lease_for(engine: Engine, account: str) -> PgLease | None:
    """The account lease on PostgreSQL (None elsewhere: SQLite is covered by its file lock)."""
    return PgLease(engine, account) if engine.dialect.name == "postgresql" else None
