"""The single writer: group commit, drain on close, shielded commit, back-pressure. A list stands in for the store."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.writer import WriterStats, run_writer

pytestmark = pytest.mark.timeout(10)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Result:
    appended: tuple[int, ...]
    duplicates: int
    conflicts: int


class ListLog:
    def __init__(self) -> None:
        self.batches: list[tuple[list[NewEntry], list[QuarantineItem]]] = []
        self.keys: set[str] = set()
        self.threads: set[int] = set()
        self.gate: threading.Event | None = None

    def append(self, entries: Sequence[NewEntry], quarantine: Sequence[QuarantineItem] = ()) -> Result:
        if self.gate is not None:
            self.gate.wait(5)
        self.threads.add(threading.get_ident())
        self.batches.append((list(entries), list(quarantine)))
        new = [e for e in entries if e.dedup_key not in self.keys]
        self.keys.update(e.dedup_key for e in new)
        return Result(tuple(range(len(new))), len(entries) - len(new), 0)


def entry(i: int, key: str | None = None) -> NewEntry:
    return NewEntry(
        account="1", source="ws", channel="c", event="e", payload=str(i), dedup_key=key or f"k{i}", received_at=T0
    )


async def test_everything_sent_is_committed_then_writer_returns() -> None:
    log = ListLog()
    send, receive = trio.open_memory_channel[tuple[NewEntry | QuarantineItem, float]](100)
    async with trio.open_nursery() as nursery:
        stats: WriterStats = await nursery.start(run_writer, log.append, receive)
        async with send:
            for i in range(50):
                await send.send((entry(i), trio.current_time()))
            await send.send((entry(0), trio.current_time()))  # duplicate key
            await send.send((QuarantineItem("malformed", "not JSON", "{", T0), trio.current_time()))
    assert stats.items == 52
    assert stats.appended == 50 and stats.duplicates == 1 and stats.quarantined == 1
    assert sum(len(e) + len(q) for e, q in log.batches) == 52
    assert stats.batches == len(log.batches) < 52  # batched
    assert len(log.threads) == 1
    assert stats.percentile(0.99) is not None


async def test_cancel_during_commit_still_commits_the_batch() -> None:
    log = ListLog()
    log.gate = threading.Event()
    send, receive = trio.open_memory_channel[tuple[NewEntry | QuarantineItem, float]](10)
    stats = WriterStats()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_writer(log.append, receive, stats=stats))
            await send.send((entry(1), trio.current_time()))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            log.gate.set()
    assert stats.items == 1 and log.batches[0][0][0].payload == "1"


async def test_back_pressure_blocks_producer_when_writer_is_slow() -> None:
    log = ListLog()
    log.gate = threading.Event()
    send, receive = trio.open_memory_channel[tuple[NewEntry | QuarantineItem, float]](2)
    async with trio.open_nursery() as nursery:
        stats: WriterStats = await nursery.start(run_writer, log.append, receive)
        async with send:
            await send.send((entry(0), trio.current_time()))
            await trio.testing.wait_all_tasks_blocked()  # the writer holds item 0 in the (blocked) commit
            send.send_nowait((entry(1), trio.current_time()))
            send.send_nowait((entry(2), trio.current_time()))
            with pytest.raises(trio.WouldBlock):
                send.send_nowait((entry(3), trio.current_time()))
            log.gate.set()
            await send.send((entry(3), trio.current_time()))
        # closing the channel lets the writer drain and return
    assert stats.items == 4


async def test_linger_groups_items(autojump_clock: trio.testing.MockClock) -> None:
    log = ListLog()
    send, receive = trio.open_memory_channel[tuple[NewEntry | QuarantineItem, float]](100)
    async with trio.open_nursery() as nursery:
        stats: WriterStats = await nursery.start(
            lambda task_status: run_writer(log.append, receive, max_delay=0.010, task_status=task_status)
        )
        async with send:
            for i in range(5):
                await send.send((entry(i), trio.current_time()))
                await trio.sleep(0.001)
    assert [len(e) for e, _ in log.batches] == [5]
    assert max(stats.latency_sample) == pytest.approx(0.005)  # the first item waited for the channel to close
