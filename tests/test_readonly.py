"""Auditing a read-only copy (issue 14): ``status``, ``report``, ``verify``, ``config show`` and ``db copy`` (from
it) work on a SQLite file in a directory the user cannot write, with and without a ``-wal`` file beside it, and see
the commits in the WAL.

Rules: the real command in a subprocess; as ``nobody`` when we are root (root ignores file modes; the approach of
tests/test_errors_cli.py, whose fixtures are reused), else on a chmod'ed directory; an absolute timeout; no sleeps.
The copies are made as a user would: the files copied while a writer still has the database open (so the newest
commits are only in the ``-wal`` file), onto a directory that is then made read-only.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest
from store_helpers import entry, open_log
from test_errors_cli import clean_env, open_dir, unprivileged

from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

pytestmark = pytest.mark.timeout(120)
__all__ = ["open_dir", "unprivileged"]  # fixtures, used by name

IN_FILE, IN_WAL = 5, 3  # events checkpointed into the main file, and events only in the -wal file


def run(prefix: Sequence[str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "tracker", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_copy(source_dir: Path, target: Path, companions: Sequence[str], as_root: bool) -> Path:
    """A database whose last IN_WAL events sit in its -wal file, copied with ``companions`` into ``target``."""
    url = f"sqlite:///{source_dir / 'tracker.db'}"
    with open_log(url) as log:
        log.append([entry(i) for i in range(1, IN_FILE + 1)])
    engine = open_engine(url)
    try:
        with engine.connect() as conn:  # held open: its close would checkpoint the WAL into the file
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw.execute("PRAGMA wal_autocheckpoint=0")
            EventLog(engine).append([entry(i) for i in range(IN_FILE + 1, IN_FILE + IN_WAL + 1)])
            target.mkdir()
            for suffix in ("", *companions):
                shutil.copyfile(source_dir / f"tracker.db{suffix}", target / f"tracker.db{suffix}")
    finally:
        engine.dispose()
    for path in target.iterdir():
        path.chmod(0o644 if as_root else 0o444)
    target.chmod(0o755 if as_root else 0o555)  # read-only for nobody (root-owned), or for us (chmod)
    return target / "tracker.db"


@pytest.mark.parametrize(
    ("companions", "events"),
    [
        pytest.param((), IN_FILE, id="no-wal"),  # the copy without its -wal: what the main file holds
        pytest.param(("-wal", "-shm"), IN_FILE + IN_WAL, id="wal-and-shm"),
        pytest.param(("-wal",), IN_FILE + IN_WAL, id="wal-without-shm"),
    ],
)
def test_read_only_commands_on_a_read_only_directory(
    open_dir: Path, unprivileged: list[str], companions: Sequence[str], events: int
) -> None:
    source = open_dir / "live"
    source.mkdir()
    path = make_copy(source, open_dir / "media", companions, as_root=bool(unprivileged))
    before = sorted(p.name for p in path.parent.iterdir())
    url = f"sqlite:///{path}"
    try:
        result = run(unprivileged, open_dir, "verify", "--db-url", url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"ok: {events} events intact (seq 1..{events})")
        status = run(unprivileged, open_dir, "status", "--db-url", url, "--format", "json")
        assert status.returncode == 0, status.stderr
        assert f'"head": {events}' in status.stdout
        report = run(unprivileged, open_dir, "report", "fees", "--db-url", url)
        assert report.returncode == 0, report.stderr
        config = run(unprivileged, open_dir, "config", "show", "--db-url", url)
        assert config.returncode == 0, config.stderr
        # and its log moved elsewhere: the source's lock cannot be taken there (nor by a tracker run)
        out = open_dir / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        moved = run(unprivileged, open_dir, "db", "copy", "--db-url", url, "--to", f"sqlite:///{out}/moved.db")
        assert moved.returncode == 0, moved.stderr
        assert moved.stdout.startswith(f"copied {events} events and 0 quarantined frames from ")
        if not companions:
            assert "reading the file as immutable" in result.stderr
        elif companions == ("-wal",):
            assert "reading a private copy" in result.stderr
        else:
            assert result.stderr == ""
        assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written beside the copy
    finally:
        path.parent.chmod(0o755)


def test_read_only_open_never_writes_a_writable_copy(tmp_path: Path) -> None:
    """Where the directory is writable, read-only commands still open the file with mode=ro: nothing can change it."""
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    with open_log(url) as log:
        log.append([entry(1)])
    engine = open_engine(url, write=False)
    try:
        with engine.connect() as conn, pytest.raises(Exception, match="readonly"):
            conn.exec_driver_sql("CREATE TABLE intruder (x)")
    finally:
        engine.dispose()
    with closing(sqlite3.connect(tmp_path / "tracker.db")) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'intruder'").fetchone() == (0,)
