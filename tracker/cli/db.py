"""``tracker db upgrade|downgrade|current``: schema migrations (Alembic's command API, the shared migrations/env.py);
``tracker db copy``: the log moved into another database (``tracker/store/log_copy.py``); ``tracker db
import-unsaved``: the frames a run saved in a side file appended to the log (``runtime/writer.py``: ``spill``);
``tracker db backup``: the database copied into a SQLite file while ``tracker run`` writes it, verified
(``store/online_backup.py``).

A downgrade that would drop a non-empty event log is refused; ``--drop-log`` allows it after tracker has written a
backup and printed its path (``tracker/store/backup.py``).

``copy --to URL`` (or ``TRACKER_COPY_TO_URL``): the target is migrated, the event log and quarantine copied into it
row for row and checked, then its projections rebuilt, so it is ready for ``tracker run``. A password in ``--to``
is refused (it would show in the process list): libpq reads ``PGPASSWORD`` and ``~/.pgpass``, or the environment
variable may hold the whole URL.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tracker.cli import add_common_flags, named_db_url_source, open_database
from tracker.config import ConfigError, Settings, check_db_url, load_settings
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine

T = TypeVar("T")
COPY_TO_ENV = "TRACKER_COPY_TO_URL"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("db", help="database schema migrations")
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    sub.required = True
    upgrade = sub.add_parser("upgrade", help="migrate the database to the newest schema (creates it if missing)")
    add_common_flags(upgrade)
    upgrade.add_argument("revision", nargs="?", default="head", type=_revision, help="target revision (default: head)")
    upgrade.set_defaults(func=cmd_upgrade)
    downgrade = sub.add_parser(
        "downgrade", help="migrate the database back to REVISION ('base' drops the log: refused unless it is empty)"
    )
    add_common_flags(downgrade)
    downgrade.add_argument("revision", type=_revision, help="target revision, e.g. 0001 or base")
    downgrade.add_argument(
        "--drop-log",
        action="store_true",
        help="allow dropping a non-empty event log; a backup is written first and named",
    )
    downgrade.add_argument(
        "--backup",
        type=Path,
        metavar="PATH",
        help="where --drop-log writes the backup (default: <db>.before-downgrade-<time>.db beside a SQLite file,"
        " ./tracker-log-<database>-<time>.jsonl for PostgreSQL)",
    )
    downgrade.set_defaults(func=cmd_downgrade)
    current = sub.add_parser("current", help="print the database's schema revision and the newest one")
    add_common_flags(current)
    current.set_defaults(func=cmd_current)
    copy = sub.add_parser(
        "copy",
        help="copy the event log, row for row, into another empty database (e.g. from SQLite to PostgreSQL), check"
        " it, and rebuild the projections there",
    )
    add_common_flags(copy)
    copy.add_argument(
        "--to",
        metavar="URL",
        help=f"the target database (env {COPY_TO_ENV}); migrated first; it must hold no log yet. No password here:"
        " put it in PGPASSWORD or ~/.pgpass",
    )
    copy.add_argument(
        "--merge",
        action="store_true",
        help="the target holds a log already: append this log's accounts to it, renumbered and relinked, with the"
        " source's head recorded (none of its accounts may be in the target)",
    )
    copy.set_defaults(func=cmd_copy)
    backup = sub.add_parser(
        "backup",
        help="copy the database to the SQLite file PATH while tracker run goes on writing it, and prove the copy"
        " equals the log (its chain walked, its head the database's row); a PostgreSQL log's copy has its"
        " projections rebuilt",
    )
    add_common_flags(backup)
    backup.add_argument("path", type=Path, metavar="PATH", help="the backup file to write (must not exist)")
    backup.set_defaults(func=cmd_backup)
    unsaved = sub.add_parser(
        "import-unsaved",
        help="append the frames a run saved in a side file (<db>.unsaved-<time>.jsonl) when the database could not"
        " take them; frames the log holds already are skipped; the file is renamed <file>.imported after",
    )
    add_common_flags(unsaved)
    unsaved.add_argument("files", nargs="+", type=Path, metavar="FILE", help="side files, as the run's line named them")
    unsaved.set_defaults(func=cmd_import_unsaved)


def _revision(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a revision such as head, base or 0001")
    return text


def _migrate(source: str | None, call: Callable[[], T]) -> T:
    """Run ``call`` (a migration or a look-up): Alembic's own errors (an unknown revision) are one line too, and a
    database error names ``source``, where the URL came from (``--db-url``, ``tracker.toml: db_url``, ``--to``), not
    always TRACKER_DB_URL."""
    from alembic.util import CommandError

    from tracker.store import migrate

    try:
        return call()
    except CommandError as exc:
        raise StoreError(f"{exc} (revisions: base .. {migrate.head_revision()}, or head)") from None
    except StoreError as exc:
        named = exc if source is None else named_db_url_source(source, exc)
        if named is exc:
            raise
        raise named from exc


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(flags={"db_url": args.db_url})


def cmd_upgrade(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    settings = _settings(args)
    source = settings.label("db_url")
    _migrate(source, lambda: migrate.upgrade(settings.db_url, args.revision))
    have = _migrate(source, lambda: migrate.current(settings.db_url))
    print(f"database at revision {have or 'none'} (newest {migrate.head_revision()})")
    return 0


def _require_known_revision(revision: str) -> None:
    """A revision id that names no migration is refused as unknown before anything reads the database: the
    downgrade itself cannot tell the steps to an unknown target, so it assumes the worst and would answer, about a
    typo, that the downgrade drops the event log. Symbolic and relative targets (``base``, ``head``, ``-1``,
    ``0005+1``, ``x@head``) are left to Alembic, which resolves them against the database's revision."""
    if revision in ("base", "head", "heads") or any(mark in revision for mark in "+-@"):
        return
    from alembic.script import ScriptDirectory

    from tracker.store import migrate

    _migrate(None, lambda: ScriptDirectory.from_config(migrate.alembic_config()).get_revisions(revision))


def cmd_downgrade(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    settings = _settings(args)
    url = settings.db_url
    _require_known_revision(args.revision)
    backup = _migrate(
        settings.label("db_url"),
        lambda: migrate.downgrade(url, args.revision, drop_log=args.drop_log, backup_to=args.backup),
    )
    if backup is not None:
        print(f"backup of the event log written to {backup}")
    print(f"database at revision {migrate.current(url) or 'none'} (newest {migrate.head_revision()})")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    settings = _settings(args)
    have = _migrate(settings.label("db_url"), lambda: migrate.current(settings.db_url))
    need = migrate.head_revision()
    state = "up to date" if have == need else "run `tracker db upgrade`"
    print(f"revision {have or 'none'} (newest {need}): {state}")
    return 0 if have == need else 1


def _copy_target(args: argparse.Namespace) -> str:
    from sqlalchemy.engine import make_url

    if args.to is not None:
        url = check_db_url(args.to, "--to")
        if make_url(url).password is not None:
            raise ConfigError(
                "--to holds a password, which would show in the process list: put it in PGPASSWORD or ~/.pgpass,"
                f" or give the whole URL in {COPY_TO_ENV}"
            )
        return url
    if (from_env := os.environ.get(COPY_TO_ENV)) is not None:
        return check_db_url(from_env, COPY_TO_ENV)
    raise ConfigError(f"name the database to copy into: --to URL (or {COPY_TO_ENV})")


def cmd_copy(args: argparse.Namespace) -> int:
    from tracker.cli.rebuild import format_result
    from tracker.progress import Progress
    from tracker.store import migrate
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog
    from tracker.store.projections import BatchResult
    from tracker.store.rebuild import rebuild

    target_url = _copy_target(args)
    source = open_database(load_settings(flags={"db_url": args.db_url}))
    try:
        migrate.check_schema(source)  # before the target is made: a refused copy leaves nothing behind
        _migrate("--to" if args.to is not None else COPY_TO_ENV, lambda: migrate.upgrade(target_url, "head"))
        target = open_engine(target_url)
        try:
            for line in _copy_lines(source, target, merge=args.merge, total=EventLog(source).head()):
                print(line, flush=True)
            progress = Progress("rebuilding", total=EventLog(target).head())

            def advance(batch: BatchResult) -> None:
                progress.advance(batch.events)

            try:
                built = rebuild(target, on_batch=advance, on_restart=progress.restart)
            finally:
                progress.close()
            print("target: " + format_result(built.events, built.checkpoint, built.rows, built.seconds, built.workers))
        finally:
            target.dispose()
    finally:
        source.dispose()
    print(
        "next: run tracker with --db-url (or TRACKER_DB_URL) naming the target; the source is untouched, keep it"
        " until you are satisfied"
    )
    return 0


@contextmanager
def _rows_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress line that appears once rows move (the source's walk comes first), closed at the end."""
    from tracker.progress import Progress

    shown: list[Progress] = []

    def advance(rows: int) -> None:
        if not shown:
            shown.append(Progress(label, total=total))
        shown[0].advance(rows - shown[0].done)

    try:
        yield advance
    finally:
        for progress in shown:
            progress.close()


def _copy_lines(source: Engine, target: Engine, *, merge: bool, total: int) -> list[str]:
    """The copy or the merge, and what to say of it."""
    from tracker.store.engine import display_url
    from tracker.store.log_copy import copy_log, merge_log

    where = f"from {display_url(source.url)} to {display_url(target.url)}"
    if not merge:
        with _rows_progress("copying", total) as advance:
            copied = copy_log(source, target, on_progress=advance)
        lines = [f"copied {copied.events:,} events and {copied.quarantined:,} quarantined frames {where}"
                 f" in {copied.seconds:.1f} s"]  # fmt: skip
        if copied.events:
            lines.append(
                f"the copy verifies: seq 1..{copied.head} intact, head {copied.head}:{copied.head_hash}, the source's"
                " head"
            )
        return lines
    with _rows_progress("merging", total) as advance:
        merged = merge_log(source, target, on_progress=advance)
    accounts = ", ".join(merged.accounts) or "none"
    first, last = merged.offset + 1, merged.offset + merged.events
    return [
        f"merged {merged.events:,} events (account {accounts}) and {merged.quarantined:,} quarantined frames {where}"
        f" in {merged.seconds:.1f} s",
        f"the merge verifies: the target's seq 1..{merged.target.seq} intact; its seq {first}..{last} are the"
        f" source's 1..{merged.events}, renumbered and relinked, every other column equal",
        f"the source's head {merged.source} is recorded in the log: log_merged at seq"
        f" {', '.join(str(seq) for seq in merged.markers)}",
    ]


def cmd_backup(args: argparse.Namespace) -> int:
    from tracker.progress import Progress
    from tracker.store import migrate
    from tracker.store.event_log import EventLog
    from tracker.store.online_backup import back_up
    from tracker.store.projections import BatchResult
    from tracker.store.rebuild import rebuild

    def rebuilding(copy: Engine) -> None:
        """The copy's projections (a PostgreSQL log's SQLite copy), with a progress line."""
        progress = Progress("rebuilding the copy's projections", total=EventLog(copy).head())

        def advance(batch: BatchResult) -> None:
            progress.advance(batch.events)

        try:
            rebuild(copy, on_batch=advance, on_restart=progress.restart)
        finally:
            progress.close()

    engine = open_database(load_settings(flags={"db_url": args.db_url}))
    try:
        migrate.check_schema(engine)
        done = back_up(engine, args.path, rebuilding=rebuilding)
        postgresql = engine.dialect.name == "postgresql"
    finally:
        engine.dispose()
    print(
        f"backup written to {done.path}: {done.events:,} events and {done.quarantined:,} quarantined frames,"
        f" {done.size / 1e6:.1f} MB, in {done.seconds:.1f} s"
    )
    if done.events:
        seq = done.head.seq
        print(f"the backup verifies: seq 1..{seq} intact, head {done.head}, the same as the database's row {seq}")
    if postgresql:
        print("it is a SQLite file of the log as of then, its projections rebuilt (the server's own backup is pg_dump)")
    print(f"check it again at any time: tracker verify --db-url sqlite:///{done.path} --expect-anchor {done.head}")
    return 0


IMPORT_BATCH = 500  # entries per append transaction


def cmd_import_unsaved(args: argparse.Namespace) -> int:
    """Each file read whole first (a line ``spill`` did not write refuses that file, nothing appended from it), then
    appended in batches through the log's own append: an entry whose dedup key the log holds (committed after all,
    or fetched again by a backfill) is skipped, so a file imported twice adds nothing twice but its quarantined
    frames; the file is renamed ``<file>.imported`` once every batch is in (kept: the record of what was received)."""
    from tracker.runtime.writer import UnsavedFileError, load_spilled
    from tracker.store import migrate
    from tracker.store.event_log import EventLog

    loaded = []
    for path in args.files:
        if path.name.endswith(".imported"):
            raise ConfigError(f"{path} was imported already (its frames are in the log); rename it to import again")
        try:
            loaded.append((path, load_spilled(path)))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnsavedFileError as exc:
            raise ConfigError(f"{exc}: nothing imported; the file is as it was") from None
    engine = open_database(_settings(args), write=True)
    try:
        migrate.check_schema(engine)
        log = EventLog(engine)
        for path, items in loaded:
            appended = duplicates = conflicts = quarantined = 0
            for start in range(0, len(items), IMPORT_BATCH):
                chunk = items[start : start + IMPORT_BATCH]
                result = log.append(
                    [i for i in chunk if isinstance(i, NewEntry)], [i for i in chunk if isinstance(i, QuarantineItem)]
                )
                appended += len(result.appended)
                duplicates += result.duplicates
                conflicts += result.conflicts
                quarantined += result.quarantined
            done = path.with_name(path.name + ".imported")
            path.rename(done)
            print(
                f"{path}: {len(items)} frame(s): {appended} appended, {duplicates} in the log already,"
                f" {quarantined} quarantined ({conflicts} conflicting with the log); renamed {done.name}"
            )
    finally:
        engine.dispose()
    return 0
