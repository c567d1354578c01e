"""The tasks beside ingest that this process started again after a bug, kept in the database for ``tracker status``.

``supervise_task`` calls ``TaskBoard.failed`` at each contained failure (``supervise.py``); the board keeps one row
per task and account (how often, the first and the last failure, the last error, when the task starts again) and a
``ProcessBoard`` writes them (``process_board.py``: off the event loop, the locks, the deletion at the stop).
``tracker/store/task_failures.py`` says why this is a table and not log entries.

One board per process, opened under the SQLite file's lock (its first write deletes a dead process's rows): ``run_app``
for one account, ``run_accounts`` for the accounts of a config file and the tasks the process runs once for them all
(their account is ``PROCESS_WIDE``). A failure to record is never the run's: an outage is retried, a bug is logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from tracker.logs import scrub
from tracker.runtime.process_board import ProcessBoard, open_board
from tracker.store.engine import Engine
from tracker.store.task_failures import PROCESS_WIDE, TaskFailure, replace_own_failures, sweep_dead_failures

ERROR_CHARS = 500  # the error as the row keeps it: its type and first line, cut (the process's log has it whole)


class TaskBoard:
    """This process's task failures, per account and task, written for ``tracker status``."""

    def __init__(self, engine: Engine) -> None:
        self.failures: dict[tuple[str, str], TaskFailure] = {}
        self.board = ProcessBoard(
            engine,
            "task failures",
            lambda: list(self.failures.values()),
            replace_own_failures,
            sweep_dead_failures,
            fatal=False,
        )

    def failed(self, account: str | None, task: str, error: str, restart_in_s: float, now: datetime) -> None:
        """Task ``task`` of ``account`` (None: the process's own) failed with ``error`` at ``now`` and starts again
        in ``restart_in_s``."""
        key = (PROCESS_WIDE if account is None else account, task)
        before = self.failures.get(key)
        text = scrub(error)
        self.failures[key] = TaskFailure(
            account=key[0],
            task=task,
            failures=1 if before is None else before.failures + 1,
            first_at=now if before is None else before.first_at,
            last_at=now,
            error=text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…",
            restart_at=now + timedelta(seconds=restart_in_s),
        )
        self.board.notify()


@asynccontextmanager
async def open_task_board(engine: Engine) -> AsyncIterator[TaskBoard]:
    """A ``TaskBoard`` writing until the block ends; then this process's rows deleted (``open_board``). The caller
    holds the SQLite file's lock."""
    board = TaskBoard(engine)
    async with open_board(board.board):
        yield board
