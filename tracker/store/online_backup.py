"""``tracker db backup``: a copy of the database taken while ``tracker run`` writes it, proven equal to the log.

How, and why it is safe to run beside a live tracker:

- **SQLite**: SQLite's online backup API (``sqlite3.Connection.backup``) from a read-only connection, in one step: one
  read transaction, so the copy is the database as of one commit, whole (log, quarantine, projections, schema). In
  WAL mode a reader never blocks the writer, so ``tracker run`` goes on appending meanwhile; what it appends after
  that commit is not in the copy, and the next backup has it.
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
from tracker.store.log_copy import snapshot_log
from tracker.store.migrate import upgrade
from tracker.store.rebuild import SCRATCH_SUFFIX, rebuild
from tracker.store.schema import event_log, quarantine

Rebuilding = Callable[[Engine], object]  # rebuilds a copy's projections


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
            _copy(source, partial)
            anchor, events, held = _verify(engine, partial)
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


def _copy(source: Path, copy_path: Path) -> None:
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader,
            closing(sqlite3.connect(copy_path)) as copy,
        ):
            reader.backup(copy)  # pages=-1: one step, one read transaction: the database as of one commit
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


def _verify(engine: Engine, copy_path: Path) -> tuple[Anchor, int, int]:
    """The copy's head anchor, events and quarantined frames, once its chain is intact and its head is the source's
    row at that seq."""
    copy = open_engine(f"sqlite:///{copy_path}")
    try:
        walked = walk_chain(copy)
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
