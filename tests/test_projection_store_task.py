"""The projector task (``tracker.runtime.projector.run_projector``) against a real database: it keeps up with
appends within one poll (a second), reports lag and open discrepancies to the metrics, and stops cleanly when cancelled.

Rules: local databases only (``db_url``: SQLite and PostgreSQL); waits are on the projector's own progress events
under ``trio.fail_after``, never sleeps.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio
from sqlalchemy import Engine
from test_projection_store import fake_entries

from tracker.domain.projection import fold
from tracker.metrics import Metrics
from tracker.runtime.projector import run_projector
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore

pytestmark = pytest.mark.timeout(60)


async def test_projector_keeps_up_within_a_second(migrated_engine: Engine) -> None:
    entries = fake_entries(21, 400)
    log = EventLog(migrated_engine)
    await trio.to_thread.run_sync(log.append, entries[:300])
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        status = await nursery.start(partial(run_projector, migrated_engine, metrics=metrics))
        with trio.fail_after(10):  # the backlog at start
            await status.wait_caught_up(await trio.to_thread.run_sync(log.head))
        for start in range(300, len(entries), 40):  # live appends, as ingest makes them
            result = await trio.to_thread.run_sync(log.append, entries[start : start + 40])
            rounds = status.rounds
            with trio.fail_after(30):  # a bound for a failure only: a round on a loaded machine's database
                await status.wait_caught_up(result.head.seq)
            # Caught up by the poll alone (no nudge), within the round under way (its read of the head may have come
            # before the append's commit) and the next one, one poll interval (0.2 s) later: within a second, counted
            # in rounds rather than wall time (a loaded machine's rounds take longer, not more of them).
            assert status.rounds - rounds <= 2, status.rounds - rounds
        assert status.lag == 0
        assert metrics.projection_lag._value.get() == 0
        nursery.cancel_scope.cancel()
    store = ProjectionStore(migrated_engine)
    from tracker.bitstamp.parse import parse_entry

    whole = fold(parse_entry(entry) for page in log.iter_after(0) for entry in page)
    assert store.all_rows() == whole.to_rows()
    open_count = sum(1 for row in whole.discrepancies.values() if row.status == "open")
    assert metrics.discrepancies_open._value.get() == open_count


async def test_nudge_wakes_the_projector_before_the_poll(migrated_engine: Engine) -> None:
    log = EventLog(migrated_engine)
    async with trio.open_nursery() as nursery:
        status = await nursery.start(partial(run_projector, migrated_engine, poll_interval=3600))
        result = await trio.to_thread.run_sync(log.append, fake_entries(22, 20))
        status.nudge()
        with trio.fail_after(30):  # far under the poll's 3600 s: the nudge woke it (30 s: a loaded machine's append)
            await status.wait_caught_up(result.head.seq)
        nursery.cancel_scope.cancel()
