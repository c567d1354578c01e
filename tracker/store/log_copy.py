"""``tracker db copy``: the truth (``event_log`` and ``quarantine``) copied, row for row, into another database.

What it is for: moving a log to PostgreSQL when one SQLite file is outgrown (or back, or to another server), with
every guarantee kept. Each row is copied as it is stored, every column (its ``seq``, its ``prev_hash`` and ``hash``
included), so the copy is the same log, not a new one: ``tracker verify`` prints the same head anchor on both, and
appends to the copy continue its chain. Nothing is renumbered or rehashed, which is why the target must hold no log
yet (``merge_log``, below, is for one that does).

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
5. The target's chain is walked after the commit: intact, and its row at the source's head seq has the source's head
   hash. Every column but the links is in each row's hash, and each link covers the previous one, so this proves
   every row arrived exactly.

``merge_log`` (``tracker db copy --merge``) is for a target that already holds a log, e.g. several accounts tracked
into SQLite files of their own, then brought into one PostgreSQL database. Then the rows cannot keep their positions:
they are appended after the target's head, each ``seq`` moved by the target's head (``offset``) and its links
computed again on the target's chain, every other column as it was. Steps 1-3 are the same; then, in one target
transaction under its lock (a ``tracker run`` on it waits meanwhile): no account of the source may be in the
target already (one account's two logs would interleave its events), the rows appended, the quarantine rows with new
ids (a conflict's ``existing_seq`` moved by the offset), and one ``log_merged`` tracker entry per account brought,
recording the source and its head anchor, so that the merged rows can be traced back to the log they came from
(which stays the original evidence: its own anchors hold on it, not on the target). After the commit the target's
whole chain is walked, and every merged row is compared with its source row, column for column but ``seq`` and
the links.

``snapshot_log`` (``tracker db backup`` of a PostgreSQL log, into a new SQLite file) copies while ``tracker run``
goes on appending to the source: no lock and no writer check on the source, only the rows up to the head the walk
of step 3 started from (they are all visible and never change: the log is append-only and its rows become visible
in seq order), and the quarantined frames up to the last one there when the copy starts; steps 4 and 5 as for a copy.

One conversion, on PostgreSQL only: a quarantined raw text holding NUL (which PostgreSQL text cannot hold; SQLite
keeps it) is stored JSON-quoted with a note in its reason, as tracker's own writer does on PostgreSQL
(``event_log._fit``). The quarantine is outside the chain; event log rows never hold NUL on any backend (such an
entry is quarantined instead).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, Table, func, insert, select, text

from tracker.domain import tracker_events as te
from tracker.domain.chain import CANONICAL_COLUMNS, GENESIS, Anchor, link_hash
from tracker.domain.log import LogEntry, NewEntry
from tracker.errors import StoreError
from tracker.store.chain_walk import Walked, walk_chain
from tracker.store.engine import display_url, sqlite_path, writer
from tracker.store.event_log import fit_quarantine_row
from tracker.store.lease import SqliteFileLock, file_writer, lease_writers
from tracker.store.migrate import check_schema
from tracker.store.schema import event_log, quarantine

PAGE: Final = 10_000  # rows read and written at a time

Progress = Callable[[int], None]  # rows copied so far
Transform = Callable[[Row[Any]], tuple[Any, ...]]  # a source row -> the target's values, in the written columns


@dataclass(frozen=True, slots=True)
class CopyResult:
    events: int
    quarantined: int
    head: int  # the last seq (0: an empty log)
    head_hash: str
    seconds: float


@dataclass(frozen=True, slots=True)
class MergeResult:
    events: int  # source rows appended
    quarantined: int
    source: Anchor  # the source's head, recorded in each ``log_merged`` entry
    offset: int  # the source's seq s is the target's offset + s
    markers: tuple[int, ...]  # the seqs of the ``log_merged`` entries, one per account, after the merged rows
    accounts: tuple[str, ...]
    target: Anchor  # the target's head after the merge
    seconds: float


def copy_log(source: Engine, target: Engine, *, page: int = PAGE, on_progress: Progress | None = None) -> CopyResult:
    """Copy ``source``'s event log and quarantine into ``target`` (migrated, holding neither yet), as the module
    docstring says; ``StoreError`` with one line when it cannot be done, nothing written then."""
    started = time.monotonic()
    with _checked(source, target) as head:
        events, quarantined = _copy(source, target, head, page, on_progress)
    problem = _differs(walk_chain(target, head))
    if problem is not None:
        raise StoreError(
            f"the copy at {display_url(target.url)} does not verify ({problem}); the source is untouched:"
            " drop the target's database and report this"
        )
    return CopyResult(events, quarantined, head.seq, head.hash, time.monotonic() - started)


def merge_log(
    source: Engine,
    target: Engine,
    *,
    page: int = PAGE,
    on_progress: Progress | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> MergeResult:
    """Append ``source``'s event log and quarantine to ``target``'s (migrated; none of its accounts there yet),
    renumbered and relinked, with a ``log_merged`` entry per account (the module docstring); ``StoreError`` with one
    line when it cannot be done, nothing written then."""
    started = time.monotonic()
    with _checked(source, target, merge=True) as head:
        result = _merge(source, target, head, page, on_progress, clock)
    problem = _differs(walk_chain(target, result.target)) or _merged_differ(source, target, result, page)
    if problem is not None:
        raise StoreError(
            f"the merge into {display_url(target.url)} does not verify ({problem}); the source is untouched:"
            " report this"
        )
    return replace(result, seconds=time.monotonic() - started)


def snapshot_log(
    source: Engine, target: Engine, *, page: int = PAGE, on_progress: Progress | None = None
) -> CopyResult:
    """Copy ``source``'s event log as of now (its head when the walk starts) and its quarantine into ``target``
    (migrated, holding neither yet) while ``tracker run`` goes on appending to the source (``tracker db backup`` of a
    PostgreSQL log). No lock on the source: the log is append-only and its rows become visible in seq order (the
    gapless seq, docs/storage.md), so every row up to the walked head is there and never changes; the rows appended
    meanwhile are left out, and so are the quarantined frames after the last one seen when the copy starts. Steps 3-5
    of the module docstring otherwise: the source's chain walked first, the rows in one target transaction, the
    target's chain walked after, its row at the head seq the source's head hash."""
    started = time.monotonic()
    _refuse_same(source, target)
    check_schema(source)
    check_schema(target)
    with _no_other_writer(target, "target"):
        head = _walked_head(source)
        with writer(target).connect() as out, out.begin(), source.connect() as into, into.begin():
            _require_empty(out, target)
            last_held = into.execute(select(func.coalesce(func.max(quarantine.c.id), 0))).scalar_one()
            events = _rows(into, out, event_log, event_log.c.seq, page, on_progress, upto=head.seq)
            fit = _fit if out.dialect.name == "postgresql" else None
            quarantined = _rows(into, out, quarantine, quarantine.c.id, page, None, fit, upto=int(last_held))
            if quarantined and out.dialect.name == "postgresql":
                _quarantine_ids_after_the_copied(out)
    problem = _differs(walk_chain(target, head))
    if problem is None and events != head.seq:
        problem = f"{events} rows copied for seq 1..{head.seq}"
    if problem is not None:
        raise StoreError(
            f"the copy at {display_url(target.url)} does not verify ({problem}); the source is untouched: report this"
        )
    return CopyResult(events, quarantined, head.seq, head.hash, time.monotonic() - started)


@contextmanager
def _checked(source: Engine, target: Engine, *, merge: bool = False) -> Iterator[Anchor]:
    """Steps 1-3: the source's head, walked and intact, while nobody else writes the source (nor a SQLite target)."""
    _refuse_same(source, target)
    check_schema(source)
    check_schema(target)
    with _no_other_writer(source, "source"), _no_other_writer(target, "target", merge=merge):
        yield _walked_head(source)


def _walked_head(source: Engine) -> Anchor:
    """Step 3: the source's head, its chain walked from seq 1 and intact; one line when it is not."""
    walked = walk_chain(source)
    if walked.unreadable is not None:
        raise StoreError(f"the source database cannot be read: {walked.unreadable}; nothing copied")
    broken = walked.walker.finish()
    if broken is not None:
        raise StoreError(
            f"the source's hash chain fails at seq {broken.seq} ({broken.reason}): nothing copied;"
            " `tracker verify` on the source says more"
        )
    return Anchor(walked.walker.head, walked.walker.head_hash)


def _differs(walked: Walked) -> str | None:
    """What is wrong with a walk of the target, from seq 1 through the anchor it expected (the source's head, or the
    merge's last row), or None: then those rows are exactly what was written, each link covering the one before.
    (Rows a ``tracker run`` appended after the commit are walked too, and are not this check's business.)"""
    if walked.unreadable is not None:
        return walked.unreadable
    broken = walked.walker.finish()
    return None if broken is None else f"its chain fails at seq {broken.seq}: {broken.reason}"


def _refuse_same(source: Engine, target: Engine) -> None:
    a, b = sqlite_path(source.url), sqlite_path(target.url)
    if a is not None and b is not None:
        same = a.resolve() == b.resolve()
    else:
        same = source.url.render_as_string(hide_password=False) == target.url.render_as_string(hide_password=False)
    if same:
        raise StoreError("the source and the target are the same database: name another one")


@contextmanager
def _no_other_writer(engine: Engine, role: str, *, merge: bool = False) -> Iterator[None]:
    """No ``tracker run`` writes ``engine``'s log while the copy runs (see step 2). A merge's PostgreSQL target may
    have one: its appends wait for the merge's lock."""
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
        except OSError as error:  # a source in a directory this user cannot write (a backup, a read-only mount)
            if role != "source":
                raise StoreError(f"cannot lock the {role}, {path}: {error.strerror}") from None
            if (holder := file_writer(path).pid) is not None:
                raise StoreError(
                    f"a tracker run is writing to the source, {path.name} (pid {holder}): stop it"
                ) from None
            yield  # nobody holds the lock, and this user cannot take it: nor can a tracker run of this user start
            return
        try:
            yield
        finally:
            lock.release()
        return
    if engine.dialect.name == "postgresql" and not (merge and role == "target"):
        with engine.connect() as conn:
            writers = lease_writers(conn, _accounts(conn))
        for account, held in sorted(writers.items()):
            if held.backend_pid is not None:
                who = f"tracker run pid {held.pid}" if held.pid is not None else f"session {held.backend_pid}"
                raise StoreError(
                    f"account {account}'s writer lease on the {role} is held by {who}: stop it before copying"
                )
    yield


def _accounts(conn: Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute(select(event_log.c.account).distinct().order_by(event_log.c.account))]


@contextmanager
def _both(source: Engine, target: Engine, head: Anchor) -> Iterator[tuple[Connection, Connection]]:
    """(source, target) connections in one transaction each, the target's tables locked against appends, the source's
    against writers (PostgreSQL), and the source's head still the walked one."""
    with writer(target).connect() as out, out.begin(), source.connect() as into, into.begin():
        if out.dialect.name == "postgresql":
            out.execute(text("LOCK TABLE event_log, quarantine IN EXCLUSIVE MODE"))
        if into.dialect.name == "postgresql":
            into.execute(text("LOCK TABLE event_log, quarantine IN SHARE MODE"))
        now = _head_of(into)
        if now != head:
            raise StoreError(
                f"the source's head moved while it was checked (seq {head.seq} -> {now.seq}): something writes to it;"
                " stop it and copy again"
            )
        yield into, out


def _head_of(conn: Connection) -> Anchor:
    last = conn.execute(select(event_log.c.seq, event_log.c.hash).order_by(event_log.c.seq.desc()).limit(1)).first()
    return Anchor(0, GENESIS) if last is None else Anchor(int(last[0]), str(last[1]))


def _copy(source: Engine, target: Engine, head: Anchor, page: int, on_progress: Progress | None) -> tuple[int, int]:
    """Step 4: (event log rows, quarantine rows) copied, in one target transaction."""
    with _both(source, target, head) as (into, out):
        _require_empty(out, target)
        events = _rows(into, out, event_log, event_log.c.seq, page, on_progress)
        fit = _fit if out.dialect.name == "postgresql" else None
        quarantined = _rows(into, out, quarantine, quarantine.c.id, page, None, fit)
        if quarantined and out.dialect.name == "postgresql":
            _quarantine_ids_after_the_copied(out)
    return events, quarantined


def _require_empty(out: Connection, target: Engine) -> None:
    held = {
        name: int(out.execute(select(func.count()).select_from(table)).scalar_one())
        for name, table in (("event_log", event_log), ("quarantine", quarantine))
    }
    if any(held.values()):
        raise StoreError(
            f"the target at {display_url(target.url)} already holds a log ({held['event_log']} events,"
            f" {held['quarantine']} quarantined): copy into an empty database, or add --merge to append this"
            " log's accounts to it, renumbered"
        )


def _quarantine_ids_after_the_copied(out: Connection) -> None:
    """The quarantine ids were copied: its column's sequence goes on after them (PostgreSQL)."""
    out.execute(text("SELECT setval(pg_get_serial_sequence('quarantine', 'id'), (SELECT max(id) FROM quarantine))"))


def _fit(row: Row[Any]) -> tuple[Any, ...]:
    return tuple(fit_quarantine_row(dict(zip(_QUARANTINE_ALL, row, strict=True))).values())


_LOG_COLUMNS: Final = tuple(column.name for column in event_log.columns)
_QUARANTINE_ALL: Final = tuple(column.name for column in quarantine.columns)
_QUARANTINE_COLUMNS: Final = tuple(name for name in _QUARANTINE_ALL if name != "id")


class _Relink:
    """The merge's event log rows: ``seq`` moved by ``offset``, the links computed on the target's chain from
    ``prev``; every other column as stored."""

    def __init__(self, offset: int, prev: str) -> None:
        self.offset = offset
        self.prev = prev
        self.seq = offset

    def __call__(self, row: Row[Any]) -> tuple[Any, ...]:
        return self.append(LogEntry(**dict(zip(_LOG_COLUMNS, row, strict=True))), self.offset + int(row.seq))

    def append(self, entry: LogEntry | NewEntry, seq: int) -> tuple[Any, ...]:
        if seq != self.seq + 1:
            raise StoreError(f"the source's seq {seq - self.offset} does not follow {self.seq - self.offset}")
        link = link_hash(self.prev, seq, entry)
        values = {name: getattr(entry, name, None) for name in _LOG_COLUMNS}
        values |= {"seq": seq, "prev_hash": self.prev, "hash": link}
        self.prev, self.seq = link, seq
        return tuple(values[name] for name in _LOG_COLUMNS)


def _merge(
    source: Engine,
    target: Engine,
    head: Anchor,
    page: int,
    on_progress: Progress | None,
    clock: Callable[[], datetime],
) -> MergeResult:
    """Step 4 of a merge, in one target transaction (the module docstring)."""
    with _both(source, target, head) as (into, out):
        brought, there = _accounts(into), set(_accounts(out))
        if shared := [account for account in brought if account in there]:
            raise StoreError(
                f"account {', '.join(shared)} is in both logs: a log is merged only into a database that does not"
                " track its accounts yet (one account's two logs would interleave its events)"
            )
        start = _head_of(out)
        relink = _Relink(start.seq, start.hash)
        events = _rows(into, out, event_log, event_log.c.seq, page, on_progress, relink)

        def requarantine(row: Row[Any]) -> tuple[Any, ...]:
            values = dict(zip(_QUARANTINE_ALL, row, strict=True))
            del values["id"]
            if values["existing_seq"] is not None:
                values["existing_seq"] += start.seq
            if out.dialect.name == "postgresql":
                fit_quarantine_row(values)
            return tuple(values[name] for name in _QUARANTINE_COLUMNS)

        quarantined = _rows(into, out, quarantine, quarantine.c.id, page, None, requarantine, _QUARANTINE_COLUMNS)
        per_account = select(event_log.c.account, func.count()).group_by(event_log.c.account)
        counts: dict[str, int] = {str(account): int(n) for account, n in into.execute(per_account)}
        now = clock()
        markers = []
        for account in brought:
            data: dict[str, object] = {
                "account": account,
                "source": display_url(source.url),
                "source_anchor": str(head),
                "source_entries": head.seq,
                "entries": int(counts[account]),
                "first_seq": start.seq + 1,
                "last_seq": start.seq + head.seq,
            }
            marker = te.tracker_entry(
                account=account, event=te.LOG_MERGED, data=data, received_at=now, uid=f"log_merged:{uuid.uuid4()}"
            )
            markers.append(relink.append(marker, relink.seq + 1))
        _write(out, event_log, _LOG_COLUMNS, markers)
    return MergeResult(
        events,
        quarantined,
        head,
        start.seq,
        tuple(row[0] for row in markers),
        tuple(brought),
        Anchor(relink.seq, relink.prev),
        0.0,
    )


def _merged_differ(source: Engine, target: Engine, result: MergeResult, page: int) -> str | None:
    """Whether a merged row differs from its source row in a column but ``seq`` and the links (the first, named)."""
    columns = [event_log.c[name] for name in CANONICAL_COLUMNS]
    after = 0
    with source.connect() as into, target.connect() as out:
        while after < result.source.seq:
            query = select(*columns).where(event_log.c.seq > after).order_by(event_log.c.seq).limit(page)
            theirs = into.execute(query).all()
            moved = select(*columns).where(event_log.c.seq > result.offset + after).order_by(event_log.c.seq)
            ours = out.execute(moved.limit(len(theirs))).all()
            for one, other in zip(theirs, ours, strict=True):
                if tuple(one)[1:] != tuple(other)[1:] or other[0] != result.offset + one[0]:
                    return f"the source's seq {one[0]} is not the same row at seq {result.offset + one[0]}"
            if not theirs:
                return f"the source ends at seq {after}, before its head {result.source.seq}"
            after = int(theirs[-1][0])
    return None


def _rows(
    into: Connection,
    out: Connection,
    table: Table,
    order: Any,
    page: int,
    on_progress: Progress | None,
    transform: Transform | None = None,
    columns: Sequence[str] | None = None,
    *,
    upto: int | None = None,
) -> int:
    """Every row of ``table`` from ``into`` to ``out``, in ``order``, ``page`` rows at a time, each as ``transform``
    makes it (values of ``columns``: the table's, by default); the count. ``upto``: only the rows whose ``order``
    is at most that."""
    names = list(columns or (column.name for column in table.columns))
    copied = 0
    query = select(table).order_by(order)
    if upto is not None:
        query = query.where(order <= upto)
    result = into.execution_options(yield_per=page).execute(query)
    for part in result.partitions():
        rows = [tuple(row) for row in part] if transform is None else [transform(row) for row in part]
        _write(out, table, names, rows)
        copied += len(rows)
        if on_progress is not None:
            on_progress(copied)
    return copied


def _write(out: Connection, table: Table, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if out.dialect.name == "postgresql":
        # COPY: one stream for the page (psycopg adapts each value by its Python type, as a parameter would be)
        raw: Any = out.connection.driver_connection  # psycopg's
        statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"  # names of tracker's own columns
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return
    out.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
