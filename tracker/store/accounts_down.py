"""The accounts a running ``tracker run`` has given up as down (``[[accounts]]``), for ``tracker status``.

A process of several accounts marks one down when its service ends on an error of its own, logs why at ERROR and
tries it again after a back-off (``tracker/runtime/account_supervisor.py``). Its rows here say the same: per account
(its place in the file) why, since when, how many failures, and when it is tried next; once it is tracked again,
since when (``back_at``), with its last spell down, until it goes down again or the process stops. The process
replaces its rows at every change (``replace_own``) and deletes them at its stop; ``tracker status`` reads them
(``read_down``) and keeps those of live processes (``tracker/store/status.py``).

Why a table of runtime state and not ``account_down``/``account_up`` entries in the event log:

- The log is what the exchange said and what tracker saw of an account's streams, keyed by the Bitstamp user id.
  A key refused at the process's start never said which user it is: such an entry would have no account to go
  under, and one under a made-up name would be a phantom account in every reader of the log.
- When an account goes down its service, writer and (PostgreSQL) lease have just ended. An entry written then is a
  write without the lease; and when the failure is that another process took the lease, that process tracks the
  account: "down" would be false, in a record that is never corrected.
- "Tried next at" changes at every try (every few minutes for a key that stays revoked): not a fact to keep forever,
  and an entry per try would bury the log's own entries.
- Whether the process that said "down" still runs is not in any row: after a ``kill -9`` its last word stays. Either
  design needs a lock to tell; a table lets the live process replace and delete its words.

What the auditor needs is in the log all the same, written when it can be written right: the failed service's
connections are logged ``closed`` with the error as their reason (by its own writer, before it ends), and when the
account is back its start-up backfill logs the gap from its last entry, with why it was down as the gap's detail
(``account down in this run: <reason>``), under the account's own writer and lease, its user known again; then
fills it. So the audit shows the window the account was not tracked in, and why, and the log never says "down" of
an account another process was tracking, nor of one whose key never said who it is.

Trusted only while its process holds its lock, so a dead process's rows are never shown as current:

- SQLite: the file's writer lock (one ``tracker run`` per file: ``file_writer``) held by the row's pid, and the row
  written since that lock was taken (``file_lock_taken_at``: a dead process's rows are older, whatever its pid was).
  A multi-account run also deletes every other process's rows when it starts: a dead one's.
- PostgreSQL (processes share a database): each process holds an advisory lock of its own (``process_lock_name``)
  while it has rows here, on a connection of its own; ``kill -9`` ends the session, and the lock with it. A row is
  also not shown for an account whose writer lease another process holds (it tracks that account). The next process
  that writes rows deletes those whose lock is gone first (``sweep_dead``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from tracker.store.process_rows import process_lock_name, replace_process_rows, sweep_dead_rows
from tracker.store.runtime_schema import accounts_down

__all__ = ["AccountDown", "process_lock_name", "read_down", "replace_own", "sweep_dead"]


@dataclass(frozen=True, slots=True)
class AccountDown:
    """One account a process has given up as down, and when it tries it again; or, once back, its last spell down."""

    place: int  # its place in [[accounts]] (``account N of [[accounts]]``), from 1
    user: str | None  # the Bitstamp account it tracked last; None: its key never said
    reason: str
    since: datetime  # the first failure of this spell
    failures: int
    retry_at: datetime | None  # None: not known yet
    pid: int = 0  # the process that says so
    process: str = ""  # its token (``replace_own``)
    back_at: datetime | None = None  # tracked again since (then ``reason`` is why it was down); None: down now
    updated_at: datetime | None = None  # when the process last wrote its rows


def replace_own(
    engine: Engine, process: str, pid: int, down: Sequence[AccountDown], now: datetime, *, sole_writer: bool
) -> None:
    """Make process ``process``'s rows exactly ``down``, in one transaction. ``sole_writer`` (SQLite, whose file lock
    this process holds): every other process's rows go too, for no other one runs."""
    rows = [
        {
            "process": process,
            "place": one.place,
            "pid": pid,
            "user_id": one.user,
            "reason": one.reason,
            "since": one.since,
            "failures": one.failures,
            "retry_at": one.retry_at,
            "back_at": one.back_at,
            "updated_at": now,
        }
        for one in down
    ]
    replace_process_rows(engine, accounts_down, process, rows, sole_writer=sole_writer)


def sweep_dead(engine: Engine, own: str) -> int:
    """PostgreSQL: delete the rows of processes that no longer hold their lock, all but ``own``'s; how many went
    (``process_rows.sweep_dead_rows``)."""
    return sweep_dead_rows(engine, accounts_down, own)


def read_down(conn: Connection) -> list[AccountDown]:
    """Every row, whoever wrote it (``tracker status`` keeps the ones whose process still holds its lock), by
    process and place."""
    t = accounts_down
    rows = conn.execute(select(t).order_by(t.c.pid, t.c.process, t.c.place)).mappings()
    return [
        AccountDown(
            r["place"],
            r["user_id"],
            r["reason"],
            r["since"],
            r["failures"],
            r["retry_at"],
            r["pid"],
            r["process"],
            r["back_at"],
            r["updated_at"],
        )
        for r in rows
    ]
