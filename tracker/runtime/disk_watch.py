"""The database's disk, watched while ``tracker run`` runs: one WARNING when its free space falls below the low mark
(``store/space.py``: under 1 GiB, or under the database's own size), one INFO when it is above it again. The full
disk itself is the writer's retry line (``db_retry``), and ``tracker status`` and the metrics show the same figures
any time.

SQLite only: a PostgreSQL server's disk is not visible from a client (watch it on the server), so there the task reads
nothing and waits for the stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import trio

from tracker.runtime.service import Services, TaskStarter
from tracker.store.engine import Engine, sqlite_path
from tracker.store.space import LOW_ADVICE, Space, read_space

log = logging.getLogger("tracker.service")

INTERVAL_S: Final = 30.0  # between two looks at the disk


def disk_watch(
    engine: Engine, *, interval: float = INTERVAL_S, read: Callable[[Engine], Space] = read_space
) -> TaskStarter:
    """An ``extra_tasks`` starter (``app.standard_tasks``); ``read`` is a test seam."""

    async def watch(services: Services, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if sqlite_path(engine.url) is None:  # PostgreSQL, or an in-memory database: no disk to see
            await services.stop.wait()
            return
        low = False
        while not services.stop.is_set():
            space = await trio.to_thread.run_sync(read, engine)
            if space.low and not low:
                log.warning("the database's disk is low: %s on %s: %s", space.disk(), space.disk_path, LOW_ADVICE)
            elif low and not space.low:
                log.info("the database's disk has room again: %s on %s", space.disk(), space.disk_path)
            low = space.low
            with trio.move_on_after(interval):
                await services.stop.wait()

    return watch
