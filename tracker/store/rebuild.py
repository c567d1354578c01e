"""``tracker rebuild``: project the whole log into fresh shadow tables, then swap them in atomically.

1. Create ``rebuild_<name>`` tables of the same shape as ``proj_<name>`` in a SQLite scratch database
   (``_build_target``): beside the log's SQLite file (``<db>.rebuild``), or for PostgreSQL in a directory of its own
   in the temporary directory (``tracker-rebuild-*``); an in-memory SQLite database keeps them beside the live tables.
   A crashed run's leftovers are removed by the next run.
2. Fold the log into them in batches (``ProjectionStore`` with its own checkpoint row ``rebuild``), up to the head as
   it moves, so little is left for the live projector afterwards.
3. In ONE write transaction on the log's database: lock the live checkpoint, delete the live rows, put the shadow's
   in (SQLite: ``INSERT INTO proj_x SELECT * FROM rebuild_x``, the scratch file attached; PostgreSQL: ``COPY``), set
   the live checkpoint to the shadow's. Readers see the old rows or the new ones, never a mix. Then the scratch file
   is deleted. Tables are not renamed: SQLite rewrites view definitions on rename and PostgreSQL views follow the
   renamed table's OID, so the ``v_*`` views would end up on the wrong tables.

On a log of 100,000 entries or more over two markets or more (a SQLite file, or PostgreSQL), step 2 runs in two
worker processes, one per group of markets, each reading its part of the log and folding it into its own scratch
file, and step 3 puts the two parts together; when the parts are not provably independent the log is folded again
in one process (``rebuild_parallel.py``). Such a rebuild folds the log up to the head it saw when it started (the
live projector does the rest). A log folded in one process (one market, parts that share rows) of that size is read
and parsed meanwhile by a child process that sends the events on (``rebuild_reader.py``), up to the head it saw; the
fold reads the rest itself, and all of it when the child fails.

A live projector (``tracker run``) may keep writing the live tables meanwhile; the swap moves the checkpoint under it,
its next write sees that and it reloads from the new checkpoint (see ``projections.py``).
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select

from tracker.errors import StoreError
from tracker.store.engine import display_url, open_scratch, sqlite_path, writer
from tracker.store.errors import is_disk_full
from tracker.store.event_log import EventLog, _driver_connection
from tracker.store.projection_codec import upsert
from tracker.store.projection_schema import (
    CHECKPOINT_NAME,
    PROJECTION_TABLES,
    projector_checkpoint,
    shadow_tables,
)
from tracker.store.projections import BATCH, BatchResult, ProjectionStore, lock_checkpoint
from tracker.store.rebuild_parallel import (
    GC_THRESHOLD,
    MERGED,
    PARALLEL_MIN_ENTRIES,
    SHADOW_CHECKPOINT,
    SHADOW_PREFIX,
    KeyLedger,
    PartResult,
    Plan,
    SharedRows,
    Workers,
    WorkerSpec,
    log_head,
    plan_until,
)
from tracker.store.rebuild_reader import ReaderFailed, ReaderSpec, read_parsed

log = logging.getLogger("tracker.rebuild")


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often meanwhile (nothing in the fold makes cycles)."""
    before = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


SCRATCH_SUFFIX: Final = ".rebuild"
SCRATCH_SCHEMA: Final = "rebuild_scratch"


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the shadow tables are built: ``engine``, and on SQLite the scratch file attached for the swap."""

    engine: Engine
    scratch: Path | None


@contextmanager
def _build_target(engine: Engine) -> Iterator[_Target]:
    """The database the shadow tables are built in.

    SQLite (a file): a scratch database beside it, ``<db>.rebuild``, journal in memory, no fsync (``open_scratch``):
    it is thrown away after the swap, and one left by a crash is deleted by the next rebuild, so nothing in it needs
    to survive a crash. Building there instead of in the log's own file means no WAL frames, no checkpoints and no
    fsyncs for the hundreds of thousands of shadow rows (on a 1M-event log ~3 s of commits), and the log's file does
    not grow by the shadow tables' size (SQLite keeps freed pages). The swap reads it through ``ATTACH``; it runs on
    the caller's engine, so it is as durable as any other write.

    PostgreSQL: the same kind of scratch file, in a new directory in the temporary directory (``TMPDIR``:
    ``tracker-rebuild-*``), removed afterwards; one left by a killed rebuild is removed by the next rebuild on this
    machine (``_temporary_directory``). The fold's upserts then cost the server nothing; the swap sends the finished
    rows with ``COPY`` (``_copy_into_postgres``). Before, the shadow tables were beside the live ones, and a
    1M-event rebuild in one process took ~1.4 x as long (docs/storage.md).

    In-memory SQLite: the caller's engine; the shadow tables live beside the live ones.
    """
    path = sqlite_path(engine.url)
    if path is None and engine.dialect.name != "postgresql":
        yield _Target(engine, None)
        return
    if path is None:
        with _temporary_directory() as directory, _scratch_engine(directory / "shadow.db") as build:
            yield _Target(build, directory / "shadow.db")
        return
    scratch = path.with_name(path.name + SCRATCH_SUFFIX)
    _remove(scratch)
    try:
        with _scratch_engine(scratch) as build:
            yield _Target(build, scratch)
    finally:
        _remove(scratch)


@contextmanager
def _scratch_engine(scratch: Path) -> Iterator[Engine]:
    build = open_scratch(scratch)
    try:
        yield build
    finally:
        build.dispose()


TEMPORARY_PREFIX: Final = "tracker-rebuild-"


@contextmanager
def _temporary_directory() -> Iterator[Path]:
    """A new directory ``tracker-rebuild-*`` in the temporary directory, for a PostgreSQL rebuild's scratch files,
    which this rebuild holds the ``lock`` file of (``flock``) until it removes the directory. Directories whose lock
    nobody holds (their rebuild was killed) are removed first; one without a lock file yet is left alone."""
    base = Path(tempfile.gettempdir())
    for leftover in base.glob(TEMPORARY_PREFIX + "*"):
        try:
            fd = os.open(leftover / "lock", os.O_RDWR)
        except OSError:  # no lock file (yet), or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running rebuild's
            continue
        else:
            shutil.rmtree(leftover, ignore_errors=True)
            log.info("rebuild: removed %s, left by a rebuild that was killed", leftover)
        finally:
            os.close(fd)
    directory = Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX))
    try:
        fd = os.open(directory / "lock.new", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            (directory / "lock.new").rename(directory / "lock")  # seen by a sweep only once it is held
            yield directory
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _scratch_space(scratch: Path | None) -> Iterator[None]:
    """A full disk while the fold writes the scratch files (``scratch``: one of them; ``None``: the shadow is beside
    the live tables) is one line that says where and what to do; the live projection is untouched then."""
    try:
        yield
    except Exception as error:
        if scratch is None or not is_disk_full(error):
            raise
        where = scratch.parent
        fix = (
            "free space there, or set TMPDIR to a directory on a disk with more room"
            if where.name.startswith(TEMPORARY_PREFIX)
            else "free space on that disk"
        )
        raise StoreError(
            f"tracker rebuild ran out of disk space for its scratch files in {where}: {fix} (a rebuild needs about"
            " twice the projection tables' size, ~200 MB per 1M events); the projection is unchanged"
        ) from error


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another tracker rebuild is running on this database ({lock_path} is locked): wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)  # drops the flock (the file stays: removing it could race a second rebuild's open)


def _remove(scratch: Path) -> None:
    for leftover in (scratch, scratch.with_name(scratch.name + "-journal")):
        leftover.unlink(missing_ok=True)


@contextmanager
def _attached(conn: Connection, files: Mapping[str, Path]) -> Iterator[None]:
    """``files`` (schema name -> scratch file) attached to ``conn`` meanwhile (outside any transaction: SQLite
    refuses ``ATTACH`` inside one, so on the driver's connection, which issues no ``BEGIN`` of its own). No files
    (an in-memory SQLite database, whose shadow is beside the live tables): nothing to do."""
    if not files:
        yield
        return
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        raise TypeError(f"scratch databases are attached on SQLite connections only, not {type(raw).__name__}")
    attached: list[str] = []
    try:
        for schema, path in files.items():
            if not schema.isidentifier():  # a schema name cannot be a bound parameter: ours are constants
                raise ValueError(f"bad schema name {schema!r}")
            raw.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
            attached.append(schema)
        yield
    finally:
        for schema in attached:
            raw.execute(f"DETACH DATABASE {schema}")


def _refill(conn: Connection, live: Table, shadow: Table, schemas: Sequence[str | None]) -> None:
    """Replace ``live``'s rows with ``shadow``'s (in the caller's transaction). ``schemas``: where the shadow is,
    ``[None]`` for beside the live table, else the attached scratch databases; with more than one (the parallel
    rebuild's parts) the rows are put together: disjoint except the counters, which are merged by sum and max.

    SQLite: ``INSERT INTO live SELECT * FROM shadow`` into an empty table whose every index the shadow also has is
    SQLite's transfer optimisation (records copied as they are, not decoded and re-encoded row by row); the shadow
    has the primary key (and the fills' (account, position_id) and (account, order_id) indexes, which the fold reads
    by: ``projection_schema``) but not the live table's other indexes, so these are dropped first and made again after
    (from their stored SQL, unchanged; one sort instead of an insert per row): 200k events' tables ~0.38 -> ~0.29 s.
    An index the shadow has too is kept (``_indexes_to_remake``): the transfer copies it with the rows, where
    making it again sorted the whole table (the two-process swap of 1M events: ~0.2 s of ~3 s, docs/storage.md).
    Same rows either way; readers see the old table or the new one (one transaction).
    """
    if [c.name for c in live.columns] != [c.name for c in shadow.columns]:
        raise RuntimeError(f"{shadow.name} does not have {live.name}'s columns")
    if conn.dialect.name != "sqlite":
        if list(schemas) != [None]:
            raise RuntimeError("a shadow in another database is for SQLite")
        conn.execute(delete(live))
        columns = [column.name for column in live.columns]
        conn.execute(insert(live).from_select(columns, select(*(shadow.c[c] for c in columns))))
        return
    indexes = _indexes_to_remake(conn, live, shadow)
    for index, _ in indexes:
        conn.exec_driver_sql(f'DROP INDEX "{index}"')
    conn.execute(delete(live))
    sources = [f'"{shadow.name}"' if schema is None else f'{schema}."{shadow.name}"' for schema in schemas]
    if len(sources) > 1 and live.name == PROJECTION_TABLES[MERGED].name:
        if [c.name for c in live.columns] != ["account", "name", "value", "last_seq"]:
            raise RuntimeError(f"{live.name}: unexpected columns for the merge")
        union = " UNION ALL ".join(f"SELECT * FROM {source}" for source in sources)
        conn.exec_driver_sql(
            f'INSERT INTO "{live.name}" SELECT account, name, sum(value), max(last_seq) FROM ({union})'
            " GROUP BY account, name"
        )
    else:
        for source in sources:
            conn.exec_driver_sql(f'INSERT INTO "{live.name}" SELECT * FROM {source}')
    for _, sql in indexes:
        conn.exec_driver_sql(sql)


def _indexes_to_remake(conn: Connection, live: Table, shadow: Table) -> list[tuple[str, str]]:
    """(name, stored SQL) of ``live``'s secondary indexes that ``shadow`` has no index like (the same columns in the
    same order, both plain: not unique, not partial): ``_refill`` drops them and makes them again after. The others
    stay, and SQLite's transfer fills them from the shadow's (it transfers only when the source has an index like
    each of the destination's; when it does not, the rows go one by one, the same rows)."""
    shadow_like = {
        tuple(column.name for column in index.columns)
        for index in shadow.indexes
        if not index.unique and index.dialect_options["sqlite"]["where"] is None
    }
    remake: list[tuple[str, str]] = []
    for _, name, unique, origin, partial in conn.exec_driver_sql(f'PRAGMA index_list("{live.name}")').all():
        if origin != "c":  # the primary key's own index ("pk") or a UNIQUE constraint's ("u")
            continue
        sql = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).scalar_one()
        columns = tuple(str(row[2]) for row in conn.exec_driver_sql(f'PRAGMA index_info("{name}")').all())
        if unique or partial or columns not in shadow_like:
            remake.append((str(name), str(sql)))
    return remake


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int  # log entries folded
    checkpoint: int  # the live checkpoint after the swap
    rows: dict[str, int]  # rows per table after the swap
    seconds: float
    workers: int = 1  # processes that folded the log (2: in parallel, see rebuild_parallel.py)
    worker_cpu_seconds: float = 0.0  # their CPU time, together (parallel only)
    worker_peak_rss_mb: float = 0.0  # the larger of their peak resident sets (parallel only)


def rebuild(
    engine: Engine,
    *,
    batch: int = BATCH,
    on_batch: Callable[[BatchResult], None] | None = None,
    before_swap: Callable[[], None] | None = None,
    parallel: bool | None = None,
    on_restart: Callable[[], None] | None = None,
    reader: bool | None = None,
) -> RebuildResult:
    """Rebuild every projection table from the event log and swap the result in (see the module docstring).

    ``parallel``: ``None`` (the default) folds in two processes on a SQLite file when the log is large enough and
    has two markets or more (``rebuild_parallel.py``); ``True`` whenever it can (tests); ``False`` never. When the
    parts turn out not to be independent, the log is folded again in one process, and ``on_restart`` is called
    first (the batches ``on_batch`` was told of so far count for nothing: a progress line starts again).

    ``reader``: in the one-process fold, whether a child process reads and parses the log meanwhile
    (``rebuild_reader.py``): ``None`` (the default) on a SQLite file or PostgreSQL whose log is large enough, ``True``
    whenever it can (tests), ``False`` never.

    ``before_swap`` is a test seam: called after the shadow is complete, before the swap transaction.
    """
    started = time.monotonic()
    path = sqlite_path(engine.url)
    # One rebuild per SQLite file at a time: they would share the scratch files.
    lock = nullcontext() if path is None else _exclusive(path.with_name(path.name + SCRATCH_SUFFIX + ".lock"))
    with lock, _fewer_collections():
        if (path is not None or engine.dialect.name == "postgresql") and parallel is not False:
            until = log_head(engine, min_entries=1 if parallel else PARALLEL_MIN_ENTRIES)
            plan = done = None
            if until is not None:
                # The workers start first: they import (~0.4 s of CPU each) while the plan reads the log; a plan of
                # None (fewer than two markets) kills them unused.
                with Workers(2) as workers:
                    plan = plan_until(engine, until)
                    if plan is not None:
                        done = _rebuild_in_parts(engine, path, plan, workers, batch, on_batch, before_swap)
                if plan is not None and done is None and on_restart is not None:
                    on_restart()  # the parts shared rows: the one-process fold below starts from the beginning
                if plan is not None and done is not None:
                    rows, parts = done
                    return RebuildResult(
                        sum(part.events for part in parts),
                        plan.until,
                        rows,
                        time.monotonic() - started,
                        workers=len(parts),
                        worker_cpu_seconds=sum(part.cpu_seconds for part in parts),
                        worker_peak_rss_mb=max(part.peak_rss_mb for part in parts),
                    )
        events, checkpoint, rows = _rebuild_in_one(engine, batch, on_batch, before_swap, reader)
    return RebuildResult(events, checkpoint, rows, time.monotonic() - started)


def _rebuild_in_one(
    engine: Engine,
    batch: int,
    on_batch: Callable[[BatchResult], None] | None,
    before_swap: Callable[[], None] | None,
    reader: bool | None = None,
) -> tuple[int, int, dict[str, int]]:
    shadow_metadata, shadow = shadow_tables(SHADOW_PREFIX)
    events = 0

    def count(result: BatchResult) -> None:
        nonlocal events
        events += result.events
        if on_batch is not None:
            on_batch(result)

    with _build_target(engine) as target:
        build = target.engine
        with _scratch_space(target.scratch), writer(build).begin() as conn:
            shadow_metadata.drop_all(conn)
            shadow_metadata.create_all(conn)
            if target.scratch is not None:
                projector_checkpoint.create(conn)  # the shadow's own checkpoint row lives in the scratch file
            conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
        try:
            builder = ProjectionStore(build, tables=shadow, checkpoint_name=SHADOW_CHECKPOINT, fresh=True)
            with _scratch_space(target.scratch):
                if reader is not False and (target.scratch is not None or engine.dialect.name == "postgresql"):
                    until = log_head(engine, min_entries=1 if reader else READER_MIN_ENTRIES)
                    if until is not None:
                        path = sqlite_path(engine.url)
                        database = f"sqlite:///{path}" if path else engine.url.render_as_string(hide_password=False)
                        _fold_read_ahead(builder, ReaderSpec(database, 0, until, batch), count)
                builder.catch_up(EventLog(engine), batch=batch, on_batch=count)  # the rest (all, without a reader)
            checkpoint = builder.load_checkpoint()  # what the shadow holds (nobody else writes it)
            if before_swap is not None:
                before_swap()
            files = {} if target.scratch is None else {SCRATCH_SCHEMA: target.scratch}
            rows = _swap(engine, files, shadow, checkpoint)
            if target.scratch is None:
                with writer(engine).begin() as conn:
                    conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
                    shadow_metadata.drop_all(conn)
        except BaseException:
            if target.scratch is None:  # (a scratch file is removed as a whole)
                with writer(engine).begin() as conn:
                    shadow_metadata.drop_all(conn)
                    conn.execute(delete(projector_checkpoint).where(projector_checkpoint.c.name == SHADOW_CHECKPOINT))
            raise
    return events, checkpoint, rows


READER_MIN_ENTRIES: Final = PARALLEL_MIN_ENTRIES  # below this the reader costs more than it saves (~0.5 s to start)


def _fold_read_ahead(builder: ProjectionStore, spec: ReaderSpec, count: Callable[[BatchResult], None]) -> None:
    """Fold the events a reader process reads and parses (``rebuild_reader.py``) into ``builder``, a fresh store at
    checkpoint ``spec.after``. When the reader fails, or the store's checkpoint moved (nothing else writes a scratch
    file: never seen), this stops, and the caller's ``catch_up`` goes on from the store's checkpoint."""
    try:
        with closing(read_parsed(spec)) as batches:  # the child stopped however this ends (an interrupt included)
            for events in batches:
                result = builder.project_events(events)
                if result is None:
                    log.warning("rebuild: the shadow's checkpoint moved; reading the log in this process instead")
                    return
                count(result)
    except ReaderFailed as failure:
        log.warning("rebuild: %s; reading the rest of the log in this process instead", failure)


def _rebuild_in_parts(
    engine: Engine,
    path: Path | None,
    plan: Plan,
    workers: Workers,
    batch: int,
    on_batch: Callable[[BatchResult], None] | None,
    before_swap: Callable[[], None] | None,
) -> tuple[dict[str, int], list[PartResult]] | None:
    """The parallel rebuild (``rebuild_parallel.py``): (rows per table, the parts), or ``None`` when its parts were
    not independent (nothing swapped in). ``path``: the log's SQLite file, ``None`` on PostgreSQL."""
    with _part_scratches(path) as scratches:
        database = f"sqlite:///{path}" if path is not None else engine.url.render_as_string(hide_password=False)
        specs = [WorkerSpec(part, database, str(scratch), plan, batch) for part, scratch in enumerate(scratches)]
        try:
            with _scratch_space(scratches[0]):
                parts = workers.run(specs, on_batch, KeyLedger())
        except SharedRows as shared:
            log.warning(
                "rebuild: the two groups of markets share rows (%s), so they cannot be folded apart; folding the"
                " log in one process instead",
                shared,
            )
            return None
        finally:
            # Every worker stopped before ``_part_scratches`` removes their files: stopped later, one still starting
            # (an interrupt at the other's first batch) could make its file after the removal, and leave it.
            workers.close()
        if before_swap is not None:
            before_swap()
        _, shadow = shadow_tables(SHADOW_PREFIX)
        rows = _swap(engine, {f"rebuild_part{part}": scratch for part, scratch in enumerate(scratches)}, shadow,
                     plan.until)  # fmt: skip
        return rows, parts


@contextmanager
def _part_scratches(path: Path | None) -> Iterator[list[Path]]:
    """The two workers' scratch files: beside the log's SQLite file (``<db>.rebuild.0``, ``.1``), or in a temporary
    directory of their own (PostgreSQL); none there before, none left after."""
    if path is None:
        with _temporary_directory() as directory:
            yield [directory / f"part{part}.db" for part in range(2)]
        return
    scratches = [path.with_name(f"{path.name}{SCRATCH_SUFFIX}.{part}") for part in range(2)]
    try:
        for scratch in scratches:
            _remove(scratch)
        yield scratches
    finally:
        for scratch in scratches:
            _remove(scratch)


def _swap(engine: Engine, files: Mapping[str, Path], shadow: Mapping[str, Table], checkpoint: int) -> dict[str, int]:
    """The live tables := the shadow tables (in ``files``, SQLite scratch files, under their schema names; empty:
    beside the live ones), and the live checkpoint := ``checkpoint``, in one write transaction. On SQLite the files
    are attached; into PostgreSQL their rows are sent with ``COPY`` (``_copy_into_postgres``).

    A full disk meanwhile (the live database's: SQLite's file, or the PostgreSQL server's) rolls the transaction
    back and is one line: the live projection is as it was."""
    try:
        return _swap_in(engine, files, shadow, checkpoint)
    except Exception as error:
        if not is_disk_full(error):
            raise
        path = sqlite_path(engine.url)
        where = f"the disk of {path}" if path else f"the PostgreSQL server's disk ({display_url(engine.url)})"
        raise StoreError(
            f"tracker rebuild ran out of disk space writing the new projection into the database: free space on"
            f" {where} (the swap writes the projection tables again, about their size once more) and run it again;"
            " the projection is unchanged"
        ) from error


def _swap_in(engine: Engine, files: Mapping[str, Path], shadow: Mapping[str, Table], checkpoint: int) -> dict[str, int]:
    schemas: list[str | None] = list(files) or [None]
    copy_in = bool(files) and engine.dialect.name == "postgresql"
    with (
        writer(engine).connect() as conn,
        _read_only(files.values()) if copy_in else _attached(conn, files) as sources,
        conn.begin(),
    ):
        lock_checkpoint(conn, CHECKPOINT_NAME)  # a live projector's write waits for us, then sees the new seq
        if copy_in:  # the scratch files' times are UTC text without an offset (see _copy_into_postgres)
            conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
        rows: dict[str, int] = {}
        for name, live in PROJECTION_TABLES.items():
            if sources:
                _copy_into_postgres(conn, live, shadow[name], sources)
            else:
                _refill(conn, live, shadow[name], schemas)
            rows[name] = int(conn.execute(select(func.count()).select_from(live)).scalar_one())
        discrepancies = PROJECTION_TABLES["discrepancies"]
        rows["discrepancies_open"] = int(
            conn.execute(
                select(func.count()).select_from(discrepancies).where(discrepancies.c.status == "open")
            ).scalar_one()
        )
        # the checkpoint's upsert only (a whole ProjectionStore would also compile every table's upsert and make
        # their encoders: ~10-25 ms in the serial part of a parallel rebuild, for nothing)
        conn.execute(
            upsert(projector_checkpoint, engine.dialect.name),
            [{"name": CHECKPOINT_NAME, "seq": checkpoint, "updated_at": datetime.now(UTC)}],
        )
    return rows


COPY_PAGE: Final = 5_000  # rows read from a scratch file at a time


@contextmanager
def _read_only(files: Iterable[Path]) -> Iterator[list[sqlite3.Connection]]:
    """The scratch ``files`` opened read-only, one connection each, for the whole swap."""
    sources: list[sqlite3.Connection] = []
    try:
        for path in files:
            sources.append(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
        yield sources
    finally:
        for source in sources:
            source.close()


def _copy_into_postgres(conn: Connection, live: Table, shadow: Table, sources: Sequence[sqlite3.Connection]) -> None:
    """Replace ``live``'s rows (PostgreSQL, in the caller's transaction) with those of ``shadow`` in the SQLite
    scratch files open as ``sources``, sent with ``COPY ... FROM STDIN`` as a scratch file holds them: money as its
    exact decimal text (PostgreSQL's ``numeric`` reads it digit for digit), times as UTC text without an offset (read
    as UTC: ``_swap`` sets the transaction's ``TimeZone`` so), booleans as 0/1 (``boolean`` reads ``'0'``/``'1'``).
    With more than one file the rows are put together as ``_refill`` does: disjoint but ``counters``, merged by sum
    and max. Tests rebuild on PostgreSQL (its sessions far from UTC) and compare every row with the incremental
    projection."""
    if [c.name for c in live.columns] != [c.name for c in shadow.columns]:
        raise RuntimeError(f"{shadow.name} does not have {live.name}'s columns")
    conn.execute(delete(live))
    columns = ", ".join(f'"{column.name}"' for column in live.columns)
    with _driver_connection(conn).cursor() as cursor, cursor.copy(f'COPY "{live.name}" ({columns}) FROM STDIN') as copy:
        write = copy.write_row
        if len(sources) > 1 and live.name == PROJECTION_TABLES[MERGED].name:
            if [c.name for c in live.columns] != ["account", "name", "value", "last_seq"]:
                raise RuntimeError(f"{live.name}: unexpected columns for the merge")
            merged: dict[tuple[str, str], tuple[int, int]] = {}
            for source in sources:
                for account, name, value, last_seq in source.execute(f'SELECT {columns} FROM "{shadow.name}"'):
                    before = merged.get((account, name), (0, 0))
                    merged[account, name] = (before[0] + value, max(before[1], last_seq))
            for (account, name), (value, last_seq) in merged.items():
                write((account, name, value, last_seq))
            return
        for source in sources:
            found = source.execute(f'SELECT {columns} FROM "{shadow.name}"')
            while page := found.fetchmany(COPY_PAGE):
                for row in page:
                    write(row)
