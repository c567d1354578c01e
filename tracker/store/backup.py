"""A backup of the truth (``event_log`` and ``quarantine``) written before a schema downgrade may drop it.

Only ``tracker db downgrade ... --drop-log`` calls this, inside the downgrade's own transaction, so the backup holds
exactly the rows that are then dropped (nobody can append in between):

- SQLite: a consistent copy of the whole database file through SQLite's online backup API
  (``sqlite3.Connection.backup``) from a second connection. The downgrade's transaction holds the write lock
  (``BEGIN IMMEDIATE``), and in WAL mode a reader still sees the last commit, so the copy is the state the downgrade
  starts from. It opens as it is: ``tracker verify --db-url sqlite:///<copy>``.
- PostgreSQL: no ``pg_dump`` is assumed to be installed. The two tables are locked against writers (``SHARE`` mode) and
  exported as JSON lines, one object per row with every column (``{"table": "event_log", "seq": 1, ...}``; the
  payload text byte for byte, times in ISO 8601). That is an export for the record and for re-import by hand, not a
  restorable dump: take a ``pg_dump`` first when you want the database back as it was.

Either way the copy is read back and its row counts compared before the caller may drop anything.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, inspect, select, text

from tracker.errors import StoreError
from tracker.store.engine import sqlite_path
from tracker.store.schema import event_log, quarantine

TRUTH_TABLES = ("event_log", "quarantine")


@dataclass(frozen=True)
class TruthCounts:
    events: int
    quarantined: int

    @property
    def empty(self) -> bool:
        return self.events == 0 and self.quarantined == 0

    def describe(self) -> str:
        return f"{self.events} event(s) and {self.quarantined} quarantined item(s)"


def truth_counts(conn: Connection) -> TruthCounts:
    """Rows in the log and the quarantine (0 for a table that does not exist yet).

    On PostgreSQL the tables are first locked against appenders (``SHARE``) until the transaction ends, so the counts,
    the backup and the drop see the same rows; on SQLite the caller's ``BEGIN IMMEDIATE`` does that already."""
    present = set(inspect(conn).get_table_names())
    if conn.dialect.name == "postgresql" and (names := [name for name in TRUTH_TABLES if name in present]):
        conn.execute(text("LOCK TABLE " + ", ".join(names) + " IN SHARE MODE"))  # fixed names, not input
    counts = [
        conn.execute(select(func.count()).select_from(table)).scalar_one() if table.name in present else 0
        for table in (event_log, quarantine)
    ]
    return TruthCounts(int(counts[0]), int(counts[1]))


def default_backup_path(conn: Connection, now: datetime | None = None) -> Path:
    """``<db>.before-downgrade-<UTC stamp>.db`` beside a SQLite file; ``./tracker-log-<database>-<stamp>.jsonl`` for
    PostgreSQL (the current directory: the server's disk is not ours to write)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    path = sqlite_path(conn.engine.url)
    if path is not None:
        return path.with_name(f"{path.name}.before-downgrade-{stamp}.db")
    return Path(f"tracker-log-{conn.engine.url.database or 'db'}-{stamp}.jsonl")


def back_up_truth(conn: Connection, destination: Path, counts: TruthCounts) -> Path:
    """Write the backup to ``destination`` (which must not exist) and prove it holds ``counts``; return its path."""
    if destination.exists():
        raise StoreError(f"the backup file {destination} exists already: choose another --backup path")
    if conn.dialect.name == "sqlite":
        _copy_sqlite(conn, destination)
        got = _sqlite_counts(destination)
    else:
        got = _export_postgres(conn, destination)
    if got != counts:
        raise StoreError(
            f"the backup {destination} holds {got.describe()} but the database {counts.describe()}:"
            " nothing was dropped; check the disk and try again"
        )
    return destination


def _copy_sqlite(conn: Connection, destination: Path) -> None:
    source_path = sqlite_path(conn.engine.url)
    if source_path is None:
        raise StoreError("an in-memory SQLite database cannot be backed up: nothing to keep")
    try:
        # A second connection: the downgrade's holds the write lock; this one reads the last commit (WAL).
        with (
            closing(sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)) as source,
            closing(sqlite3.connect(destination)) as copy,
        ):
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal/-shm beside it
    except sqlite3.Error as error:
        destination.unlink(missing_ok=True)
        raise StoreError(f"cannot write the backup {destination}: {error}; nothing was dropped") from None


def _sqlite_counts(path: Path) -> TruthCounts:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as copy:
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        events = copy.execute("SELECT count(*) FROM event_log").fetchone()[0] if "event_log" in tables else 0
        held = copy.execute("SELECT count(*) FROM quarantine").fetchone()[0] if "quarantine" in tables else 0
    return TruthCounts(int(events), int(held))


def _export_postgres(conn: Connection, destination: Path) -> TruthCounts:
    present = set(inspect(conn).get_table_names())
    tables = [table for table in (event_log, quarantine) if table.name in present]  # locked by truth_counts
    written = {"event_log": 0, "quarantine": 0}
    try:
        with destination.open("x", encoding="utf-8") as out:
            for table in tables:
                key = table.c.seq if table.name == "event_log" else table.c.id
                for row in conn.execute(select(table).order_by(key)).mappings():
                    out.write(json.dumps({"table": table.name, **{k: _json_value(v) for k, v in row.items()}}) + "\n")
                    written[table.name] += 1
    except OSError as error:
        destination.unlink(missing_ok=True)
        raise StoreError(f"cannot write the backup {destination}: {error.strerror}; nothing was dropped") from None
    return TruthCounts(written["event_log"], written["quarantine"])


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
