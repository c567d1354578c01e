"""Rows a running process keeps about itself (``accounts_down``, ``task_failures``: runtime state, not the log), and
how a reader tells a live process's rows from a dead one's.

Each process writes under a token of its own (``process``) and replaces all its rows in one transaction at every
change; it deletes them at its stop. On PostgreSQL it holds a lock named after its token (``process_lock_name``, a
``PgLease``) from before its first row until after its rows are deleted, so a row whose lock nobody holds is a
``kill -9``'s. On SQLite one process writes the file (its writer lock), so it may delete every other process's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, insert, select

from tracker.store.errors import translate_db_errors
from tracker.store.lease import Writer, lease_writers


def process_lock_name(process: str) -> str:
    """The name whose writer lease (``PgLease``, ``lease_writers``) is a process's own on PostgreSQL: held while it
    lives, so its rows are its current word."""
    return f"process:{process}"


def replace_process_rows(
    engine: Engine, table: Table, process: str, rows: Sequence[Mapping[str, Any]], *, sole_writer: bool
) -> None:
    """Make process ``process``'s rows of ``table`` exactly ``rows`` (each with its ``process``), in one
    transaction. ``sole_writer`` (SQLite, whose file lock this process holds): every other process's rows go too,
    for no other one runs."""
    with translate_db_errors(), engine.begin() as conn:
        conn.execute(delete(table) if sole_writer else delete(table).where(table.c.process == process))
        if rows:
            conn.execute(insert(table), list(rows))


def sweep_dead_rows(engine: Engine, table: Table, own: str) -> int:
    """PostgreSQL: delete the rows of ``table`` of processes that no longer hold their lock (a ``kill -9``'s: its
    session ended, and its lock with it), all but process ``own``'s; how many went. A live process takes its lock
    before it writes a row and deletes its rows before it lets the lock go, so a row read here whose lock is free is
    a dead one's. ``tracker status`` never shows such rows: this only keeps the table from growing by a few rows per
    killed run."""
    with translate_db_errors(), engine.begin() as conn:
        processes = set(conn.execute(select(table.c.process).distinct()).scalars()) - {own}
        dead = sorted(processes - live_processes(conn, processes))
        if not dead:
            return 0
        return conn.execute(delete(table).where(table.c.process.in_(dead))).rowcount


def live_processes(conn: Connection, processes: Iterable[str]) -> set[str]:
    """PostgreSQL: which of ``processes`` still hold their own lock (``process_lock_name``)."""
    names = {process_lock_name(p): p for p in processes}
    return {names[name] for name, writer in lease_writers(conn, names).items() if held(writer)}


def held(writer: Writer) -> bool:
    """Whether someone holds the lock ``writer`` describes."""
    return writer.pid is not None or writer.backend_pid is not None
