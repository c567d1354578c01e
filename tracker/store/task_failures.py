"""The tasks beside ingest that a running ``tracker run`` started again after a bug, kept for ``tracker status``.

A bug in the projector, the recovery task (backfill, reconciliation, ledger) or the metrics no longer ends the run
(``tracker/runtime/supervise.py``): the task is started again after a back-off while ingest goes on. Until now that
was visible only in the process's log, its metrics and a projection lag that grows; ``tracker status`` reads the
database. So the process keeps one row per task and account here: how often it failed in this process, the first
and the last failure, the last one's error (its type and first line: the traceback is in the process's log), and
when the task was (or will be) started again. Rows go when the process stops.

Why a table of runtime state and not log entries (as for ``accounts_down``, whose module says more): a failure is
tracker's own state, not a fact about the account's streams (the projector of a multi-account process is no
account's); a task failing on every try would write an entry every few minutes for as long as the bug lasts; and
after a ``kill -9`` a "failing" entry would stay the log's last word, where a row here stops being shown with its
process's lock (``tracker status``: the same rule as for ``accounts_down``, ``process_rows.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from tracker.store.process_rows import replace_process_rows, sweep_dead_rows
from tracker.store.runtime_schema import task_failures

PROCESS_WIDE = ""  # the account of a task the process runs once for every account (the projector of [[accounts]])


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task a process started again after a bug: how often, when, the last error."""

    account: str  # the Bitstamp account (user id); PROCESS_WIDE for the process's own tasks
    task: str  # projector_task, recovery_task, metrics_task, ...
    failures: int  # in this process
    first_at: datetime
    last_at: datetime
    error: str  # the last failure's exception: its type and first line
    restart_at: datetime  # when it was (or is) started again after the last failure
    pid: int = 0  # the process that says so
    process: str = ""  # its token
    updated_at: datetime | None = None  # when the process last wrote its rows


def replace_own_failures(
    engine: Engine, process: str, pid: int, failures: Sequence[TaskFailure], now: datetime, *, sole_writer: bool
) -> None:
    """Make process ``process``'s rows exactly ``failures``, in one transaction (``replace_process_rows``)."""
    rows = [{**asdict(one), "process": process, "pid": pid, "updated_at": now} for one in failures]
    replace_process_rows(engine, task_failures, process, rows, sole_writer=sole_writer)


def sweep_dead_failures(engine: Engine, own: str) -> int:
    """PostgreSQL: delete the rows of processes that no longer hold their lock, all but ``own``'s; how many went."""
    return sweep_dead_rows(engine, task_failures, own)


def read_failures(conn: Connection) -> list[TaskFailure]:
    """Every row, whoever wrote it (``tracker status`` keeps the ones whose process still holds its lock), by
    process, account and task."""
    t = task_failures
    rows = conn.execute(select(t).order_by(t.c.pid, t.c.process, t.c.account, t.c.task)).mappings()
    return [
        TaskFailure(
            r["account"],
            r["task"],
            r["failures"],
            r["first_at"],
            r["last_at"],
            r["error"],
            r["restart_at"],
            r["pid"],
            r["process"],
            r["updated_at"],
        )
        for r in rows
    ]
