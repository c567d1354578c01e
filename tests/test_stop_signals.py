"""A stop signal is always a clean stop: SIGTERM or SIGINT during ``tracker run``'s start-up, before the service
subscribes, ends it with exit 0 and one line, ``stopped during start-up: <signal> while <what it was doing>``, nothing
written; never the signal's default action (killed by SIGTERM, exit -15; a ``KeyboardInterrupt``, exit 130).

Each case is a real ``python -m tracker run`` child held at one step of its start-up by a loopback port that accepts
connections and never answers (``unanswered``): the signal is sent once the child has connected to it, so it lands
inside that step, wherever the step is (the synchronous database check before trio runs; the markets check in trio,
for the environment's one account and for the accounts of a config file).

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation (the signal waits for
the child's connection; the exit for the child).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
from test_accounts_cli import KEYS, tracker_child, write_config

from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(60)

SIGNALS = {
    "SIGTERM": (signal.SIGTERM,),
    "SIGINT": (signal.SIGINT,),
    "SIGTERM then SIGINT": (signal.SIGTERM, signal.SIGINT),  # a second signal while stopping: absorbed
}


@dataclass(frozen=True)
class Unanswered:
    """A loopback port that accepts and never answers, as an exchange's URLs (``write_config`` reads these)."""

    port: int
    reached: trio.Event
    api_key: str = KEYS[0][0]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def unanswered() -> AsyncIterator[Unanswered]:
    reached = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        reached.set()
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        yield Unanswered(listeners[0].socket.getsockname()[1], reached)
        nursery.cancel_scope.cancel()


def base_env(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(values)
    return env


def one_account_env(hole: Unanswered, db_url: str) -> dict[str, str]:
    """The environment's one account, its exchange the port that never answers."""
    return base_env(
        BITSTAMP_API_KEY=KEYS[0][0],
        BITSTAMP_API_SECRET=KEYS[0][1],
        BITSTAMP_API_URL=hole.api_url,
        BITSTAMP_WS_URL=hole.ws_url,
        TRACKER_MARKETS="btcusd",
        TRACKER_DB_URL=db_url,
    )


async def stopped_while_reached(hole: Unanswered, env: dict[str, str], log_path: Path, signums: tuple[int, ...]) -> str:
    """Start ``tracker run``, send ``signums`` once it has connected to ``hole``; its exit code must be 0 within
    15 s. Its output."""
    async with tracker_child(["run"], env, log_path) as process:
        with trio.fail_after(30):
            await hole.reached.wait()
        for signum in signums:
            process.send_signal(signum)
        with trio.fail_after(15):
            code = await process.wait()
    output = await trio.Path(log_path).read_text()
    assert code == 0, output
    assert "Traceback" not in output, output
    return output


def assert_stopped_during_start_up(output: str, signums: tuple[int, ...], phase: str) -> None:
    """The last line says so; it names the signal taken first (two sent at once may be taken in either order)."""
    last = output.strip().splitlines()[-1]
    endings = {
        f"stopped during start-up: {signal.Signals(signum).name} while {phase}; nothing was received, nothing written"
        for signum in signums
    }
    assert any(last.endswith(ending) for ending in endings), output


def event_log_rows(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM event_log").fetchone()[0])


@pytest.mark.parametrize("signums", SIGNALS.values(), ids=SIGNALS.keys())
async def test_a_stop_while_the_database_is_checked_is_clean(tmp_path: Path, signums: tuple[int, ...]) -> None:
    """Before trio runs: the database check (a PostgreSQL URL whose server never answers)."""
    async with unanswered() as hole:
        env = one_account_env(hole, f"postgresql+psycopg://tracker@127.0.0.1:{hole.port}/tracker")
        output = await stopped_while_reached(hole, env, tmp_path / "child.log", signums)
    assert_stopped_during_start_up(output, signums, "checking the database")


@pytest.mark.parametrize("signums", SIGNALS.values(), ids=SIGNALS.keys())
async def test_a_stop_while_the_markets_are_checked_is_clean(tmp_path: Path, signums: tuple[int, ...]) -> None:
    """In trio, before the service: the markets check of the environment's one account."""
    db_path = tmp_path / "tracker.db"
    upgrade(f"sqlite:///{db_path}")
    async with unanswered() as hole:
        env = one_account_env(hole, f"sqlite:///{db_path}")
        output = await stopped_while_reached(hole, env, tmp_path / "child.log", signums)
    assert_stopped_during_start_up(output, signums, "checking the markets")
    assert event_log_rows(db_path) == 0


@pytest.mark.parametrize("signums", SIGNALS.values(), ids=SIGNALS.keys())
async def test_a_stop_while_the_accounts_are_checked_is_clean(tmp_path: Path, signums: tuple[int, ...]) -> None:
    """In trio, before any service: the check of the config file's ``[[accounts]]``."""
    db_path = tmp_path / "tracker.db"
    upgrade(f"sqlite:///{db_path}")
    async with unanswered() as hole:
        other = Unanswered(hole.port, hole.reached, KEYS[1][0])
        config = write_config(tmp_path, (hole, other), (KEYS[0][1], KEYS[1][1]))  # type: ignore[arg-type]
        env = base_env(TRACKER_CONFIG=str(config), TRACKER_DB_URL=f"sqlite:///{db_path}", TRACKER_MARKETS="btcusd")
        output = await stopped_while_reached(hole, env, tmp_path / "child.log", signums)
    assert_stopped_during_start_up(output, signums, "checking the accounts' markets and keys")
    assert event_log_rows(db_path) == 0


# A stop signal that comes once the command is over, as the process ends (the second of SIGTERM then SIGINT when the
# first was taken at the very end of the start-up): sent by the child itself, after `main` returned.
LATE_SIGNAL = """
import os, signal, sys
from tracker.cli import main

code = main(["run"], exiting=True)  # no credentials: one error line (as the process's entry, tracker.cli.run, calls it)
print(code, flush=True)
os.kill(os.getpid(), signal.{name})  # delivered here, at once, as the process is about to end
sys.exit(code)
"""


ENTRY_AT_EXIT = """
import signal, sys
from tracker.cli import run

sys.argv = ["tracker", "run"]  # no credentials: one error line
try:
    run()
except SystemExit as exit:
    ignored = [signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]
    print(exit.code, ignored, flush=True)
"""


async def test_the_process_entry_ignores_stop_signals_through_the_interpreters_end(tmp_path: Path) -> None:
    """After the command, ``tracker.cli.run`` leaves SIGINT and SIGTERM ignored, not recorded: the interpreter's
    finalization gives a recording (Python) handler back to the default action, and a signal in that moment ended a
    clean exit 0 by SIGINT (-2); an ignored one stays ignored through it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env["TRACKER_DB_URL"] = f"sqlite:///{tmp_path / 'tracker.db'}"
    result = await trio.run_process(
        [sys.executable, "-c", ENTRY_AT_EXIT], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    code, ignored = result.stdout.decode().split(" ", 1)
    assert int(code) != 0, result.stderr.decode()  # the command's own error code
    assert ignored.strip() == "[True, True]"


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
async def test_a_stop_signal_as_the_process_ends_is_absorbed(tmp_path: Path, name: str) -> None:
    """The process's entry keeps the stop signals to its exit: a signal after the command ended leaves its exit code
    as it was, where the defaults would end it by the signal (SIGINT: exit -2 after a KeyboardInterrupt; SIGTERM:
    -15)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env["TRACKER_DB_URL"] = f"sqlite:///{tmp_path / 'tracker.db'}"
    result = await trio.run_process(
        [sys.executable, "-c", LATE_SIGNAL.format(name=name)],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == int(result.stdout) != 0, stderr  # the command's own code
    assert stderr.startswith("tracker: error: "), stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
