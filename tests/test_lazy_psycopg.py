"""psycopg is loaded only where a PostgreSQL log is used: a process on SQLite (the embedded default, and every CLI
command on it) never imports it (importing `tracker run`'s modules: 0.50 -> 0.46 s, 60.7 -> 52.5 MB peak RSS). And
the steps' protocol the store names for the runtime (``StepsWait``, ``StepsReady``) has psycopg's own values, which
the PostgreSQL generators yield and expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from psycopg.waiting import Ready, Wait

from tracker.store.event_log import StepsReady, StepsWait

_SQLITE_RUN = """
import sys
from datetime import UTC, datetime

from tracker.cli import main
from tracker.domain.log import NewEntry
from tracker.runtime import service  # the task tree of `tracker run`, its writer and loop append
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

assert main(["db", "upgrade"]) == 0
engine = open_engine(sys.argv[1])
log = EventLog(engine)
entry = NewEntry("1", "ws", "c", "e", "{}", "k", datetime.now(UTC))
assert log.append([entry] + [NewEntry("1", "ws", "c", "e", "{}", f"k{i}", entry.received_at) for i in range(200)])
assert len(log.read_after(0, limit=500)) == 201
engine.dispose()
for command in (["verify"], ["status"], ["rebuild"]):
    assert main(command) == 0, command
print("psycopg" in sys.modules)
"""


def test_a_sqlite_process_never_loads_psycopg(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    env = {**os.environ, "TRACKER_DB_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", _SQLITE_RUN, url], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_the_steps_protocol_is_psycopgs() -> None:
    assert {member.name: int(member) for member in StepsWait} == {member.name: int(member) for member in Wait}
    assert {member.name: int(member) for member in StepsReady} == {member.name: int(member) for member in Ready}
