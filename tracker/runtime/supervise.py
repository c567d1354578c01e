"""The extra tasks' supervisor: the projector, the recovery task (backfill, reconciler, ledger) and the metrics run
beside ingest, and nothing that goes wrong in one of them stops live ingest.

What ends an extra task, and what the supervisor (``supervise_task``) does then:

- **A database outage** (``is_transient``): logged, and the task is started again once the pause is over (every one
  of them starts from what is committed, so a restart repeats no work that matters); the writer holds the frames.
- **A bug** (any other ``Exception`` but a ``TrackerError``: a consistency check of the projection that fails, a
  ``KeyError`` on an answer nobody foresaw): the task is started again after a back-off (5 s, doubling up to 5
  minutes), with one ERROR line and its traceback the first time, one line each time after. Meanwhile ingest and the
  writer go on, so every frame received is still committed: what waits is what the task derives (the projection's
  lag grows, a backfill or a reconciliation comes later). The failures are counted per task
  (``Services.task_failures``, the ``tracker_task_failures`` metric) and shown by ``tracker status`` while the process
  runs (``Services.task_board``: ``task_board.py``). Before, such a bug ended ``tracker run``, and
  under a supervisor that restarts it, the run went round a crash loop that kept ingest down most of the time.
- **A ``TrackerError``** (the exchange refused the key, a damaged database) is a deliberate stop with its one-line
  message: the run ends, as it does when ingest meets it. So does anything that is not an ``Exception`` (a
  cancellation: the run is stopping).

A task that fails before it has reported ``started`` (the projector's first round, say) is reported started anyway
at its first contained failure, so that the run's other tasks start: the backfill must not wait for a projector that
cannot project.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from tracker.domain.timeutil import utc_now
from tracker.errors import TrackerError, leaves
from tracker.runtime.db_retry import Outage
from tracker.store.errors import first_line, is_transient

if TYPE_CHECKING:  # service.py imports this module
    from tracker.runtime.service import Services, TaskStarter

log = logging.getLogger("tracker.service")

BUG_RESTART_BASE_S = 5.0
BUG_RESTART_CAP_S = 300.0


class StartedOnce:
    """A task status that passes on the first ``started`` only (a restarted task reports started again)."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self.inner.started(value)


def is_bug(error: BaseException) -> bool:
    """Whether ``error`` (a nursery's group: each of its leaves) is a bug the supervisor contains: an ``Exception``,
    neither a ``TrackerError`` (a deliberate stop) nor a database outage (``is_transient``, restarted apart)."""
    found = leaves(error)
    return all(isinstance(one, Exception) and not isinstance(one, TrackerError) for one in found)


def task_name(starter: TaskStarter) -> str:
    """``projector_task.<locals>.start`` -> ``projector_task``: what the log lines and the metric call the task."""
    return getattr(starter, "__qualname__", "a task").split(".")[0]


def describe(error: BaseException) -> str:
    """One line: the (first) exception's type and the first line of its message, ``KeyError: 'position_id'``."""
    first = leaves(error)[0]
    return f"{type(first).__name__}: {first_line(first)}"


class Bugs:
    """One task's contained failures: the log lines and the delay before the next start (doubling, capped)."""

    def __init__(self, name: str, services: Services) -> None:
        self.name = name
        self.services = services
        self.failures = 0

    def failed(self, error: BaseException) -> float:
        self.failures += 1
        self.services.task_failures[self.name] += 1
        delay = min(BUG_RESTART_BASE_S * 2.0 ** (self.failures - 1), BUG_RESTART_CAP_S)
        if self.services.task_board is not None:  # for tracker status (task_board.py)
            self.services.task_board.failed(self.services.account, self.name, describe(error), delay, utc_now())
        if self.failures == 1:
            log.error(
                "%s failed: %s; live ingest goes on (every frame received is still committed), the task starts again"
                " in %g s. This is a bug in tracker: please report it with the traceback below",
                self.name,
                describe(error),
                delay,
                exc_info=error,
            )
        else:
            log.error(
                "%s failed again (%d times): %s; live ingest goes on, the task starts again in %g s",
                self.name,
                self.failures,
                describe(error),
                delay,
            )
        return delay


async def supervise_task(
    starter: TaskStarter, services: Services, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an extra task until it returns; start it again after a database outage or a bug, and let a
    ``TrackerError`` or a cancellation through (the module docstring)."""
    status = StartedOnce(task_status)
    name = task_name(starter)
    outage = Outage(name, base_s=0.5, cap_s=5.0, log_every=1)
    bugs = Bugs(name, services)
    while True:
        try:
            await starter(services, task_status=status)
            return
        except BaseException as error:
            if is_transient(error):
                delay = outage.failed(error)
            elif is_bug(error):
                delay = bugs.failed(error)
                status.started()  # the run's other tasks start, whether or not this one ever did
            else:
                raise
        with trio.move_on_after(delay):
            await services.stop.wait()
        if services.stop.is_set():
            status.started()
            return
