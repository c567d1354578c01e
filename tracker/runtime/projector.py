"""The projector task: tails the event log after the checkpoint and folds new entries into the ``proj_*`` tables.

It runs beside ingest in ``tracker run``. Each round projects what is new in batches (``ProjectionStore.catch_up``,
rows and checkpoint in one transaction per batch) in a worker thread with the projector's own limiter (the log writer
has another), then waits ``poll_interval`` (0.2 s by default) or until ``nudge()`` is called, whichever is first, so
it keeps up within a second. A round does at most ``max_batches`` batches before coming back to trio, so cancelling
the task (shutdown) waits for one batch at most.

If ``tracker rebuild`` swaps the tables in meanwhile, the checkpoint moves under the projector: its next write sees
that, writes nothing, and it goes on from the new checkpoint (see ``tracker/store/projections.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import trio

from tracker.metrics import Metrics
from tracker.store.engine import Engine
from tracker.store.event_log import EventLog
from tracker.store.projections import BATCH, ProjectionStore

if TYPE_CHECKING:  # service.py imports the task types it exposes
    from tracker.runtime.service import Services, TaskStarter

log = logging.getLogger("tracker.projector")

POLL_INTERVAL_S = 0.2
MAX_BATCHES_PER_ROUND = 10


@dataclass
class ProjectorStatus:
    """What the projector did last; ``advanced`` is replaced after each round (wait on it for the next one)."""

    checkpoint: int = 0
    head: int = 0
    open_discrepancies: int = 0
    rounds: int = 0
    advanced: trio.Event = field(default_factory=trio.Event)
    _wake: trio.Event = field(default_factory=trio.Event)

    @property
    def lag(self) -> int:
        return max(self.head - self.checkpoint, 0)

    def nudge(self) -> None:
        """Wake the projector now (e.g. after a commit) instead of at the next poll."""
        self._wake.set()

    async def wait_nudged(self) -> None:
        """The projector's pause between rounds: until ``nudge`` (the caller bounds it with a cancel scope)."""
        try:
            await self._wake.wait()
        finally:
            self._wake = trio.Event()

    async def wait_caught_up(self, seq: int) -> None:
        """Wait until the checkpoint reaches ``seq``."""
        while self.checkpoint < seq:
            await self.advanced.wait()


def _round(store: ProjectionStore, event_log: EventLog, batch: int, max_batches: int) -> tuple[int, int, int]:
    head = event_log.head()
    checkpoint = store.load_checkpoint()
    done = 0
    while checkpoint < head and done < max_batches:
        checkpoint = store.catch_up(event_log, batch=batch, until=min(head, checkpoint + batch))
        done += 1
    return checkpoint, head, store.count_open_discrepancies()


async def run_projector(
    engine: Engine,
    *,
    metrics: Metrics | None = None,
    status: ProjectorStatus | None = None,
    poll_interval: float = POLL_INTERVAL_S,
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES_PER_ROUND,
    limiter: trio.CapacityLimiter | None = None,
    task_status: trio.TaskStatus[ProjectorStatus] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Project the log forever (until cancelled). ``task_status.started(status)`` once the first round is done."""
    store = ProjectionStore(engine)
    event_log = EventLog(engine)
    status = status or ProjectorStatus()
    limiter = limiter or trio.CapacityLimiter(1)
    step = partial(_round, store, event_log, batch, max_batches)
    started = False
    while True:
        checkpoint, head, open_discrepancies = await trio.to_thread.run_sync(step, limiter=limiter)
        status.checkpoint, status.head, status.open_discrepancies = checkpoint, head, open_discrepancies
        status.rounds += 1
        if metrics is not None:
            metrics.projection_lag.set(status.lag)
            metrics.discrepancies_open.set(open_discrepancies)
        advanced, status.advanced = status.advanced, trio.Event()
        advanced.set()
        if not started:
            started = True
            task_status.started(status)
        if checkpoint < head:
            log.debug("projector behind: checkpoint %d, head %d", checkpoint, head)
            await trio.lowlevel.checkpoint()
            continue
        with trio.move_on_after(poll_interval):
            await status.wait_nudged()


def projector_task(engine: Engine) -> TaskStarter:
    """An ``extra_tasks`` starter for ``run_tracker``: the projector beside ingest until ``services.stop`` (what is
    committed after that is projected by the next run). Exposes its status as ``services.projector``."""

    async def start(
        services: Services, *, task_status: trio.TaskStatus[ProjectorStatus] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            status = await nursery.start(partial(run_projector, engine))
            services.projector = status
            task_status.started(status)
            await services.stop.wait()
            nursery.cancel_scope.cancel()

    return start
