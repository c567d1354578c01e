"""``tracker db copy``: the truth (``event_log`` and ``quarantine``) copied, row for row, into another database.

What it is for: moving a log to PostgreSQL when one SQLite file is outgrown (or back, or to another server), with
every guarantee kept. Each row is copied as it is stored, every column (its ``seq``, its ``prev_hash`` and ``hash``
included), so the copy is the same log, not a new one: ``tracker verify`` prints the same head anchor on both, and
appends to the copy continue its chain. Nothing is renumbered or rehashed, which is why the target must hold no log
yet: two logs cannot be merged into one without renumbering one of them (tracker never rewrites a log).

The steps, each refusing with one line before anything is written:

1. The source at the newest schema (its columns are the ones read); the target migrated to it by the caller.
2. Nobody writes the source: on SQLite its writer lock (the one ``tracker run`` takes) is taken for the whole copy, so
   a ``tracker run`` cannot start meanwhile; on PostgreSQL no account's writer lease may be held, and the copy reads
   under ``LOCK ... IN SHARE MODE`` (an append waits for the copy). The target's SQLite lock is taken too.
3. The source's chain is walked first (``walk_chain``, as ``tracker verify`` does): a log that does not verify is not
   copied (the copy would carry the same break; ``tracker verify`` names it).
4. One transaction on the target: its two tables locked (PostgreSQL: ``EXCLUSIVE``, so a ``tracker run`` started on it
   waits; SQLite: the write lock), both must be empty, then every row in seq order (the quarantine by id), in pages;
   on PostgreSQL through ``COPY``. The source's head must still be the walked one. A failure rolls everything back.
5. The target's chain is walked after the commit: intact, as many rows, the same head hash as the source's. Every
   column but the links is in each row's hash, so this proves every row arrived exactly.

One conversion, on PostgreSQL only: a quarantined raw text holding NUL (which PostgreSQL text cannot hold; SQLite
keeps it) is stored JSON-quoted with a note in its reason, as tracker's own writer does on PostgreSQL
(``event_log._fit``). The quarantine is outside the chain; event log rows never hold NUL on any backend (such an
entry is quarantined instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, Table, func, insert, select, text

from tracker.domain.chain import GENESIS
from tracker.errors import StoreError
from tracker.store.chain_walk import Walked, walk_chain
from tracker.store.engine import display_url, sqlite_path, writer
from tracker.store.event_log import fit_quarantine_row
from tracker.store.lease import SqliteFileLock, file_writer, lease_writers
from tracker.store.migrate import check_schema
from tracker.store.schema import event_log, quarantine

PAGE: Final = 10_000  # rows read and written at a time

Progress = Callable[[int], None]  # rows copied so far


@dataclass(frozen=True, slots=True)
class CopyResult:
    events: int
    quarantined: int
    head: int  # the last seq (0: an empty log)
    head_hash: str
    seconds: float


def copy_log(source: Engine, target: Engine, *, page: int = PAGE, on_progress: Progress | None = None) -> CopyResult:
    """Copy ``source``'s event log and quarantine into ``target`` (migrated, holding neither yet), as the module
    docstring says; ``StoreError`` with one line when it cannot be done, nothing written then."""
    started = time.monotonic()
    _refuse_same(source, target)
    check_schema(source)
    check_schema(target)
    with _no_other_writer(source, "source"), _no_other_writer(target, "target"):
        walked = walk_chain(source)
        if walked.unreadable is not None:
            raise StoreError(f"the source database cannot be read: {walked.unreadable}; nothing copied")
        broken = walked.walker.finish()
        if broken is not None:
            raise StoreError(
                f"the source's hash chain fails at seq {broken.seq} ({broken.reason}): nothing copied;"
                " `tracker verify` on the source says more"
            )
        head, head_hash = walked.walker.head, walked.walker.head_hash
        events, quarantined = _copy(source, target, (head, head_hash), page, on_progress)
    problem = _differs(walk_chain(target), events, head_hash)
    if problem is not None:
        raise StoreError(
            f"the copy at {display_url(target.url)} does not verify ({problem}); the source is untouched:"
            " drop the target's database and report this"
        )
    return CopyResult(events, quarantined, head, head_hash, time.monotonic() - started)


def _differs(walked: Walked, events: int, head_hash: str) -> str | None:
    """How the target's walk differs from the source's (step 5), or None."""
    if walked.unreadable is not None:
        return walked.unreadable
    broken = walked.walker.finish()
    if broken is not None:
        return f"its chain fails at seq {broken.seq}: {broken.reason}"
    if walked.walker.count != events:
        return f"{walked.walker.count} rows, the source has {events}"
    if walked.walker.head_hash != head_hash:
        return f"head hash {walked.walker.head_hash[:16]}…, the source's is {head_hash[:16]}…"
    return None


def _refuse_same(source: Engine, target: Engine) -> None:
    a, b = sqlite_path(source.url), sqlite_path(target.url)
    if a is not None and b is not None:
        same = a.resolve() == b.resolve()
    else:
        same = source.url.render_as_string(hide_password=False) == target.url.render_as_string(hide_password=False)
    if same:
        raise StoreError("the source and the target are the same database: name another one")


@contextmanager
def _no_other_writer(engine: Engine, role: str) -> Iterator[None]:
    """No ``tracker run`` writes ``engine``'s log while the copy runs (see step 2)."""
    path = sqlite_path(engine.url)
    if path is not None:
        lock = SqliteFileLock(path)
        try:
            lock.acquire()
        except StoreError:
            holder = file_writer(path).pid
            who = f" (pid {holder})" if holder is not None else ""
            raise StoreError(
                f"a tracker run is writing to the {role}, {path.name}{who}: stop it before copying"
            ) from None
        try:
            yield
        finally:
            lock.release()
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            accounts = [row[0] for row in conn.execute(select(event_log.c.account).distinct())]
            writers = lease_writers(conn, accounts)
        for account, held in sorted(writers.items()):
            if held.backend_pid is not None:
                who = f"tracker run pid {held.pid}" if held.pid is not None else f"session {held.backend_pid}"
                raise StoreError(
                    f"account {account}'s writer lease on the {role} is held by {who}: stop it before copying"
                )
    yield


def _copy(
    source: Engine, target: Engine, head: tuple[int, str], page: int, on_progress: Progress | None
) -> tuple[int, int]:
    """Step 4: (event log rows, quarantine rows) copied, in one target transaction."""
    with writer(target).connect() as out, out.begin(), source.connect() as into, into.begin():
        if out.dialect.name == "postgresql":
            out.execute(text("LOCK TABLE event_log, quarantine IN EXCLUSIVE MODE"))
        if into.dialect.name == "postgresql":
            into.execute(text("LOCK TABLE event_log, quarantine IN SHARE MODE"))
        held = {
            name: int(out.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in (("event_log", event_log), ("quarantine", quarantine))
        }
        if any(held.values()):
            raise StoreError(
                f"the target at {display_url(target.url)} already holds a log ({held['event_log']} events,"
                f" {held['quarantine']} quarantined): copy into an empty database (two logs are never merged)"
            )
        last = into.execute(select(event_log.c.seq, event_log.c.hash).order_by(event_log.c.seq.desc()).limit(1)).first()
        now = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
        if now != head:
            raise StoreError(
                f"the source's head moved while it was checked (seq {head[0]} -> {now[0]}): something writes to it;"
                " stop it and copy again"
            )
        events = _rows(into, out, event_log, event_log.c.seq, page, on_progress)
        quarantined = _rows(into, out, quarantine, quarantine.c.id, page, None, fit=out.dialect.name == "postgresql")
        if quarantined and out.dialect.name == "postgresql":
            # the ids were copied: the column's sequence goes on after them
            out.execute(
                text("SELECT setval(pg_get_serial_sequence('quarantine', 'id'), (SELECT max(id) FROM quarantine))")
            )
    return events, quarantined


def _rows(
    into: Connection,
    out: Connection,
    table: Table,
    order: Any,
    page: int,
    on_progress: Progress | None,
    *,
    fit: bool = False,
) -> int:
    """Every row of ``table`` from ``into`` to ``out``, in ``order``, ``page`` rows at a time; the count."""
    names = [column.name for column in table.columns]
    copied = 0
    result = into.execution_options(yield_per=page).execute(select(table).order_by(order))
    for part in result.partitions():
        rows: Sequence[tuple[Any, ...]] = [tuple(row) for row in part]
        if fit:
            rows = [tuple(fit_quarantine_row(dict(zip(names, row, strict=True))).values()) for row in rows]
        _write(out, table, names, rows)
        copied += len(rows)
        if on_progress is not None:
            on_progress(copied)
    return copied


def _write(out: Connection, table: Table, names: list[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if out.dialect.name == "postgresql":
        # COPY: one stream for the page (psycopg adapts each value by its Python type, as a parameter would be)
        raw: Any = out.connection.driver_connection  # psycopg's
        statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"  # names of tracker's own columns
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return
    out.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
