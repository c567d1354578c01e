"""What ``tracker run`` runs: the service (writer + ingest, see service.py) with its standard companions.

- the projector, which keeps the ``proj_*`` tables (the ``v_*`` views) up with the log;
- the recovery task: backfill at start-up and after every (re)connect, reconciliation every
  ``settings.reconcile_interval_s``;
- the metrics updater, when a ``Metrics`` is given.
"""

from __future__ import annotations

from tracker.config import Settings
from tracker.metrics import Metrics
from tracker.runtime.metrics_task import metrics_task
from tracker.runtime.preflight import check_markets
from tracker.runtime.projector import projector_task
from tracker.runtime.recovery import recovery_task
from tracker.runtime.service import TaskStarter, run_tracker
from tracker.store.engine import Engine
from tracker.store.event_log import EventLog


def standard_tasks(engine: Engine, *, metrics: Metrics | None = None) -> list[TaskStarter]:
    """The ``extra_tasks`` of a normal run. Build them just before ``run_tracker``: the recovery task's creation time
    splits this run's log entries from the previous run's, and metrics count from then on."""
    tasks: list[TaskStarter] = [projector_task(engine), recovery_task()]
    if metrics is not None:
        tasks.append(metrics_task(metrics, engine))
    return tasks


async def run_app(settings: Settings, engine: Engine, *, metrics: Metrics | None = None) -> None:
    """Check the configured markets against the exchange, then run until SIGINT/SIGTERM (everything committed)."""
    await check_markets(settings)
    await run_tracker(settings, EventLog(engine), extra_tasks=standard_tasks(engine, metrics=metrics))
