"""``tracker db backup PATH`` through the real CLI: a SQLite database copied while ``tracker run`` writes it is the
log as of one commit, proven (its chain walked, its head the database's row), one file, readable by ``tracker
verify``; a PostgreSQL log's copy (a SQLite file, projections rebuilt) likewise; a log that does not verify and a
destination that exists are refused with one line, and nothing is left behind.

Rules: the fake exchange on loopback port 0 for the live run; local databases only; the backup runs off the trio
thread, as another process would; no sleep as synchronisation.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import trio
from sqlalchemy import select, update
from store_helpers import entry, open_log, tampering
from test_ingest_e2e import tracker_running

from tracker.cli import main
from tracker.store import online_backup
from tracker.store.lease import file_lock_for
from tracker.store.schema import event_log

pytestmark = pytest.mark.timeout(60)


def backup(url: str, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["db", "backup", str(path), "--db-url", url])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def chain_of(path: Path, until: int | None = None) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT seq, hash FROM event_log WHERE seq <= ? ORDER BY seq", (until or 2**62,))
        return [(int(seq), str(hash_)) for seq, hash_ in rows]


async def test_a_backup_taken_while_tracker_run_writes_is_the_log_as_of_one_commit(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = Path(sqlite_url.removeprefix("sqlite:///"))
    path = backups(tmp_path) / "tracker-backup.db"
    async with tracker_running(sqlite_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(200)
        await run.wait_all_delivered_committed()
        run.fx.set_rate(400)  # the run goes on receiving and committing while the backup is taken
        await run.wait_committed(lambda: len(run.ws_payloads()) > 250)
        code, out = await trio.to_thread.run_sync(backup, sqlite_url, path, capsys)
        await run.wait_committed(lambda: run.log.head() > head_of(out))  # and after it
        run.fx.set_rate(None)
        assert run.services.writer_stats.retries == 0  # no append ever met a lock the backup held
    assert code == 0, out
    head = head_of(out)
    lines = out.splitlines()
    assert lines[0].startswith(f"backup written to {path}: {head:,} events and 0 quarantined frames, ")
    anchor = lines[1].split(" head ")[1].split(",")[0]
    assert (
        lines[1] == f"the backup verifies: seq 1..{head} intact, head {anchor}, the same as the database's row {head}"
    )
    assert lines[2] == f"check it again at any time: tracker verify --db-url sqlite:///{path} --expect-anchor {anchor}"
    # Row for row the database's first `head` rows; one file, nothing left beside it.
    assert chain_of(path) == chain_of(source, head)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert main(["verify", "--db-url", f"sqlite:///{path}", "--expect-anchor", anchor]) == 0
    capsys.readouterr()


def backups(tmp_path: Path) -> Path:
    """A directory of its own for the backups (the database lives in ``tmp_path``)."""
    path = tmp_path / "backups"
    path.mkdir()
    return path


def head_of(out: str) -> int:
    """The backup's head seq, from its first line (``backup written to P: N events ...``)."""
    return int(out.split(": ", 1)[1].split(" events", 1)[0].replace(",", ""))


def test_a_paced_copy_is_one_snapshot_while_another_connection_commits_between_its_steps(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy goes in steps, and a writer commits between every two of them (here: in the pause a live run's
    lock asks for); the copy is still the log as of its first step, and it verifies: SQLite did not restart it, nor
    mix two snapshots."""
    with open_log(sqlite_url) as log:
        log.append([entry(i) for i in range(1, 401)])
        before = log.head()
        appended: list[int] = []

        def commit_between_steps(_seconds: float) -> None:  # the pause after each step (a live run writes)
            log.append([entry(1000 + len(appended))])
            appended.append(log.head())

        monkeypatch.setattr(online_backup, "STEP_PAGES", 2)
        monkeypatch.setattr(online_backup.time, "sleep", commit_between_steps)
        lock = file_lock_for(log.engine)
        assert lock is not None
        lock.acquire()  # a tracker run holds the writer lock: the copy is paced
        try:
            path = backups(tmp_path) / "paced.db"
            code, out = backup(sqlite_url, path, capsys)
        finally:
            lock.release()
        assert code == 0, out
        assert len(appended) > 10  # commits between the steps, the log growing meanwhile
        assert head_of(out) == before == 400
        assert chain_of(path) == chain_of(Path(sqlite_url.removeprefix("sqlite:///")), before)


# What a log that does not verify is refused with: the copy's check (SQLite), the source's walk (PostgreSQL: as `tracker
# db copy` says it).
NOT_VERIFIED = {
    "sqlite": "no backup written, the log does not verify: the chain fails at seq 3: content does not match its hash"
    " (the row was altered or moved); tracker verify on the database says more",
    "postgresql": "the source's hash chain fails at seq 3 (content does not match its hash (the row was altered or"
    " moved)): nothing copied; `tracker verify` on the source says more",
}


def test_a_log_that_does_not_verify_is_not_backed_up(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_log(db_url) as log:
        log.append([entry(i) for i in range(1, 7)])
    with tampering(db_url) as conn:
        conn.execute(update(event_log).where(event_log.c.seq == 3).values(payload="{}"))
        dialect = conn.dialect.name
    path = backups(tmp_path) / "backup.db"
    code, out = backup(db_url, path, capsys)
    assert (code, out) == (2, f"tracker: error: {NOT_VERIFIED[dialect]}\n")
    assert list(path.parent.iterdir()) == []  # neither the backup nor its partial copy


def test_a_destination_that_exists_is_never_overwritten_and_a_partial_one_never_kept(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_log(sqlite_url) as log:
        log.append([entry(i) for i in range(1, 4)])
    path = backups(tmp_path) / "backup.db"
    path.write_bytes(b"someone's file")
    code, out = backup(sqlite_url, path, capsys)
    assert (code, out) == (
        2,
        f"tracker: error: {path} exists already: choose another path (a backup never overwrites a file)\n",
    )
    assert path.read_bytes() == b"someone's file"
    path.unlink()
    Path(f"{path}.partial").write_bytes(b"an interrupted backup's copy")
    code, out = backup(sqlite_url, path, capsys)
    assert code == 0, out
    assert sorted(p.name for p in path.parent.iterdir()) == ["backup.db"]
    assert [seq for seq, _ in chain_of(path)] == [1, 2, 3]
    code, out = backup(sqlite_url, tmp_path / "missing" / "backup.db", capsys)
    assert code == 2 and f"the directory {tmp_path / 'missing'} does not exist" in out


async def test_a_postgresql_log_is_backed_up_into_a_sqlite_file_while_tracker_run_writes_it(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log as of the walk's start, row for row the server's, in a SQLite file with its projections rebuilt to
    that head; the run goes on meanwhile, never waiting for a lock."""
    path = backups(tmp_path) / "from-postgresql.db"
    async with tracker_running(pg_url) as run:
        await run.fx.wait_subscribed(run.fx.private_channels())
        await run.fx.generate(200)
        await run.wait_all_delivered_committed()
        run.fx.set_rate(400)
        code, out = await trio.to_thread.run_sync(backup, pg_url, path, capsys)
        assert code == 0, out
        await run.wait_committed(lambda: run.log.head() > head_of(out))  # the run went on
        run.fx.set_rate(None)
        assert run.services.writer_stats.retries == 0
        head = head_of(out)
        with run.log.engine.connect() as conn:
            server = [
                (int(seq), str(hash_))
                for seq, hash_ in conn.execute(
                    select(event_log.c.seq, event_log.c.hash).where(event_log.c.seq <= head).order_by(event_log.c.seq)
                )
            ]
    assert chain_of(path) == server
    lines = out.splitlines()
    assert lines[2] == (
        "it is a SQLite file of the log as of then, its projections rebuilt (the server's own backup is pg_dump)"
    )
    anchor = lines[1].split(" head ")[1].split(",")[0]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT seq FROM projector_checkpoint").fetchall() == [(head,)]
        assert conn.execute("SELECT count(*) FROM v_fills").fetchone()[0] > 0
    assert main(["verify", "--db-url", f"sqlite:///{path}", "--expect-anchor", anchor]) == 0
    capsys.readouterr()
