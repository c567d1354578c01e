"""``tracker rebuild``: project the whole log into fresh shadow tables, then swap them in atomically.

1. Create ``rebuild_<name>`` tables of the same shape as ``proj_<name>`` (dropping leftovers of a crashed run).
2. Fold the log into them in batches (``ProjectionStore`` with its own checkpoint row ``rebuild``), up to the head as
   it moves, so little is left for the live projector afterwards.
3. In ONE write transaction: lock the live checkpoint, delete the live rows, ``INSERT INTO proj_x SELECT * FROM
   rebuild_x``, set the live checkpoint to the shadow's, drop the shadow tables. Readers see the old rows or the new
   ones, never a mix. Tables are not renamed: SQLite rewrites view definitions on rename and PostgreSQL views follow
   the renamed table's OID, so the ``v_*`` views would end up on the wrong tables.

A live projector (``tracker run``) may keep writing the live tables meanwhile; the swap moves the checkpoint under it,
its next write sees that and it reloads from the new checkpoint (see ``projections.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, delete, func, insert, select

from tracker.store.engine import writer
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import (
    CHECKPOINT_NAME,
    PROJECTION_TABLES,
    projector_checkpoint,
    shadow_tables,
)
from tracker.store.projections import BATCH, BatchResult, ProjectionStore, lock_checkpoint

SHADOW_PREFIX: Final = "rebuild_"
SHADOW_CHECKPOINT: Final = "rebuild"


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int  # log entries folded
    checkpoint: int  # the live checkpoint after the swap
    rows: dict[str, int]  # rows per table after the swap
    seconds: float


def rebuild(
    engine: Engine,
    *,
    batch: int = BATCH,
    on_batch: Callable[[BatchResult], None] | None = None,
    before_swap: Callable[[], None] | None = None,
) -> RebuildResult:
    """Rebuild every projection table from the event log and swap the result in (see the module docstring).

    ``before_swap`` is a test seam: called after the shadow is complete, before the swap transaction.
    """
    started = time.monotonic()
    shadow_metadata, shadow = shadow_tables(SHADOW_PREFIX)
    with writer(engine).begin() as conn:
        shadow_metadata.drop_all(conn)
        shadow_metadata.create_all(conn)
        conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
    events = 0

    def count(result: BatchResult) -> None:
        nonlocal events
        events += result.events
        if on_batch is not None:
            on_batch(result)

    try:
        store = ProjectionStore(engine, tables=shadow, checkpoint_name=SHADOW_CHECKPOINT)
        store.catch_up(EventLog(engine), batch=batch, on_batch=count)
        if before_swap is not None:
            before_swap()
        with writer(engine).begin() as conn:
            lock_checkpoint(conn, CHECKPOINT_NAME)  # a live projector's write waits for us, then sees the new seq
            checkpoint = store.load_checkpoint(conn)
            rows: dict[str, int] = {}
            for name, live in PROJECTION_TABLES.items():
                conn.execute(delete(live))
                columns = [column.name for column in live.columns]
                conn.execute(insert(live).from_select(columns, select(*(shadow[name].c[c] for c in columns))))
                rows[name] = int(conn.execute(select(func.count()).select_from(live)).scalar_one())
            store_live = ProjectionStore(engine)
            conn.execute(
                store_live.checkpoint_upsert,
                [{"name": CHECKPOINT_NAME, "seq": checkpoint, "updated_at": store_live.clock()}],
            )
            conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
            shadow_metadata.drop_all(conn)
    except BaseException:
        with writer(engine).begin() as conn:
            shadow_metadata.drop_all(conn)
            conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
        raise
    return RebuildResult(events, checkpoint, rows, time.monotonic() - started)
