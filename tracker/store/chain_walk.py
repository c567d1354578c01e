"""The hash-chain walk of ``tracker verify`` and ``tracker audit``: every row from seq 1 to the head, in parts.

Why: the walk reads and hashes every row of the log, pure Python per row (a 1M-event log was 13 s of CPU). Two things
make it cheaper (docs/audit.md, "Tests and benchmark", has the measurements):

1. Per row, as little Python as there can be, a page of rows at a time through the driver's cursor (no SQLAlchemy
   row processing, no ``LogEntry``). On SQLite, SQLite itself writes each row's hash input (``_SQLITE_ENCODED``:
   ``json_array`` over the columns), so a row arrives as 4 values instead of 18; elsewhere the columns a link covers
   arrive as a tuple (``CHAIN_COLUMNS``) and orjson writes the input (the bytes of ``chain.canonical_values``' json
   encoder, in a third of the time). Both are shortcuts only: ``ChainWalker`` checks any row whose fast input does not
   give its stored hash again with the reference encoding, so they can make the walk faster, never change a verdict.
   A worker reads SQLite pages through a memory map (less system time than a read() per page).
2. On SQLite, with a log of ``PARALLEL_MIN_ROWS`` or more and two cores, two worker processes walk the two halves of
   ``(0, head]`` apart, each trusting only its first row's stored link; ``ChainWalker.join`` then checks that link
   against the first half's last hash (and seq), so the result is the one walk would give: every row from seq 1 to
   the head, the first break named. No stored checkpoint is trusted. Elsewhere (PostgreSQL, in-memory SQLite, small
   logs) the same parts are walked one after another in this process, by the same code.

A page the database cannot read (a damaged file) ends the walk there with its message (``unreadable``), as before.
Workers are ``python -m tracker.store.chain_walk`` children, like ``tracker rebuild``'s (``rebuild_parallel``): the
spec pickled on stdin, ``multiprocessing.connection`` frames on stdout.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import orjson
from sqlalchemy import Engine, Integer, bindparam, func, select

from tracker.domain.chain import CANONICAL_COLUMNS, CHAIN_COLUMNS, Anchor, ChainWalker
from tracker.domain.timeutil import datetime_to_us
from tracker.store import child_processes as children
from tracker.store.engine import open_engine, sqlite_path
from tracker.store.errors import first_line, is_damage
from tracker.store.integrity import MMAP_BYTES
from tracker.store.schema import event_log

PAGE: Final = 10_000  # rows per read (one short read transaction each)
PARTS: Final = 2  # worker processes, at most one per core
PARALLEL_MIN_ROWS: Final = 100_000  # below this a worker costs more than it saves (~0.3 s to start)
_RECEIVED: Final = CHAIN_COLUMNS.index("received_at")

_SEQ = event_log.c.seq
_CHAIN_PAGE = (
    select(*(event_log.c[name] for name in CHAIN_COLUMNS))
    .where(bindparam("after", 0) < _SEQ, bindparam("until", 0) >= _SEQ)
    .order_by(_SEQ)
    .limit(bindparam("limit", 1, type_=Integer))
)

# SQLite writes the hash input itself: json_array over the columns writes the same bytes as chain.canonical_values
# for every row the writer made (same escapes; tests/test_chain_walk.py checks it on random text), and a row is read
# as 4 values instead of 18. received_at becomes microseconds only where the stored text is exactly the one SQLite
# renders back from them, in years Python can read (else NULL: the row is then checked with the reference reading), so
# no other text can pass.
_US = "CAST(strftime('%s', substr(received_at, 1, 19)) AS INTEGER)"
_FRACTION = "CAST(substr(received_at, 21) AS INTEGER)"
_RENDERED = f"strftime('%Y-%m-%d %H:%M:%S', {_US}, 'unixepoch') || printf('.%06d', {_FRACTION})"
_RECEIVED_US = f"CASE WHEN received_at >= '0001' AND {_RENDERED} = received_at THEN {_US} * 1000000 + {_FRACTION} END"
_COLUMNS = ", ".join(_RECEIVED_US if name == "received_at" else name for name in CANONICAL_COLUMNS)
_RANGE = "FROM event_log WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
_SQLITE_ENCODED = f"SELECT seq, prev_hash, hash, json_array({_COLUMNS}) {_RANGE}"  # fixed text, no input
_SQLITE_UNENCODED = f"SELECT seq, prev_hash, hash, NULL {_RANGE}"

Progress = Callable[[int], None]  # called with the number of rows walked so far


@dataclass(frozen=True, slots=True)
class PartSpec:
    database: str  # the SQLite file
    after: int  # the part is the rows with seq in (after, until]
    until: int
    expect: Anchor | None
    page: int = PAGE


@dataclass(frozen=True, slots=True)
class Walked:
    """A walk's result: the walker (count, head, first ``Break``) and, when a page could not be read, why."""

    walker: ChainWalker
    unreadable: str | None = None


def walk_chain(
    engine: Engine,
    expect: Anchor | None = None,
    *,
    parts: int | None = None,
    min_rows: int | None = None,
    page: int | None = None,
    on_progress: Progress | None = None,
) -> Walked:
    """Walk seq 1 to the head as it is now (rows appended meanwhile are left for the next walk). ``parts``: how many
    (default: ``PARTS`` when the log is big enough, capped by the cores); in worker processes on a SQLite file."""
    with start_walk(engine, expect, parts=parts, min_rows=min_rows, page=page) as walk:
        return walk.result(on_progress)


def start_walk(
    engine: Engine,
    expect: Anchor | None = None,
    *,
    parts: int | None = None,
    min_rows: int | None = None,
    page: int | None = None,
) -> ChainWalk:
    """``walk_chain`` begun: on a SQLite file in parts, the worker processes start now and walk while the caller does
    other work (``tracker audit``'s queries); ``result()`` waits for them. Elsewhere the walk runs in ``result()``."""
    try:
        end = _head(engine)
    except Exception as error:  # a damaged file may not even give its head
        if not is_damage(error):
            raise
        return ChainWalk(engine, expect, [], PAGE, None, first_line(error))
    if parts is None:
        parts = min(PARTS, os.cpu_count() or 1) if end >= (PARALLEL_MIN_ROWS if min_rows is None else min_rows) else 1
    bounds = split(end, parts)
    database = sqlite_path(engine.url)
    page = page or PAGE
    workers = None
    if database is not None and len(bounds) > 1:
        workers = Workers([PartSpec(str(database), after, until, expect, page) for after, until in bounds])
    return ChainWalk(engine, expect, bounds, page, workers)


class ChainWalk:
    """A walk under way (``start_walk``). ``result()`` once; ``close()`` (or the ``with`` block's end) stops workers
    that are still running, e.g. when the caller failed before asking for the result."""

    def __init__(
        self,
        engine: Engine,
        expect: Anchor | None,
        bounds: list[tuple[int, int]],
        page: int,
        workers: Workers | None,
        unreadable: str | None = None,
    ) -> None:
        self.engine, self.expect, self.bounds, self.page, self.workers = engine, expect, bounds, page, workers
        self.unreadable = unreadable
        self.end = bounds[-1][1] if bounds else 0  # the head when the walk began: it ends there

    def __enter__(self) -> ChainWalk:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()

    def result(self, on_progress: Progress | None = None) -> Walked:
        if self.unreadable is not None:
            return Walked(ChainWalker(self.expect), self.unreadable)
        if self.workers is not None:
            return join(self.workers.collect(on_progress))
        walked = []
        done = 0
        for index, (after, until) in enumerate(self.bounds):
            walker = ChainWalker(self.expect) if index == 0 else ChainWalker.open_part(self.expect)

            def progress(rows: int, base: int = done) -> None:
                if on_progress is not None:
                    on_progress(base + rows)

            walked.append(walk_part(self.engine, after, until, walker, page=self.page, on_progress=progress))
            done += walker.count
        return join(walked)


def split(end: int, parts: int) -> list[tuple[int, int]]:
    """``(0, end]`` in ``parts`` ranges ``(after, until]`` of about equal size (one empty range for an empty log)."""
    parts = max(1, min(parts, end))
    edges = [end * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def join(walked: Sequence[Walked]) -> Walked:
    """The parts' results in seq order as one walk's (see ``ChainWalker.join``): the first break or unreadable page
    wins, a later part counts only when every row before it held."""
    first = walked[0]
    walker, unreadable = first.walker, first.unreadable
    for part in walked[1:]:
        if unreadable is not None or walker.broken is not None:
            break
        if walker.join(part.walker) is not None and part.walker.broken is None:
            break  # the link into the part failed: none of its rows count
        unreadable = part.unreadable
    return Walked(walker, unreadable)


def walk_part(
    engine: Engine,
    after: int,
    until: int,
    walker: ChainWalker,
    *,
    page: int = PAGE,
    on_progress: Progress | None = None,
    mmap: bool = False,
) -> Walked:
    """Feed ``walker`` the rows with seq in (``after``, ``until``], a page at a time through the driver's cursor,
    until the end or its first break; a damaged page ends the walk with its message. ``mmap``: SQLite reads pages
    through a memory map (a worker's own engine: less system time than a read() per page)."""
    reader = _Reader(engine, mmap=mmap and engine.dialect.name == "sqlite")
    sqlite = engine.dialect.name == "sqlite"
    seq = after
    try:
        while seq < until:
            if sqlite:
                encoded = reader.encoded(seq, until, page)
                if not encoded:
                    break
                seq = encoded[-1][0]
                broken = walker.feed_encoded(encoded, reader.one)
            else:
                rows = reader.rows(seq, until, page)
                if not rows:
                    break
                seq = rows[-1][0]
                broken = walker.feed_rows(rows, orjson.dumps)
            if broken is not None:
                break
            if on_progress is not None:
                on_progress(walker.count)
    except Exception as error:  # SQLAlchemy's, or the driver's own (read through its cursor: not wrapped)
        if not is_damage(error):
            raise
        return Walked(walker, first_line(error))
    return Walked(walker)


class _Reader:
    """Pages of the log as a walk reads them, through the driver's cursor (no SQLAlchemy row processing)."""

    def __init__(self, engine: Engine, *, mmap: bool = False) -> None:
        from tracker.store.event_log import DriverQuery, _received_reader  # not in a SQLite worker unless needed

        self.engine = engine
        self.query = DriverQuery(_CHAIN_PAGE, engine.dialect)
        self.received = _received_reader(engine.dialect)
        self.mmap = mmap

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                if self.mmap:
                    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES:d}")  # a number, not input
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()

    def rows(self, after: int, until: int, limit: int) -> list[tuple[Any, ...]]:
        """``CHAIN_COLUMNS`` tuples, ``received_at`` as integer microseconds read as the column type reads it (the
        tuple rebuilt: cheaper than any per-row object)."""
        rows = self._fetch(self.query.sql, self.query.params(after=after, until=until, limit=limit))
        received = self.received
        return [(*row[:_RECEIVED], _us(received, row[_RECEIVED]), *row[_RECEIVED + 1 :]) for row in rows]

    def one(self, seq: int) -> tuple[Any, ...] | None:
        rows = self.rows(seq - 1, seq, 1)
        return rows[0] if rows else None

    def encoded(self, after: int, until: int, limit: int) -> list[tuple[Any, ...]]:
        """SQLite: ``(seq, prev_hash, hash, canonical text)`` (see ``_SQLITE_ENCODED``); when SQLite refuses to
        encode a page (a BLOB where text belongs: no writer stores one), the page without texts (each row is then
        read again and checked with the reference encoding)."""
        try:
            return self._fetch(_SQLITE_ENCODED, (after, until, limit))
        except Exception as error:
            if is_damage(error):
                raise
            return self._fetch(_SQLITE_UNENCODED, (after, until, limit))


def _us(received: Callable[[Any], Any], value: Any) -> Any:
    """Microseconds of a stored ``received_at``; a value the column type cannot read is hashed as it is (it then
    fails its link: no writer stores one)."""
    try:
        return datetime_to_us(received(value))
    except (TypeError, ValueError, OverflowError):
        return value


def _head(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(_SEQ), 0))).scalar_one())


# -- worker processes --------------------------------------------------------------------------------------------------


class Workers:
    """One ``python -m tracker.store.chain_walk`` per spec, started at once (``store/child_processes.py``).
    ``collect()`` waits for their results, in spec order; a worker's failure or death raises ``StoreError``, and on
    any exception (Ctrl-C too) every worker is killed. ``close()`` kills any still running."""

    def __init__(self, specs: Sequence[PartSpec]) -> None:
        from tracker.store.rebuild_parallel import NOT_FOR_WORKERS

        env = {name: value for name, value in os.environ.items() if name not in NOT_FOR_WORKERS}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pipes: list[Connection] = []
        try:
            for spec in specs:
                process, pipe = children.spawn(__name__, env)
                self.processes.append(process)
                self.pipes.append(pipe)
                children.send_spec(process, spec)
        except BaseException:
            self.close()
            raise

    def collect(self, on_progress: Progress | None = None) -> list[Walked]:
        counts = [0] * len(self.processes)

        def progress(index: int, message: tuple[Any, ...]) -> bool:
            if message[0] != "progress":
                return False
            counts[index] = message[1]
            if on_progress is not None:
                on_progress(sum(counts))
            return True

        try:
            return children.collect(
                self.processes,
                self.pipes,
                progress,
                died="a chain walk worker died (exit code {code}): run the command again",
                failed="a chain walk worker failed",
            )
        finally:
            self.close()

    def close(self) -> None:
        children.stop(self.processes, self.pipes)
        self.pipes = []


def run_part(spec: PartSpec, out: Connection) -> None:
    """A worker's body: walk its part, send ``("progress", rows)`` per page, then ``("done", Walked)`` or
    ``("error", message)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    try:
        engine = open_engine(f"sqlite:///{spec.database}", write=False)
        try:
            walker = ChainWalker(spec.expect) if spec.after == 0 else ChainWalker.open_part(spec.expect)
            walked = walk_part(
                engine,
                spec.after,
                spec.until,
                walker,
                page=spec.page,
                on_progress=lambda n: out.send(("progress", n)),
                mmap=True,
            )
        finally:
            engine.dispose()
    except BaseException as error:  # every failure goes to the parent, which raises it
        out.send(("error", f"{type(error).__name__}: {error}"))
    else:
        out.send(("done", walked))


def _main() -> None:
    children.child_main(
        PartSpec, run_part, "tracker.store.chain_walk is started by `tracker verify` and `tracker audit`"
    )


if __name__ == "__main__":
    # As the imported module, not as __main__: the spec was pickled as tracker.store.chain_walk.PartSpec.
    from tracker.store.chain_walk import _main as main

    main()
