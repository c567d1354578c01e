"""The single writer task: every item any producer sends is appended to the event log, in batches, by one thread.

- Input: ``(NewEntry | QuarantineItem, received_monotonic)`` on a bounded memory channel. The bound is the
  back-pressure: when the database falls behind, producers (the websocket receive loops) block on ``send`` and stop
  reading their sockets, instead of growing memory.
- Batching is group commit: the writer takes the first item, then everything already waiting (up to ``max_batch``),
  optionally lingering ``max_delay`` for more, and appends it in one transaction through
  ``trio.to_thread.run_sync(append, ..., limiter=one_writer)``, or on PostgreSQL, for a live batch, on the event loop
  itself (``loop_append``: no thread hand-off, see ``loop_append.py``). While a commit runs, the next batch piles up, so
  batches grow with load and an idle system commits each frame at once (no fixed delay added to latency).
- Shutdown: the writer is never cancelled to stop it. Producers close their send channels (``async with``); the
  writer then drains what is left, commits it, and returns. A commit in progress is shielded from cancellation, so a
  batch taken off the channel is never lost half-way.
- Database faults: with ``retry_if`` (the service passes ``tracker.store.errors.is_transient``), an append that fails
  because the connection was lost or SQLite stayed busy is retried, the same batch, with capped backoff, until the
  database is back. The append is idempotent (dedup keys), so a commit whose outcome was lost is harmless to repeat.
  Meanwhile the channel keeps taking frames up to its bound, then back-pressure holds the producers: nothing is
  dropped and memory stays bounded.
- A stop in a database outage is bounded: once ``give_up`` is set (the service sets it ``stop_grace`` seconds after
  the stop, ``run_tracker``), the next failed try is the last (a commit under way is still never abandoned: on SQLite
  one waiting for the file's lock waits out its busy timeout first). What the writer holds then, and what the
  producers hand in until they are all gone, is not committed: it is counted (``WriterStats.not_committed``) and
  written to the side file (``spill``), and the writer returns. The run then ends with one error line saying so
  (``service.require_committed``): the next run's start-up backfill fetches those frames from the exchange again,
  and ``tracker db import-unsaved`` appends them from the side file (``load_spilled``), self-trade and liquidation
  alerts included.
- A damaged database (``tracker.store.errors.is_damage``: SQLite "database disk image is malformed", PostgreSQL
  ``XX001``/``XX002``) is not retried: the batch in hand and everything still buffered are written to a side file
  (``spill``, JSON lines, beside the database: ``spill_to``) and ``DatabaseDamaged`` names it, so the run stops with
  one error line and nothing received is lost. When the run fails elsewhere (a refused key, say), the service lets
  the writer drain and commit as at a stop before the error goes on (``run_tracker``); only a writer that cannot
  commit within the grace is cancelled, and what waits in the buffer is spilled the same way before the cancellation
  goes on.
- ``WriterStats`` counts frames, duplicates, conflicts, quarantined items and batches, and keeps receive→commit
  latencies (a bounded sample plus fixed buckets) for the metrics exporter and the bench.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.db_retry import Outage
from tracker.store.errors import DatabaseDamaged, first_line, is_damage
from tracker.store.integrity import unsaved_path

log = logging.getLogger("tracker.writer")

Item = tuple[NewEntry | QuarantineItem, float]

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AppendResultLike(Protocol):
    appended: tuple[int, ...]
    duplicates: int
    conflicts: int


AppendFn = Callable[[Sequence[NewEntry], Sequence[QuarantineItem]], Any]
# An append done on the event loop itself when it can go that way (``loop_append.py``), else None: then ``append``.
LoopAppendFn = Callable[[Sequence[NewEntry]], Awaitable[Any]]


@dataclass
class WriterStats:
    items: int = 0  # items committed (entries + quarantine)
    appended: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    batches: int = 0
    retries: int = 0  # failed appends retried (database unavailable or busy)
    not_committed: int = 0  # items given up at a stop in a database outage (``give_up``), saved in ``unsaved``
    unsaved: Path | None = None
    max_batch_seen: int = 0
    first_received: float | None = None  # trio time of the first item committed
    last_commit: float | None = None  # trio time of the newest commit
    # Histogram over LATENCY_BUCKETS_S (+Inf last) and a bounded sample for percentiles.
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    latency_sample: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    committed: trio.Event = field(default_factory=trio.Event)  # replaced after each batch: wait for the next commit

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds
        self.latency_sample.append(seconds)

    def percentile(self, q: float) -> float | None:
        """q in [0, 1] over the recent sample; None when nothing was committed yet."""
        if not self.latency_sample:
            return None
        ordered = sorted(self.latency_sample)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    async def wait_items(self, n: int) -> None:
        """Wait until at least ``n`` items have been committed (tests and the bench)."""
        while self.items < n:
            await self.committed.wait()


async def run_writer(
    append: AppendFn,
    receive: trio.MemoryReceiveChannel[Item],
    *,
    stats: WriterStats | None = None,
    limiter: trio.CapacityLimiter | None = None,
    max_batch: int = 2000,
    max_delay: float = 0.0,
    retry_if: Callable[[BaseException], bool] | None = None,
    spill_to: Callable[[], Path] | None = None,
    loop_append: LoopAppendFn | None = None,
    give_up: trio.Event | None = None,
    task_status: trio.TaskStatus[WriterStats] = trio.TASK_STATUS_IGNORED,
) -> WriterStats:
    """Run until every sender of ``receive`` is closed and everything sent has been committed (or, after
    ``give_up``, counted and spilled: the module docstring).

    ``spill_to`` names the side file for frames that cannot be committed (a damaged database, the run failing
    elsewhere while frames wait, or given up at a stop); without it they still spill, into ``unsaved_path(None)``.
    ``loop_append`` is tried first for a batch without quarantine items (see ``LoopAppendFn``)."""
    stats = stats if stats is not None else WriterStats()
    limiter = limiter if limiter is not None else trio.CapacityLimiter(1)
    task_status.started(stats)
    batch: list[Item] = []
    appender = _Appender(append, loop_append, limiter)
    async with receive:
        try:
            while True:
                batch = []
                await _write_batch(appender, receive, batch, stats, retry_if, max_batch, max_delay, give_up)
        except trio.EndOfChannel:
            return stats
        except _GaveUp as gave_up:
            await _give_up(receive, batch, stats, spill_to or partial(unsaved_path, None), gave_up)
            return stats
        except trio.Cancelled:
            # The run is failing elsewhere (the writer is never cancelled in a clean stop): keep what waits here.
            held = _take_all(receive, batch)
            if held and spill_to is not None:
                log.warning("run stopping: %d frame(s) not committed saved in %s", len(held), spill(held, spill_to()))
            raise
        except Exception as error:
            if not is_damage(error):
                raise
            held = _take_all(receive, batch)
            path = spill(held, (spill_to or partial(unsaved_path, None))())
            raise DatabaseDamaged(
                f"the database is damaged ({first_line(error)}): the run stopped; the {len(held)} frame(s) not"
                f" committed are saved in {path} (JSON lines); restore the database from a backup"
                " (`tracker verify` shows the damage)"
            ) from error


async def _write_batch(
    appender: _Appender,
    receive: trio.MemoryReceiveChannel[Item],
    batch: list[Item],
    stats: WriterStats,
    retry_if: Callable[[BaseException], bool] | None,
    max_batch: int,
    max_delay: float,
    give_up: trio.Event | None = None,
) -> None:
    """Take one batch into ``batch`` (the caller's list, so a failure can still see it) and commit it; raises
    ``EndOfChannel`` when every sender is gone and nothing is left."""
    batch.append(await receive.receive())
    _take_ready(receive, batch, max_batch)
    if max_delay > 0 and len(batch) < max_batch:
        with trio.move_on_after(max_delay):
            while len(batch) < max_batch:
                try:
                    batch.append(await receive.receive())
                except trio.EndOfChannel:
                    break
                _take_ready(receive, batch, max_batch)
    await _commit(appender, batch, stats, retry_if, give_up)


class _GaveUp(Exception):
    """The database did not take a batch before ``give_up``: the writer stops trying (``run_writer``)."""


async def _give_up(
    receive: trio.MemoryReceiveChannel[Item],
    batch: list[Item],
    stats: WriterStats,
    spill_to: Callable[[], Path],
    gave_up: _GaveUp,
) -> None:
    """Count and spill the batch in hand and everything the producers hand in until they are all gone (their own
    grace is over too: they are closing), then log it in one line. Spilled even if the run is cancelled meanwhile."""
    held = list(batch)
    try:
        async for item in receive:
            held.append(item)
    finally:
        if held:
            stats.not_committed += len(held)
            stats.unsaved = spill(held, stats.unsaved or spill_to().absolute())  # the line names it: from anywhere
            log.error(
                "gave up at the stop: the database did not answer (%s); %d frame(s) not committed, saved in %s",
                first_line(gave_up.__cause__ or gave_up),
                len(held),
                stats.unsaved,
            )


def _take_all(receive: trio.MemoryReceiveChannel[Item], batch: list[Item]) -> list[Item]:
    """The batch in hand plus everything still buffered (and what blocked senders were holding: taking from the
    channel moves a waiting sender's item into the buffer)."""
    held = list(batch)
    while True:
        try:
            held.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return held


def spill(held: Sequence[Item], path: Path) -> Path:
    """Append ``held`` to ``path`` as JSON lines (an entry ``{"kind": "entry", ...fields}``, a quarantined frame its
    fields, ``kind`` its quarantine kind; the frame's text byte for byte, times in ISO 8601) and fsync it: the only
    copy of frames the database could not take (``load_spilled`` reads them back)."""
    with path.open("a", encoding="utf-8") as out:
        for item, _received in held:
            kind = "entry" if isinstance(item, NewEntry) else "quarantine"
            fields = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(item).items()}
            out.write(json.dumps({"kind": kind, **fields}, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return path


class UnsavedFileError(ValueError):
    """A side file's line that ``spill`` did not write (edited, cut short): which line, and why."""


def load_spilled(path: Path) -> list[NewEntry | QuarantineItem]:
    """The frames ``spill`` wrote to ``path``, in their order, as it held them: ``tracker db import-unsaved``. A line
    it did not write raises ``UnsavedFileError`` naming it (nothing is taken from a file that is not whole); a last
    line without its newline is one a crash cut short, and is refused the same way."""
    items: list[NewEntry | QuarantineItem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                items.append(_spilled_item(line))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UnsavedFileError(f"{path} line {number}: not a frame tracker saved ({exc})") from None
    return items


def _spilled_item(line: str) -> NewEntry | QuarantineItem:
    if not line.endswith("\n"):
        raise ValueError("cut short (no newline at its end)")
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise TypeError("not a JSON object")
    fields["received_at"] = datetime.fromisoformat(fields["received_at"])
    if fields["received_at"].tzinfo is None:
        raise ValueError("received_at has no time zone")
    # A quarantined frame's own ``kind`` (malformed, ...) took the place of "quarantine" in every file spill has
    # written: it is the one with ``raw``; an entry's is "entry", with its ``dedup_key``.
    if "raw" in fields:
        return QuarantineItem(**fields)
    if fields.pop("kind", None) == "entry":
        return NewEntry(**fields)
    raise ValueError("neither an entry nor a quarantined frame")


def _take_ready(receive: trio.MemoryReceiveChannel[Item], batch: list[Item], max_batch: int) -> None:
    while len(batch) < max_batch:
        try:
            batch.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return


RETRY_BASE_S = 0.1
RETRY_CAP_S = 2.0


@dataclass(frozen=True, slots=True)
class _Appender:
    append: AppendFn
    loop_append: LoopAppendFn | None
    limiter: trio.CapacityLimiter  # one appender at a time: backfill and the projection catch-up share it

    async def __call__(self, entries: list[NewEntry], quarantine: list[QuarantineItem]) -> Any:
        if self.loop_append is not None and entries and not quarantine:
            async with self.limiter:
                result = await self.loop_append(entries)
            if result is not None:
                return result
        return await trio.to_thread.run_sync(self.append, entries, quarantine, limiter=self.limiter)


async def _commit(
    appender: _Appender,
    batch: list[Item],
    stats: WriterStats,
    retry_if: Callable[[BaseException], bool] | None = None,
    give_up: trio.Event | None = None,
) -> None:
    entries = [item for item, _ in batch if isinstance(item, NewEntry)]
    quarantine = [item for item, _ in batch if isinstance(item, QuarantineItem)]
    outage = Outage("writer", base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)
    while True:
        try:
            with trio.CancelScope(shield=True):  # a commit under way is never abandoned half-way
                result = await appender(entries, quarantine)
            break
        except Exception as error:
            if is_damage(error) or retry_if is None or not retry_if(error):
                raise  # a damaged page does not heal by waiting: run_writer spills and stops
            if give_up is not None and give_up.is_set():
                raise _GaveUp from error
            stats.retries += 1
            delay = outage.failed(error, f"{len(batch)} item(s)")
            # Not shielded: the writer is never cancelled in a normal stop, only when the run is failing anyway;
            # then a retry must not keep the process alive forever (the next run's backfill covers the batch).
            if give_up is None:
                await trio.sleep(delay)
                continue
            with trio.move_on_after(delay):
                await give_up.wait()
            if give_up.is_set():
                raise _GaveUp from error
    outage.over(f"{len(batch)} item(s) committed")
    now = trio.current_time()
    if stats.first_received is None:
        stats.first_received = batch[0][1]
    stats.last_commit = now
    for _, received in batch:
        stats.observe_latency(now - received)
    stats.items += len(batch)
    stats.batches += 1
    stats.max_batch_seen = max(stats.max_batch_seen, len(batch))
    stats.quarantined += len(quarantine)
    if result is not None:
        stats.appended += len(result.appended)
        stats.duplicates += result.duplicates
        stats.conflicts += result.conflicts
        if result.conflicts:
            log.warning("%d conflicting frame(s) quarantined: same key, different text", result.conflicts)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("committed %d item(s) (%d quarantined)", len(batch), len(quarantine))
    done, stats.committed = stats.committed, trio.Event()
    done.set()
