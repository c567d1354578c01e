"""The accounts this process has given up as down, kept in the database for ``tracker status``.

``open_down_board`` runs beside the accounts of ``run_accounts``: whenever one goes down or up, or its next try is
drawn (``AccountState.on_change``), and after a config reload, it rewrites this process's rows of ``accounts_down``
from the accounts' states (``tracker/store/accounts_down.py`` says why a table and not log entries, and how status
tells a live process's rows from a dead one's). Changes that come while a write is under way are folded into the
next write: the rows follow the states, never a queue of past ones.

On SQLite the caller holds the file's writer lock before the board opens (status trusts the rows of that lock's pid);
the first write, at the start, deletes a dead process's rows (its pid might be this one's again). On PostgreSQL the
board holds a lock of its own (``process_lock_name``), taken before its first row (a process with nothing down never
takes it) and again if its connection was lost. At the end (the process's stop, every account's writer drained) its
rows are deleted, then the lock released; after a ``kill -9`` the rows stay, but their lock is gone with the process
(on PostgreSQL they stay, never shown, until the next multi-account process's first write deletes them:
``sweep_dead``).

A failure to record is never the accounts' failure: a database outage is logged and the write tried again after
``RETRY_S`` (the writers ride the outage out themselves); anything else is a bug and ends the run.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import NoReturn

import trio

from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.supervise import StartedOnce
from tracker.store.accounts_down import AccountDown, process_lock_name, replace_own, sweep_dead
from tracker.store.engine import Engine
from tracker.store.errors import first_line, is_transient
from tracker.store.lease import PgLease

log = logging.getLogger("tracker.service")

RETRY_S = 2.0


def down_of(states: Sequence[AccountState]) -> list[AccountDown]:
    """The rows that say which of ``states`` are down, why, since when and when they are tried next; and which are
    tracked again since when, after which spell down."""
    return [
        AccountDown(
            place=state.index,
            user=state.user or state.tracked_user,
            reason=reason,
            since=state.down_since or datetime.now(UTC),
            failures=state.failures,
            retry_at=state.retry_at,
            back_at=None if state.down is not None else state.back_at,
        )
        for state in states
        if (reason := state.down or state.was_down) is not None
    ]


class DownBoard:
    """This process's rows of ``accounts_down``, rewritten from ``states()`` after each ``notify``."""

    def __init__(self, engine: Engine, states: Callable[[], Sequence[AccountState]]) -> None:
        self.engine = engine
        self.states = states
        self.process = uuid.uuid4().hex
        self.sole_writer = engine.dialect.name == "sqlite"
        self.lock = None if self.sole_writer else PgLease(engine, process_lock_name(self.process))
        self._dirty = trio.Event()
        self._wrote = False  # a row was ever written (SQLite: the first write clears a dead process's rows)

    def notify(self) -> None:
        """The accounts' states changed: write them (soon, off the event loop)."""
        self._dirty.set()

    def _write(self, down: Sequence[AccountDown]) -> None:
        if self.lock is not None:
            if not down and not self._wrote:
                return  # PostgreSQL, nothing down yet: no row, no lock, no connection for it
            if not self.lock.check():
                self.lock.try_acquire()  # the process's own name: nobody else ever holds it
            if not self._wrote:
                swept = sweep_dead(self.engine, self.process)
                if swept:
                    log.info("accounts down: %d rows of processes that ended without clearing them deleted", swept)
        replace_own(self.engine, self.process, os.getpid(), down, datetime.now(UTC), sole_writer=self.sole_writer)
        self._wrote = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Write the rows now and after every change, until cancelled; started once the first write is done (or
        failed on an outage: the accounts do not wait for it)."""
        report = StartedOnce(task_status)
        self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                await trio.to_thread.run_sync(self._write, down_of(self.states()))
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("accounts down not recorded for tracker status: %s; trying again", first_line(error))
                report.started()
                await trio.sleep(RETRY_S)  # a back-off, not a synchronisation
                self._dirty.set()
                continue
            report.started()

    def clear(self) -> None:
        """Delete this process's rows (its stop), then release its lock."""
        if not self._wrote:
            return
        try:
            replace_own(self.engine, self.process, os.getpid(), (), datetime.now(UTC), sole_writer=False)
        finally:
            if self.lock is not None:
                self.lock.release()


@asynccontextmanager
async def open_down_board(engine: Engine, states: Callable[[], Sequence[AccountState]]) -> AsyncIterator[DownBoard]:
    """A ``DownBoard`` writing until the block ends; then this process's rows deleted (a database that fails that
    is logged: the rows' lock ends with the process anyway)."""
    board = DownBoard(engine, states)
    async with trio.open_nursery() as nursery:
        await nursery.start(board.run)
        try:
            yield board
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(board.clear)
                except Exception as error:
                    if not is_transient(error):
                        raise
                    log.warning("accounts down not cleared: %s (their lock ended with the run)", first_line(error))
