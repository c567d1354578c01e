"""Holding the writer's lease in ``tracker run`` (the locks themselves are in ``tracker/store/lease.py``).

- ``open_file_lock``: SQLite, one writer per file, taken before anything connects; a second ``tracker run`` on the
  same file fails at once with a one-line ``StoreError``.
- ``hold_account_lease`` (PostgreSQL): started right after the token call (the account is known only then), before
  subscribing. If another process holds the account, this one is a hot standby: it logs so once and polls every
  ``poll_s`` until the holder's session ends (the holder stopped or died), then reports started and the service
  subscribes and backfills as usual. ``stop`` while waiting returns ``None``.
- Fencing: while holding, the task checks the lease connection every ``check_s``. If the connection is lost (database
  restart, network, a terminated backend) the ``WriteGate`` closes: the writer stops appending (it keeps its bounded
  buffer, and back-pressure stops the sockets being read once it is full) while the task takes the lock again on a
  new connection. Got it back: the gate opens, nothing was lost. Someone else has it now: the gate fails, the writer
  raises ``LeaseLost`` and the run ends with that message; the new holder's backfill covers what this run received but
  did not write. Between the loss and the next check (at most ``check_s``) an append may still land: the log's dedup
  keys make a frame written by both processes a harmless duplicate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

import trio

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.db_retry import Outage
from tracker.store.errors import is_transient
from tracker.store.event_log import EventLog
from tracker.store.lease import LeaseLost, PgLease, SqliteFileLock, file_lock_for

log = logging.getLogger("tracker.lease")

POLL_S = 0.5  # standby: how often to try the lock (takeover within ~this after the holder's session ends)
CHECK_S = 1.0  # holder: how often to check the lease connection
T = TypeVar("T")


class WriteGate:
    """Open while this process may write. Waited on by the writer's thread (``wait_open``), set by the lease task."""

    def __init__(self, *, open_: bool = True) -> None:
        self._open = threading.Event()
        self._lost: str | None = None
        if open_:
            self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set() and self._lost is None

    @property
    def lost(self) -> str | None:
        """Why writing is refused for good (another process took the lease), else None."""
        return self._lost

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def fail(self, reason: str) -> None:
        self._lost = reason
        self._open.set()  # wake the waiter: it raises

    def wait_open(self) -> None:
        """Block (in a worker thread) until writing is allowed; ``LeaseLost`` if another process took over."""
        while not self._open.wait(0.25):
            pass
        if self._lost is not None:
            raise LeaseLost(self._lost)

    def guard(self, append: Callable[..., T]) -> Callable[..., T]:
        """``append`` that first waits for the gate (the writer's append function)."""

        def guarded(entries: Sequence[NewEntry], quarantine: Sequence[QuarantineItem]) -> T:
            self.wait_open()
            return append(entries, quarantine)

        return guarded


@contextmanager
def open_file_lock(event_log: EventLog) -> Iterator[SqliteFileLock | None]:
    """The SQLite file lock of the log's database for the life of the block (nothing on PostgreSQL)."""
    lock = file_lock_for(event_log.engine)
    if lock is not None:
        lock.acquire()
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


async def _call(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)


async def _acquire(lease: PgLease, stop: trio.Event, poll_s: float, *, standby_message: bool) -> bool:
    """Poll until the lock is ours (True) or ``stop`` (False). Database errors while polling are retried."""
    announced = False
    outage = Outage("lease", log_every=20)
    while not stop.is_set():
        try:
            if await _call(lease.try_acquire):
                return True
            if standby_message and not announced:
                holder = await _call(lease.holder)
                log.info(
                    "standby: account %s is tracked by another process%s; waiting to take over",
                    lease.account,
                    f" ({holder})" if holder else "",
                )
                announced = True
        except Exception as error:
            if not is_transient(error):
                raise
            outage.failed(error)  # the lease forgot its connection: the next poll opens a new one
        with trio.move_on_after(poll_s):
            await stop.wait()
    return False


async def _reacquire(lease: PgLease, stop: trio.Event, poll_s: float) -> bool:
    """After losing the lease connection: take the lock on a new one (True; also True when ``stop`` comes first, so
    the shutdown goes on), or False when the database answers that another session holds it."""
    outage = Outage("lease", log_every=20)
    while not stop.is_set():
        try:
            return bool(await _call(lease.try_acquire))
        except Exception as error:
            if not is_transient(error):
                raise
            outage.failed(error)  # the lease forgot its connection: the next poll opens a new one
        with trio.move_on_after(poll_s):
            await stop.wait()
    return True


async def hold_account_lease(
    lease: PgLease,
    gate: WriteGate,
    stop: trio.Event,
    done: trio.Event,
    *,
    poll_s: float = POLL_S,
    check_s: float = CHECK_S,
    task_status: trio.TaskStatus[datetime | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take the account's lease (a standby waits; ``stop`` while waiting reports ``started(None)`` and returns), report
    ``started(acquired_at)``, then hold and watch it until ``done`` (the writer has committed its last batch: the
    lease outlives the shutdown's drain), and release it."""
    waited_from = trio.current_time()
    try:
        if not await _acquire(lease, stop, poll_s, standby_message=True):
            task_status.started(None)
            return
        waited = trio.current_time() - waited_from
        if waited >= poll_s:
            log.info("lease: took over account %s after %.1f s as a standby", lease.account, waited)
        else:
            log.info("lease: this process writes account %s", lease.account)
        gate.open()
        task_status.started(datetime.now(UTC))
        while not done.is_set():
            with trio.move_on_after(check_s):
                await done.wait()
            if done.is_set() or await _call(lease.check):
                continue
            gate.close()
            log.warning(
                "lease: lost the lease connection for account %s: writing paused, taking it again", lease.account
            )
            if not await _reacquire(lease, done, poll_s):
                fence(gate, lease)
                raise LeaseLost(f"another tracker run took over account {lease.account}: stopping")
            log.info("lease: account %s taken again: writing resumed", lease.account)
            gate.open()
    finally:
        if not gate.is_open and gate.lost is None:
            gate.fail(f"stopped without the lease of account {lease.account}")  # a waiting writer must not hang
        with trio.CancelScope(shield=True):
            await _call(lease.release)


def fence(gate: WriteGate, lease: PgLease) -> None:
    """Mark the lease as taken by another process: the writer raises ``LeaseLost`` at its next append."""
    gate.fail(f"another tracker run took over account {lease.account}: stopping (its backfill covers the gap)")
