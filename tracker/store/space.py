"""How much room the database takes, and how much its disk has left: ``tracker status``'s ``storage:`` line and the
``tracker_database_bytes`` / ``tracker_disk_free_bytes`` gauges.

- SQLite: the database file and its ``-wal`` beside it, and the disk they are on (``statvfs``: the free space an
  unprivileged writer may use, ``f_bavail``, of the total, ``f_blocks``).
- PostgreSQL: ``pg_database_size`` of the current database, every schema in it. The server's disk is not visible
  from a client, so its free space is unknown (``None``): watch it on the server.
- An in-memory SQLite database: nothing to tell.

A full disk stops the log's appends: ``tracker run`` holds what it receives and retries until there is room (README,
"Database outages"). ``Space.low`` warns before that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Engine, text

from tracker.store.engine import sqlite_path

# Low: less than 1 GiB free, or less than the database's own size (a VACUUM needs that much again, and a rebuild or a
# backup on the same disk about as much). Not a share of the disk: 40 GiB free of 900 is no alarm for a 1 GiB log.
LOW_FREE_BYTES: Final = 1 << 30
LOW_ADVICE: Final = (
    "free space on it (when it is full, appends stop: tracker run holds what it receives and retries until there is"
    " room)"
)


@dataclass(frozen=True, slots=True)
class Space:
    database_bytes: int | None  # None: an in-memory database
    disk_free_bytes: int | None  # None: not visible from here (PostgreSQL, in-memory)
    disk_total_bytes: int | None
    disk_path: str | None = None  # the directory whose disk that is (SQLite: the database file's)

    def disk(self) -> str | None:
        """``73.5 GiB free of 252.0 GiB (29 %)``, or ``None`` when the disk is not visible from here."""
        free, total = self.disk_free_bytes, self.disk_total_bytes
        if free is None or total is None:
            return None
        share = 100 * free / total if total else 0.0
        return f"{format_bytes(free)} free of {format_bytes(total)} ({share:.0f} %)"

    @property
    def low(self) -> bool:
        """Less than 1 GiB free, or less than the database's size (unknown: not low)."""
        if self.disk_free_bytes is None:
            return False
        return self.disk_free_bytes < max(LOW_FREE_BYTES, self.database_bytes or 0)


def read_space(engine: Engine) -> Space:
    """The database's size and its disk's free space now (see the module docstring)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return Space(int(size), None, None)
    path = sqlite_path(engine.url)
    if path is None:
        return Space(None, None, None)
    size = sum(_size(part) for part in (path, path.with_name(path.name + "-wal")))
    directory = path.parent.resolve()
    disk = os.statvfs(directory)
    return Space(size, disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize, str(directory))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # no -wal file: nobody has the database open
        return 0


def format_bytes(count: int) -> str:
    """``1.2 GiB``, ``35.0 MiB``, ``512 B``: binary units, one decimal."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
