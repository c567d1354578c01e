"""``tracker db backup``: a copy of the database taken while ``tracker run`` writes it, proven equal to the log.

How, and why it is safe to run beside a live tracker:

- **SQLite**: SQLite's online backup API (``sqlite3.Connection.backup``) from a read-only connection that holds one
  read transaction from the first page to the last, so the copy is the database as of one commit, whole (log,
  quarantine, projections, schema), however many steps it takes: the steps read that snapshot and never restart,
  whatever other connections commit meanwhile (a test checks it). In WAL mode a reader never blocks the writer, so
  ``tracker run`` goes on appending; what it appends after that commit is not in the copy, and the next backup has
  it.
- **Paced beside a live run.** Copying fast is not free for a writer on the same disk: a 391 MB database copied in
  one step (0.6 s) left the whole file dirty in the page cache, and the flush behind it held the live run's
  ``fsync`` back: its p99 receive→commit at 1,000 frames/s went from 2.4 ms to 184 ms while backups ran back to
  back (``bench/backup.py``). So the copy goes in steps of ``STEP_PAGES`` pages, each flushed to disk before the
  next, and, while a ``tracker run`` holds the file's writer lock, with a pause of ``STEP_PAUSE_S`` after each
  (about 80 MB/s on this machine; the chain walk of the copy then uses one core, not two): p99 9.0-16.1 ms with
  backups back to back, 3.2-4.9 ms without. With no run writing, it goes as fast as it can.
- **PostgreSQL**: the log as of now copied into a new SQLite file (``log_copy.snapshot_log``: no lock on the source,
  the rows up to the head its walk started from, which never change), then the projections rebuilt in it
  (``rebuild``): a file any ``tracker`` command and the ``sqlite3`` shell open, for an auditor or a second site. It
  is not the server's backup (``pg_dump`` is): the runtime tables and the server's own settings are not in it.
- Either way it is written beside the destination as ``<name>.partial`` and only linked to its name once it
  verifies, so a destination that exists is always a whole, verified backup (and one that exists already is never
  overwritten).
- It is checked before it counts: the copy's hash chain is walked from seq 1 (``tracker verify``'s walk), and the
  source's row at the copy's head seq must have the copy's head hash. Each link covers the one before, so equal head
  hashes prove every row of the copy equals the source's (the log only grows: rows are never rewritten).
- The copy is one self-contained file (``journal_mode=DELETE``: no ``-wal``/``-shm`` beside it), readable by every
  ``tracker`` command with ``--db-url sqlite:///<path>`` and by the ``sqlite3`` shell.

An in-memory database has nothing to keep: refused with one line.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from tracker.domain.chain import Anchor
from tracker.errors import StoreError
from tracker.store.chain_walk import walk_chain
from tracker.store.engine import open_engine, sqlite_path
from tracker.store.lease import file_writer
from tracker.store.log_copy import snapshot_log
from tracker.store.migrate import upgrade
from tracker.store.rebuild import SCRATCH_SUFFIX, rebuild
from tracker.store.schema import event_log, quarantine

Rebuilding = Callable[[Engine], object]  # rebuilds a copy's projections

STEP_PAGES = 512  # pages copied a step (4 MiB with tracker's 8 KiB pages), each step flushed to disk
STEP_PAUSE_S = 0.05  # after each step while a tracker run writes the database (bench/backup.py: ~80 MB/s here)


@dataclass(frozen=True, slots=True)
class OnlineBackup:
    """A backup written and verified: where, what it holds, its head anchor."""

    path: Path
    events: int
    quarantined: int
    head: Anchor
    size: int  # bytes on disk
    seconds: float


def back_up(engine: Engine, destination: Path, *, rebuilding: Rebuilding | None = None) -> OnlineBackup:
    """Copy the database of ``engine`` to the SQLite file ``destination`` (which must not exist) while writers go on,
    verify the copy against the source (the module docstring), then give it its name. ``rebuilding``: called with
    the copy's engine to rebuild its projections (PostgreSQL; the CLI shows progress)."""
    source = sqlite_path(engine.url)
    if engine.dialect.name == "sqlite" and source is None:
        raise StoreError("an in-memory SQLite database cannot be backed up: nothing outlives the process")
    if destination.exists():
        raise StoreError(f"{destination} exists already: choose another path (a backup never overwrites a file)")
    if not destination.parent.is_dir():
        raise StoreError(f"the directory {destination.parent} does not exist: create it or choose another path")
    partial = destination.with_name(destination.name + ".partial")
    started = time.monotonic()
    try:
        partial.unlink(missing_ok=True)  # a copy an interrupted backup left: never a backup, so never kept
        if source is not None:
            paced = file_writer(source).pid is not None  # a tracker run writes it now
            _copy(source, partial, paced=paced)
            anchor, events, held = _verify(engine, partial, parts=1 if paced else None)
        else:
            anchor, events, held = _snapshot(engine, partial, rebuilding or rebuild)
        _single_file(partial)  # tracker's engine opened it in WAL mode
        os.link(partial, destination)  # no-clobber: fails if the destination appeared meanwhile
    except FileExistsError:
        raise StoreError(f"{destination} appeared while the backup was written: nothing replaced") from None
    except OSError as error:
        raise StoreError(f"cannot write the backup {destination}: {error.strerror or error}") from None
    finally:
        for leftover in (partial, *_beside(partial)):
            leftover.unlink(missing_ok=True)
    return OnlineBackup(destination, events, held, anchor, destination.stat().st_size, time.monotonic() - started)


def _copy(source: Path, copy_path: Path, *, paced: bool) -> None:
    """``source`` copied to ``copy_path`` as of one commit, in steps, each flushed (and, ``paced``, followed by a
    pause: a live run writes the source)."""
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)) as reader,
            closing(sqlite3.connect(copy_path)) as copy,
        ):
            # One read transaction for every step: each reads the same snapshot, and none is restarted by another
            # connection's commit (SQLite restarts a backup whose source changed between steps, unless the reading
            # connection itself holds the snapshot).
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            flushed = os.open(copy_path, os.O_RDONLY)
            try:

                def step_done(_status: int, _remaining: int, _total: int) -> None:
                    os.fsync(flushed)  # a few MB a step reach the disk, not the whole file at the end
                    if paced:
                        time.sleep(STEP_PAUSE_S)  # pacing (a thread of its own), not synchronisation

                reader.backup(copy, pages=STEP_PAGES, progress=step_done)
            finally:
                os.close(flushed)
            reader.execute("COMMIT")
    except sqlite3.Error as error:
        raise StoreError(f"cannot copy {source}: {error}") from None


def _snapshot(engine: Engine, copy_path: Path, rebuilding: Rebuilding) -> tuple[Anchor, int, int]:
    """The log of ``engine`` (PostgreSQL) as of now into a new SQLite file, verified, its projections rebuilt."""
    url = f"sqlite:///{copy_path}"
    upgrade(url)
    copy = open_engine(url)
    try:
        copied = snapshot_log(engine, copy)
        rebuilding(copy)
    finally:
        copy.dispose()
    return Anchor(copied.head, copied.head_hash), copied.events, copied.quarantined


def _beside(path: Path) -> list[Path]:
    """The files SQLite and tracker keep beside the database at ``path`` while it is open (its journals, its lock
    files): a backup leaves none of the partial copy's behind."""
    suffixes = ("-wal", "-shm", "-journal", ".lock", SCRATCH_SUFFIX + ".lock")
    return [path.with_name(path.name + suffix) for suffix in suffixes]


def _single_file(path: Path) -> None:
    """The database at ``path`` as one self-contained file: no ``-wal``/``-shm`` beside it."""
    try:
        with closing(sqlite3.connect(path)) as copy:
            copy.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as error:
        raise StoreError(f"cannot write the backup {path}: {error}") from None


def _verify(engine: Engine, copy_path: Path, *, parts: int | None) -> tuple[Anchor, int, int]:
    """The copy's head anchor, events and quarantined frames, once its chain is intact and its head is the source's
    row at that seq. ``parts``: the chain walk's processes (``walk_chain``; 1 beside a live run)."""
    copy = open_engine(f"sqlite:///{copy_path}")
    try:
        walked = walk_chain(copy, parts=parts)
        walker = walked.walker
        broken = walker.finish() if walked.unreadable is None else None
        if walked.unreadable is not None:
            why = f"unreadable past seq {walker.head}: {walked.unreadable}"
        elif broken is not None:
            why = f"the chain fails at seq {broken.seq}: {broken.reason}"
        else:
            why = None
        if why is not None:
            raise StoreError(
                f"no backup written, the log does not verify: {why}; tracker verify on the database says more"
            )
        with copy.connect() as conn:
            held = int(conn.execute(select(func.count()).select_from(quarantine)).scalar_one())
    finally:
        copy.dispose()
    if walker.head:
        with engine.connect() as conn:
            stored = conn.execute(select(event_log.c.hash).where(event_log.c.seq == walker.head)).scalar_one_or_none()
        if stored != walker.head_hash:
            raise StoreError(
                f"the copy's row {walker.head} differs from the database's: no backup written; run tracker verify"
            )
    return Anchor(walker.head, walker.head_hash), walker.count, held
