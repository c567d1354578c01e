"""A stop signal is a clean stop of ``tracker demo`` at any moment, as of ``tracker run`` (tests/test_stop_signals.py):
during its start-up, one line and exit 0, nothing received; once its tracker runs, the demo ends early with everything
received committed, and reports as at the end of its ``--duration`` (the log intact); a second signal is absorbed.
Never the signal's default action (killed by SIGTERM, exit -15; a ``KeyboardInterrupt``, exit 130).

Each case is a real ``python -m tracker demo`` child. Rules: loopback only (the demo's fake binds port 0), an absolute
timeout on every test, no sleep as synchronisation: the start-up signal waits until the child catches SIGTERM
(``SigCgt`` in ``/proc/PID/status``: ``tracker.cli.main`` installs its handler first thing, long before the demo's
database or fake exist), the later one until the child's log holds events.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from tracker.cli import main

pytestmark = pytest.mark.timeout(120)

DURATION_S = 90  # far longer than any case waits: a demo that ends meanwhile ended because of the signal


async def demo_child(db: Path, out: Path, err: Path) -> trio.Process:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BITSTAMP_", "TRACKER_"))}
    command = [sys.executable, "-m", "tracker", "demo", "--duration", str(DURATION_S), "--db", str(db), "--no-faults"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return await trio.lowlevel.open_process(command, env=env, stdout=stdout, stderr=stderr, cwd=db.parent)


async def until(what: str, condition: Callable[[], bool], proc: trio.Process, err: Path, within: float = 60) -> None:
    """Poll ``condition`` (a file or /proc read) until it holds; fail with the child's stderr if it ends first."""
    with trio.fail_after(within):
        while not condition():
            assert proc.returncode is None, f"the demo ended before {what}: {text_of(err)}"
            await trio.sleep(0.005)  # another process's progress: nothing to wait on


async def stop_when(proc: trio.Process, err: Path, what: str, ready: Callable[[], bool], *signums: int) -> int:
    """Send ``signums`` once ``ready`` holds; the child's exit code (killed if it outlives the test)."""
    try:
        await until(what, ready, proc, err)
        for signum in signums:
            proc.send_signal(signum)
        with trio.fail_after(60):
            return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def text_of(path: Path) -> str:
    return path.read_text()


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def logged(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM event_log WHERE source = 'ws'").fetchone()[0])
    except sqlite3.OperationalError:  # the migration not yet done: no table
        return 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_while_the_demo_starts_is_one_line_and_exit_0(tmp_path: Path, signum: int) -> None:
    db, out, err = tmp_path / "demo.db", tmp_path / "out.txt", tmp_path / "err.txt"
    proc = await demo_child(db, out, err)
    code = await stop_when(proc, err, "catching SIGTERM", lambda: catches_sigterm(proc.pid), signum)
    text = err.read_text()
    assert code == 0, text
    name = signal.Signals(signum).name
    assert f"stopped during start-up: {name} while " in text, text
    assert "nothing was received, nothing written" in text and "Traceback" not in text, text
    assert "demo done" not in out.read_text()
    assert logged(db) == 0


async def test_a_stop_signal_during_the_demo_ends_it_early_with_its_report(tmp_path: Path) -> None:
    db, out, err = tmp_path / "demo.db", tmp_path / "out.txt", tmp_path / "err.txt"
    proc = await demo_child(db, out, err)
    started = time.monotonic()
    # A second signal while it stops: absorbed.
    code = await stop_when(proc, err, "logging 20 frames", lambda: logged(db) >= 20, signal.SIGINT, signal.SIGTERM)
    text, report = err.read_text(), out.read_text()
    assert code == 0, text
    assert time.monotonic() - started < DURATION_S
    assert "SIGINT: the demo ends early, everything received is committed" in text, text
    assert "Traceback" not in text, text
    assert "demo done: " in report and "  verify: ok, " in report, report
    assert main(["verify", "--db-url", f"sqlite:///{db}"]) == 0
