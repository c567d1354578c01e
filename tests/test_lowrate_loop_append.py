"""The writer's PostgreSQL appends on the event loop (``tracker/runtime/loop_append.py``): the same rows and chain as
the blocking append, the cases it leaves to the thread (first use, a conflict, quarantine items, a closed gate), a
connection lost half-way (raised as the blocking append raises it; the next append goes on), and ``run_writer`` with
it on a real database. Loopback only; every test has an absolute timeout."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from sqlalchemy import exc
from store_helpers import entry, walk

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.lease import WriteGate
from tracker.runtime.loop_append import drive, loop_append
from tracker.runtime.writer import Item, run_writer
from tracker.store.errors import is_transient
from tracker.store.event_log import EventLog

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(30)]


async def test_appends_on_the_loop_once_a_connection_is_kept(pg_log: EventLog) -> None:
    assert pg_log.server_append_steps([entry(1)]) is None  # nothing checked out yet: the thread's first append does
    pg_log.append([entry(1)])
    append = loop_append(pg_log, WriteGate())
    result = await append([entry(2), entry(3)])
    assert result is not None and result.appended == (2, 3)
    again = await append([entry(3), entry(4)])
    assert again is not None and (again.appended, again.duplicates) == ((4,), 1)
    assert pg_log.server_appends == 3
    assert again.head == pg_log.head_anchor()
    assert walk(pg_log).head == 4


async def test_what_it_leaves_to_the_thread(pg_log: EventLog) -> None:
    pg_log.append([entry(1)])
    gate = WriteGate()
    append = loop_append(pg_log, gate)
    changed = entry(1, payload='{"data":{"id":1,"amount_str":"0.2"}}')
    assert await append([changed]) is None  # a conflict: the function refuses, the client's append quarantines it
    assert await append([entry(2, payload="bad\x00text")]) is None  # unfit: quarantined by the client's append
    gate.close()
    assert await append([entry(2)]) is None  # the gate's wait blocks: the thread's
    gate.open()
    assert await append([entry(2)]) is not None
    assert pg_log.server_appends == 2
    assert walk(pg_log).head == 2


async def test_a_connection_lost_half_way_is_raised_and_the_next_append_goes_on(pg_log: EventLog) -> None:
    pg_log.append([entry(1)])
    [kept] = pg_log._held._kept
    backend = kept.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
    start = pg_log.server_append_steps([entry(2)])
    assert start is not None
    with pg_log.engine.connect() as other:  # the kept connection's session ends, from outside
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})").scalar_one()
    with pytest.raises(exc.DBAPIError) as raised:
        await drive(start.fileno, start.steps)
    assert is_transient(raised.value)
    assert pg_log.server_append_steps([entry(2)]) is None  # the lost connection was not kept
    assert pg_log.append([entry(2)]).appended == (2,)  # a fresh one, checked out (and pinged) by the pool
    assert walk(pg_log).head == 2


async def test_the_writer_appends_on_the_loop_and_the_thread_alike(pg_log: EventLog) -> None:
    loop_batches: list[int] = []
    real = pg_log.server_append_steps

    def counted(entries: Any) -> Any:
        start = real(entries)
        if start is not None:
            loop_batches.append(len(entries))
        return start

    pg_log.server_append_steps = counted  # type: ignore[method-assign]
    send, receive = trio.open_memory_channel[Item](100)
    items: list[NewEntry | QuarantineItem] = [entry(i) for i in range(1, 41)]
    items.insert(20, QuarantineItem("malformed", "not JSON", "{", entry(0).received_at))
    items.append(entry(7))  # a duplicate
    async with trio.open_nursery() as nursery:
        stats = await nursery.start(
            lambda task_status: run_writer(
                pg_log.append, receive, loop_append=loop_append(pg_log, WriteGate()), task_status=task_status
            )
        )
        async with send:
            for n, item in enumerate(items, 1):
                await send.send((item, trio.current_time()))
                # The first item committed (the thread's append, which keeps a connection), then the 19 after it, before
                # the quarantine item is sent: a first append slower than the sends (a loaded machine) took every item
                # after it into one batch with the quarantine item, all in the thread, and none went on the loop.
                if n in (1, 20):
                    await stats.wait_items(n)
                await trio.sleep(0.001)  # small batches, as at a low rate
    assert (stats.items, stats.appended, stats.duplicates, stats.quarantined) == (42, 40, 1, 1)
    assert loop_batches and sum(loop_batches) < 42  # most on the loop; the first and the quarantine's in the thread
    assert len(pg_log.quarantined()) == 1
    assert walk(pg_log).head == 40
