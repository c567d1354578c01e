"""The writer's PostgreSQL appends done on trio's event loop itself, without a thread.

A live batch on PostgreSQL is one statement and one round trip (``tracker_append``, ``EventLog._append_on_server``).
Done in a thread, each costs a hand-off there and a wake-up back (the thread, the GIL, trio's wake-up socket): at a
low rate every frame is its own batch, and on this 2-core machine a ``SELECT 1`` every 10 ms costs ~410 us of CPU
driven from trio's loop, against ~660-810 us through ``trio.to_thread.run_sync`` (~750 through a thread of our own).
So the event log hands out the append as psycopg-style non-blocking steps (``EventLog.server_append_steps``) and this
module drives them with ``trio.lowlevel.wait_readable``/``wait_writable`` on the connection's socket: the loop keeps
serving the websockets while the server works, as it did while the thread waited.

Only the common case goes this way; everything else is the thread's (``append`` as before): SQLite, a batch the
function does not take, the connection not yet checked out (the first append, or after a failure: checking out may
block), a conflict the function refused, and a closed ``WriteGate`` (waiting for it blocks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from tracker.domain.log import NewEntry
from tracker.runtime.lease import WriteGate
from tracker.store.event_log import AppendResult, EventLog, Steps
from tracker.store.event_log import StepsReady as Ready
from tracker.store.event_log import StepsWait as Wait

T = TypeVar("T")

LoopAppend = Callable[[Sequence[NewEntry]], Awaitable[AppendResult | None]]


async def drive(fileno: int, steps: Steps[T]) -> T:
    """Run psycopg-style steps to their return value, waiting on ``fileno`` with trio between them."""
    try:
        wait = next(steps)
        while True:
            if wait == Wait.R:
                await trio.lowlevel.wait_readable(fileno)
                ready = Ready.R
            elif wait == Wait.W:
                await trio.lowlevel.wait_writable(fileno)
                ready = Ready.W
            else:
                ready = await _readable_or_writable(fileno)
            wait = steps.send(ready)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        steps.close()


async def _readable_or_writable(fileno: int) -> Ready:
    ready = Ready.NONE

    async def wait(waiter: Callable[[int], Awaitable[None]], flag: Ready) -> None:
        nonlocal ready
        await waiter(fileno)
        ready = Ready(ready | flag)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, trio.lowlevel.wait_readable, Ready.R)
        nursery.start_soon(wait, trio.lowlevel.wait_writable, Ready.W)
    return ready


def loop_append(event_log: EventLog, gate: WriteGate) -> LoopAppend:
    """The writer's ``loop_append`` for ``event_log``: the append on the event loop when it can go that way, else None
    (the writer then calls its ``append`` in its thread)."""

    async def append(entries: Sequence[NewEntry]) -> AppendResult | None:
        if not gate.is_open:
            return None
        start = event_log.server_append_steps(entries)
        if start is None:
            return None
        return await drive(start.fileno, start.steps)

    return append
