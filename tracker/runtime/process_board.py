"""A process's rows of runtime state (``accounts_down``, ``task_failures``), kept in the database for ``tracker
status`` while the process runs (``tracker/store/process_rows.py`` says how status tells a live process's rows from
a dead one's).

A ``ProcessBoard`` rewrites the process's rows from ``rows()`` after each ``notify`` (changes that come while a
write is under way are folded into the next write: the rows follow the state, never a queue of past ones), and
deletes them at the end (``open_board``).

On SQLite the caller holds the file's writer lock before the board opens (status trusts the rows of that lock's pid);
the first write, at the start, deletes a dead process's rows (its pid might be this one's again). On PostgreSQL the
board holds a lock of its own (``process_lock_name``), taken before its first row (a process with nothing to say
never takes it) and again if its connection was lost. At the end (the process's stop) its rows are deleted, then the
lock released; after a ``kill -9`` the rows stay, but their lock is gone with the process (on PostgreSQL they stay,
never shown, until the next such process's first write deletes them: ``sweep``).

A failure to record is never the run's failure: a database outage is logged and the write tried again after
``RETRY_S``. Anything else is a bug: the accounts' board (``fatal``) ends the run, as any bug in the accounts'
supervision does; the task failures' board logs it and writes again at the next change, for it records bugs of
other tasks and must not turn one into a stop.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Generic, NoReturn, Protocol, TypeVar

import trio

from tracker.runtime.supervise import StartedOnce
from tracker.store.engine import Engine
from tracker.store.errors import first_line, is_transient
from tracker.store.lease import PgLease
from tracker.store.process_rows import process_lock_name

log = logging.getLogger("tracker.service")

RETRY_S = 2.0

Row = TypeVar("Row")
Row_contra = TypeVar("Row_contra", contravariant=True)


class Replace(Protocol[Row_contra]):
    """``replace_own``'s shape: make the process's rows exactly ``rows``."""

    def __call__(
        self,
        engine: Engine,
        process: str,
        pid: int,
        rows: Sequence[Row_contra],
        now: datetime,
        /,
        *,
        sole_writer: bool,
    ) -> None: ...


class ProcessBoard(Generic[Row]):
    """This process's rows of one table, rewritten from ``rows()`` after each ``notify``."""

    def __init__(
        self,
        engine: Engine,
        what: str,
        rows: Callable[[], Sequence[Row]],
        replace: Replace[Row],
        sweep: Callable[[Engine, str], int],
        *,
        fatal: bool,
    ) -> None:
        self.engine = engine
        self.what = what  # "accounts down": the log lines' subject
        self.rows = rows
        self.replace = replace
        self.sweep = sweep
        self.fatal = fatal
        self.process = uuid.uuid4().hex
        self.sole_writer = engine.dialect.name == "sqlite"
        self.lock = None if self.sole_writer else PgLease(engine, process_lock_name(self.process))
        self._dirty = trio.Event()
        self._wrote = False  # a row was ever written (SQLite: the first write clears a dead process's rows)

    def notify(self) -> None:
        """The state changed: write it (soon, off the event loop)."""
        self._dirty.set()

    def _write(self, rows: Sequence[Row]) -> None:
        if self.lock is not None:
            if not rows and not self._wrote:
                return  # PostgreSQL, nothing to say yet: no row, no lock, no connection for it
            if not self.lock.check():
                self.lock.try_acquire()  # the process's own name: nobody else ever holds it
            if not self._wrote:
                swept = self.sweep(self.engine, self.process)
                if swept:
                    log.info("%s: %d rows of processes that ended without clearing them deleted", self.what, swept)
        self.replace(self.engine, self.process, os.getpid(), rows, datetime.now(UTC), sole_writer=self.sole_writer)
        self._wrote = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Write the rows now and after every change, until cancelled; started once the first write is done (or
        failed: the run does not wait for it)."""
        report = StartedOnce(task_status)
        self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                await trio.to_thread.run_sync(self._write, self.rows())
            except Exception as error:
                if is_transient(error):
                    log.warning("%s not recorded for tracker status: %s; trying again", self.what, first_line(error))
                    report.started()
                    await trio.sleep(RETRY_S)  # a back-off, not a synchronisation
                    self._dirty.set()
                    continue
                if self.fatal:
                    raise
                log.exception("%s not recorded for tracker status (a bug in tracker, written again at the next"
                              " change)", self.what)  # fmt: skip
            report.started()

    def clear(self) -> None:
        """Delete this process's rows (its stop), then release its lock."""
        if not self._wrote:
            return
        try:
            self.replace(self.engine, self.process, os.getpid(), (), datetime.now(UTC), sole_writer=False)
        finally:
            if self.lock is not None:
                self.lock.release()


@asynccontextmanager
async def open_board(board: ProcessBoard[Row]) -> AsyncIterator[ProcessBoard[Row]]:
    """``board`` writing until the block ends; then this process's rows deleted (a database that fails that is
    logged: the rows' lock ends with the process anyway). The deletion waits for the writing task to end: a write
    under way in its thread is not abandoned by the cancellation, and one that committed after the deletion would
    leave the rows of a stopped process behind."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(board.run)
            try:
                yield board
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(board.clear)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("%s not cleared: %s (their lock ended with the run)", board.what, first_line(error))
