"""Several accounts in one process (``run_accounts``): their writers' live appends combined into one.

Every append to a PostgreSQL log takes the log's one lock, inside the server, to its commit (the global ``seq`` and
hash chain: docs/storage.md "Many accounts on one PostgreSQL database"). With one writer per account, 20 accounts at
100 frames/s each are 2,000 one-frame appends a second, one after another through that lock: in one process on this
2-core machine, p99 receive→commit 64-69 ms with the backends waiting for the lock in 43 % of the samples
(``bench/accounts.py --per-process 20``). Combined, the frames the writers hand in while an append runs go into the
next one: one lock turn and one commit for all of them, and the p99 falls to 8.5-16.9 ms (docs/storage.md "Several
accounts in one process").

How: each writer's ``loop_append`` (``AppendCombiner.loop_append``) queues its batch and waits. Whoever finds no
append under way takes the queue (up to ``SERVER_APPEND_MAX`` entries, whole batches, in queue order) and appends it
as one server append on the event loop (``EventLog.server_append_steps``, driven by ``loop_append.drive``); every
batch gets its own part of the outcome (``split_result``: its seqs and its duplicates, by position). The rows of one
batch stay together and in order, so each account's frames are appended in the order its writer committed them, as
before; the accounts' batches are in the order they were handed in. Nothing about the log changes: one append is
one transaction, deduplicated and chained as any other.

On SQLite (no server append, one writer at a time through the file's lock, a commit is an fsync) a turn is
``EventLog.append_parts`` in a thread: the batches appended in one transaction, each with the result appending it
alone would have given (duplicates, conflicts and their quarantine included): one commit for every account's
frames instead of one each.

Whatever cannot go that way goes back to each writer (``None``: the writer appends its own batch in its thread, as a
writer of a single-account process does on SQLite): a batch too big for the server append on its own, an entry that
does not fit the columns, a batch with quarantine items, a conflict the function refused (the thread's append
quarantines it), the function unusable. When the combined log's connection is not checked out yet (the first append,
or after a failure), it is checked out in a thread first (``hold_connection``).

A failure of the combined append (the database went away) is every waiting batch's failure: each writer retries its
own batch after its back-off, as it would have retried its own append; an append whose commit's answer was lost is
retried as duplicates, which the log skips. The writers call this under their shield (a commit under way is never
abandoned), so the waits are shielded too.

A writer's ``WriteGate`` is checked when its batch is handed in (as ``loop_append.loop_append`` does); the batch can
then wait for one append under way before it is appended. A lease lost meanwhile is noticed by its lease task and
closes the gate for the next batch, as for an append under way in a single-account process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from tracker.domain.log import NewEntry
from tracker.runtime.lease import WriteGate
from tracker.runtime.loop_append import LoopAppend, drive
from tracker.store.event_log import SERVER_APPEND_MAX, AppendResult, EventLog, split_result


@dataclass(eq=False, slots=True)
class _Batch:
    entries: Sequence[NewEntry]
    done: bool = False
    result: AppendResult | None = None
    error: BaseException | None = None


@dataclass
class CombinerStats:
    appends: int = 0  # combined appends made
    batches: int = 0  # writers' batches appended by them
    handed_back: int = 0  # batches given back to their writer (the thread's append)


class AppendCombiner:
    """One event log's live appends for several writers in one process (see the module docstring), with its own
    ``EventLog`` (its own kept connection). On SQLite a turn is ``EventLog.append_parts`` in a thread: one
    transaction and one commit (one fsync) for every batch taken, each its own result."""

    def __init__(self, event_log: EventLog, *, max_entries: int = SERVER_APPEND_MAX) -> None:
        self.log = event_log
        self.max_entries = min(max_entries, SERVER_APPEND_MAX)
        self.stats = CombinerStats()
        self._queue: deque[_Batch] = deque()
        self._busy = False
        self._idle = trio.Event()  # set (and replaced) at the end of each turn
        self._postgres = event_log.engine.dialect.name == "postgresql"

    def loop_append(self, gate: WriteGate) -> LoopAppend:
        """A writer's ``loop_append`` (``run_writer``): its batch combined with the others', or None (append it
        yourself) when its gate is closed or it cannot go the combined way."""

        async def append(entries: Sequence[NewEntry]) -> AppendResult | None:
            if not gate.is_open:
                return None
            return await self.append(entries)

        return append

    async def append(self, entries: Sequence[NewEntry]) -> AppendResult | None:
        """``entries`` appended with whatever else is handed in meanwhile: their own ``AppendResult``, or None when
        they must be appended the writer's own way. Raises what the combined append raised."""
        fits = self.log.server_append_fits if self._postgres else self.log.entries_fit
        if not 0 < len(entries) <= self.max_entries or not fits(entries):
            self.stats.handed_back += 1
            return None
        mine = _Batch(entries)
        self._queue.append(mine)
        while not mine.done:
            if self._busy:
                await self._idle.wait()
            else:  # the first batch handed in while no append runs leads the next one
                await self._turn()
        if mine.error is not None:
            raise mine.error
        return mine.result

    async def _turn(self) -> None:
        """Append the queue's first batches as one (whole batches, up to ``max_entries`` entries); every batch
        taken is done when this returns, and the waiters are woken (one of them leads the next turn)."""
        self._busy = True
        taken: list[_Batch] = []
        try:
            size = 0
            while self._queue and size + len(self._queue[0].entries) <= self.max_entries:
                batch = self._queue.popleft()
                taken.append(batch)
                size += len(batch.entries)
            try:
                results = await self._append([batch.entries for batch in taken])
            except BaseException as error:  # every batch's failure: each writer retries its own (module docstring)
                for batch in taken:
                    batch.error = error
                return
            if results is None:
                self.stats.handed_back += len(taken)
                return  # each batch's result stays None: its writer appends it in its thread
            self.stats.appends += 1
            self.stats.batches += len(taken)
            for batch, part in zip(taken, results, strict=True):
                batch.result = part
        finally:
            for batch in taken:
                batch.done = True
            self._busy = False
            self._idle.set()
            self._idle = trio.Event()

    async def _append(self, parts: list[Sequence[NewEntry]]) -> list[AppendResult] | None:
        """The parts appended as one, each its result; None: not this way (each writer appends its own)."""
        if not self._postgres:  # SQLite: the client's append of the parts, in a thread (one hop a turn)
            return await trio.to_thread.run_sync(self.log.append_parts, parts)
        merged = [entry for part in parts for entry in part]
        start = self.log.server_append_steps(merged)
        if start is None:
            if not self.log.server_append_fits(merged):
                return None
            await trio.to_thread.run_sync(self.log.hold_connection)  # first use, or after a failure
            start = self.log.server_append_steps(merged)
            if start is None:
                return None
        result = await drive(start.fileno, start.steps)
        return None if result is None else split_result(result, [len(part) for part in parts])
