"""``runtime/disk_watch.py``: a ``tracker run`` says once when its database's disk runs low, and once when it has room
again; on PostgreSQL (no disk to see) it reads nothing. The disk's figures are a seam here (``read``); the real
reading is ``store/space.py``'s, which test_status.py checks against ``os.statvfs``.

Rules: trio's autojump clock (its sleeps take no time), pytest's timeout as the bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from sqlalchemy import create_engine

from tracker.runtime.app import standard_tasks
from tracker.runtime.disk_watch import disk_watch
from tracker.runtime.supervise import task_name
from tracker.store.engine import Engine
from tracker.store.space import Space

pytestmark = pytest.mark.timeout(30)

GIB = 1 << 30
ROOMY = Space(GIB, 60 * GIB, 100 * GIB, "/data")
LOW = Space(GIB, GIB // 2, 100 * GIB, "/data")


async def _watch(engine: Engine, spaces: list[Space], caplog: pytest.LogCaptureFixture) -> tuple[list[str], int]:
    """Run the watch over ``spaces`` (one a look, a second apart), then stop it: (its log lines, the looks taken)."""
    caplog.set_level(logging.INFO, logger="tracker.service")
    looks = iter(spaces)
    taken = 0
    done = trio.Event()

    def read(_engine: Engine) -> Space:
        nonlocal taken
        taken += 1
        space = next(looks, None)
        if space is None:
            trio.from_thread.run_sync(done.set)  # read runs in a worker thread
            return spaces[-1]
        return space

    services = SimpleNamespace(stop=trio.Event())
    async with trio.open_nursery() as nursery:
        await nursery.start(disk_watch(engine, interval=1.0, read=read), services)
        if engine.dialect.name == "sqlite":
            await done.wait()  # no deadline of ours: the autojump clock would jump to it while a read's thread runs
        else:
            await trio.sleep(len(spaces) + 1)  # looks it would have taken by now
        services.stop.set()
    return [r.getMessage() for r in caplog.records if r.name == "tracker.service"], taken


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    yield engine
    engine.dispose()


async def test_low_once_then_room_again_once(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    lines, taken = await _watch(sqlite_engine, [ROOMY, LOW, LOW, LOW, ROOMY, ROOMY, LOW], caplog)
    assert taken >= 7
    assert lines == [
        "the database's disk is low: 512.0 MiB free of 100.0 GiB (0 %) on /data: free space on it (when it is full,"
        " appends stop: tracker run holds what it receives and retries until there is room)",
        "the database's disk has room again: 60.0 GiB free of 100.0 GiB (60 %) on /data",
        "the database's disk is low: 512.0 MiB free of 100.0 GiB (0 %) on /data: free space on it (when it is full,"
        " appends stop: tracker run holds what it receives and retries until there is room)",
    ]


async def test_a_disk_with_room_says_nothing(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    assert await _watch(sqlite_engine, [ROOMY, ROOMY, ROOMY], caplog) == ([], 4)


async def test_postgresql_has_no_disk_to_watch(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    engine = create_engine("postgresql+psycopg://tracker@127.0.0.1:1/none")  # never connected
    try:
        assert await _watch(engine, [LOW, LOW], caplog) == ([], 0)
    finally:
        engine.dispose()


def test_a_run_watches_its_disk(sqlite_engine: Engine) -> None:
    assert "disk_watch" in [task_name(starter) for starter in standard_tasks(sqlite_engine)]
