"""Errors a user can act on: each case drives the real ``tracker`` command in a subprocess (``python -m tracker``) and
asserts its exit code and that stderr is exactly ONE line, ``tracker: error: <what is wrong and the fix>``.

Rules: loopback only (the fake exchange on port 0 in this process; "unreachable" is a port we bound and closed), a
clean environment per call (no BITSTAMP_*/TRACKER_* from outside, cwd a temp dir so no tracker.toml is picked up), an
absolute timeout on every test, no sleeps: a long-running ``tracker run`` is stopped with SIGINT once the fake saw it
subscribe.

No write permission: the tests run as root here, and root ignores file modes, so the command runs as ``nobody``
(uid 65534) against a root-owned directory or file when we are root, and against a chmod'ed one otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import pytest
import trio

from tracker.fake.server import DEMO_API_SECRET, FakeExchange, open_fake_exchange
from tracker.store import migrate
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
MARKETS = "btcusd,btcusd-perp"


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(values)
    return env


def tracker(
    *args: str, cwd: Path, env: Mapping[str, str], prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "tracker", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def atracker(*args: str, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "tracker", *args],
        cwd=cwd,
        env=dict(env),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def one_line(stderr: str | bytes) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{text}"
    assert lines[0].startswith("tracker: error: "), lines[0]
    return lines[0].removeprefix("tracker: error: ")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on, for the whole test: bound (never listening) until the test ends, so no
    other test (an xdist worker's server on port 0) can take it meanwhile; a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(url)
    return url


def fake_env(fx: FakeExchange, db: str, **overrides: str) -> dict[str, str]:
    values = {
        "BITSTAMP_API_URL": fx.api_url,
        "BITSTAMP_WS_URL": fx.ws_url,
        "BITSTAMP_API_KEY": fx.api_key,
        "BITSTAMP_API_SECRET": fx.api_secret,
        "TRACKER_MARKETS": MARKETS,
        "TRACKER_DB_URL": db,
    }
    values.update(overrides)
    return clean_env(**values)


# -- credentials ---------------------------------------------------------------------------------------------------


def test_missing_credentials(tmp_path: Path, db: str) -> None:
    result = tracker("run", cwd=tmp_path, env=clean_env(TRACKER_DB_URL=db))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "BITSTAMP_API_KEY is not set: export your Bitstamp API key (or run `tracker demo`)"
    )
    result = tracker("run", cwd=tmp_path, env=clean_env(TRACKER_DB_URL=db, BITSTAMP_API_KEY="key123456"))
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("BITSTAMP_API_SECRET is not set: export it or put it in a file")


def test_malformed_credentials(tmp_path: Path, db: str) -> None:
    env = clean_env(TRACKER_DB_URL=db, BITSTAMP_API_KEY="abcd efgh", BITSTAMP_API_SECRET="s3cretvalue")
    result = tracker("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert one_line(result.stderr) == "BITSTAMP_API_KEY contains white space: check that it was copied whole"

    empty = tmp_path / "secret"
    empty.write_text("\n")
    empty.chmod(0o600)
    env = clean_env(TRACKER_DB_URL=db, BITSTAMP_API_KEY="abcdefgh", BITSTAMP_API_SECRET_FILE=str(empty))
    result = tracker("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"the API secret file {empty} is empty: write the API secret into it (or fix BITSTAMP_API_SECRET_FILE)"
    )


# -- the exchange ----------------------------------------------------------------------------------------------------


async def test_api0001_unknown_key(tmp_path: Path, db: str) -> None:
    async with open_fake_exchange(markets=MARKETS.split(",")) as fx:
        result = await atracker("run", cwd=tmp_path, env=fake_env(fx, db, BITSTAMP_API_KEY="nosuchkey0000000"))
    assert result.returncode == 3
    assert one_line(result.stderr) == "API key not found: check BITSTAMP_API_KEY"


async def test_api0005_wrong_secret(tmp_path: Path, db: str) -> None:
    async with open_fake_exchange(markets=MARKETS.split(",")) as fx:
        result = await atracker("run", cwd=tmp_path, env=fake_env(fx, db, BITSTAMP_API_SECRET="wrongsecret0000"))
    assert result.returncode == 3
    assert one_line(result.stderr) == "signature rejected: check BITSTAMP_API_SECRET"
    assert b"wrongsecret0000" not in result.stderr + result.stdout


async def test_api0017_clock_skew_is_resynced(tmp_path: Path, db: str) -> None:
    """The exchange's clock is 20 minutes ahead: the first signed request gets API0017, the client takes the offset
    from the response's Date header and retries once; ``tracker run`` then subscribes and stops cleanly."""
    skew = 1200.0
    async with (
        open_fake_exchange(markets=MARKETS.split(","), clock=lambda: time.time() + skew) as fx,
        trio.open_nursery() as nursery,
    ):
        run = partial(
            trio.run_process,
            [sys.executable, "-m", "tracker", "run"],
            cwd=tmp_path,
            env=fake_env(fx, db),
            stderr=subprocess.PIPE,
            check=False,
        )
        proc: trio.Process = await nursery.start(run)
        with trio.fail_after(30):
            await fx.wait_subscribed(fx.private_channels())
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.stderr is not None
        chunks = []
        while chunk := await proc.stderr.receive_some():
            chunks.append(chunk)
        stderr = b"".join(chunks).decode()
    assert proc.returncode == 0, stderr
    assert "tracker: error" not in stderr


async def test_unreachable_exchange(tmp_path: Path, db: str, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/api/v2/"
    env = clean_env(
        TRACKER_DB_URL=db,
        BITSTAMP_API_URL=url,
        BITSTAMP_WS_URL="ws://127.0.0.1:1",
        BITSTAMP_API_KEY="abcdefgh",
        BITSTAMP_API_SECRET="s3cretvalue",
    )
    for command in ("run", "reconcile"):  # reconcile fails as fast as run (issue 14.5: it retried for 46 s)
        started = time.monotonic()
        result = await atracker(command, cwd=tmp_path, env=env)
        assert result.returncode == 2, command
        message = one_line(result.stderr)
        assert message.startswith(f"cannot reach the exchange at {url}: ConnectError"), command
        assert message.endswith("; check BITSTAMP_API_URL and your network")
        assert time.monotonic() - started < 20, command


async def test_a_password_in_the_exchange_urls_is_never_shown(tmp_path: Path, db: str, closed_port: int) -> None:
    """A proxy's credentials in ``BITSTAMP_API_URL`` (or the websocket's): the error names the URL without them."""
    port = closed_port
    env = clean_env(
        TRACKER_DB_URL=db,
        BITSTAMP_API_URL=f"http://proxyuser:pr0xy-pw@127.0.0.1:{port}/api/v2/",
        BITSTAMP_WS_URL="ws://proxyuser:pr0xy-pw@127.0.0.1:1",
        BITSTAMP_API_KEY="abcdefgh",
        BITSTAMP_API_SECRET="s3cretvalue",
    )
    result = await atracker("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"cannot reach the exchange at http://proxyuser:***@127.0.0.1:{port}/")
    assert b"pr0xy-pw" not in result.stderr + result.stdout


async def test_unknown_market(tmp_path: Path, db: str) -> None:
    async with open_fake_exchange(markets=MARKETS.split(",")) as fx:
        result = await atracker("run", cwd=tmp_path, env=fake_env(fx, db, TRACKER_MARKETS="btcusd,foousd"))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "unknown market foousd: the exchange does not list it (it has btcusd, btcusd-perp);"
        " fix TRACKER_MARKETS or --markets"
    )


async def test_metrics_port_in_use(tmp_path: Path, db: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with open_fake_exchange(markets=MARKETS.split(",")) as fx:
            result = await atracker("run", "--metrics-port", str(port), cwd=tmp_path, env=fake_env(fx, db))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"metrics port {port} is already in use: pick another with --metrics-port (or 0 for any free port)"
    )


# -- the database ----------------------------------------------------------------------------------------------------


def test_database_url_wrong(tmp_path: Path) -> None:
    result = tracker("status", "--db-url", "mysql://u@h/db", cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "--db-url: tracker does not support 'mysql' (psycopg 3 and SQLite are the drivers it ships):"
        " use sqlite:///path/to/tracker.db or postgresql+psycopg://user@host/dbname"
    )

    result = tracker("status", cwd=tmp_path, env=clean_env(TRACKER_DB_URL="tracker.db"))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "TRACKER_DB_URL is not a database URL: use sqlite:///path/to/tracker.db or postgresql+psycopg://user@host/dbname"
    )


def test_database_unreachable(tmp_path: Path, closed_port: int) -> None:
    port = closed_port
    url = f"postgresql://tracker:hunter22@127.0.0.1:{port}/tracker"
    # `db` said "check TRACKER_DB_URL" for a URL given as --db-url.
    for command in ("status", "db upgrade", "db current", "db downgrade 0001"):
        result = tracker(*command.split(), "--db-url", url, cwd=tmp_path, env=clean_env())
        assert result.returncode == 2, command
        assert one_line(result.stderr) == (
            f"cannot connect to the database at postgresql+psycopg://tracker@127.0.0.1:{port}/tracker: connection"
            " refused; check --db-url"  # the URL came from the flag, so the message names the flag (issue 14.5)
        ), command
        assert "hunter22" not in result.stderr
    # The copy's target names its own source too (it said "check TRACKER_DB_URL").
    source = f"sqlite:///{tmp_path / 'source.db'}"
    upgrade(source)
    target = f"postgresql://tracker@127.0.0.1:{port}/tracker"
    result = tracker("db", "copy", "--db-url", source, "--to", target, cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    assert one_line(result.stderr).endswith(": connection refused; check --to")
    result = tracker("db", "copy", "--db-url", source, cwd=tmp_path, env=clean_env(TRACKER_COPY_TO_URL=target))
    assert one_line(result.stderr).endswith(": connection refused; check TRACKER_COPY_TO_URL")


def test_schema_not_migrated(tmp_path: Path) -> None:
    (tmp_path / "new.db").touch()  # an empty SQLite file: exists, but no schema
    url = f"sqlite:///{tmp_path / 'new.db'}"
    env = clean_env(TRACKER_DB_URL=url, BITSTAMP_API_KEY="abcdefgh", BITSTAMP_API_SECRET="s3cretvalue")
    result = tracker("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    head = migrate.head_revision()
    assert one_line(result.stderr) == (
        f"the database at {url} is not migrated (at revision none, need {head}): run `tracker db upgrade`"
    )
    missing = tmp_path / "missing.db"
    result = tracker("status", "--db-url", f"sqlite:///{missing}", cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"the SQLite database {missing} (from --db-url) does not exist: point --db-url at your database,"
        " or run `tracker db upgrade` to create an empty one"
    )


def test_run_and_status_against_a_missing_sqlite_file_create_nothing(tmp_path: Path) -> None:
    """Issue 14.5: `run` left an empty file behind, which the next command then called "not migrated"."""
    missing = tmp_path / "missing.db"
    env = clean_env(
        TRACKER_DB_URL=f"sqlite:///{missing}", BITSTAMP_API_KEY="abcdefgh", BITSTAMP_API_SECRET="s3cretvalue"
    )
    for command in ("run", "status", "report fees", "rebuild", "verify"):
        result = tracker(*command.split(), cwd=tmp_path, env=env)
        assert result.returncode == 2, (command, result.stderr)
        assert "does not exist" in one_line(result.stderr), command
        assert not missing.exists(), f"`tracker {command}` created {missing}"


def test_status_after_the_demo_points_at_the_demo_database(tmp_path: Path) -> None:
    """Issue 14.5: after `tracker demo`, `tracker status` told the user to run `tracker db upgrade` (an empty
    tracker.db) instead of naming the tracker-demo.db the demo wrote."""
    upgrade(f"sqlite:///{tmp_path / 'tracker-demo.db'}")
    for command in ("status", "verify", "audit"):  # verify said "run `tracker db upgrade` (or check TRACKER_DB_URL)"
        result = tracker(command, cwd=tmp_path, env=clean_env())
        assert result.returncode == 2, command
        assert one_line(result.stderr) == (
            "the SQLite database tracker.db (the default database) does not exist, but tracker-demo.db beside it does"
            " (written by `tracker demo`): pass --db-url sqlite:///tracker-demo.db"
        ), command
    assert not (tmp_path / "tracker.db").exists()
    result = tracker("status", "--db-url", "sqlite:///tracker-demo.db", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr


@pytest.fixture
def unprivileged() -> list[str]:
    """A command prefix that runs as ``nobody`` when we are root (root ignores file modes); empty otherwise.

    ``setpriv`` rather than ``subprocess(user=...)``: the venv's interpreter may live under a root-only home, which
    ``setpriv`` (exec before the switch is complete on some systems) still reaches; the probe below makes sure the
    command really runs as nobody and really may not write a root-owned directory."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot take write permission away")
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import os; print(os.getuid(), os.access('/root', os.W_OK))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.split() != [str(NOBODY), "False"]:
        pytest.skip(f"cannot run the interpreter as nobody here: {probe.stderr.strip()[:200]}")
    return prefix


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A temp directory everyone may enter (pytest's own tmp_path sits under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="tracker-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_no_write_permission_for_the_sqlite_file(open_dir: Path, unprivileged: list[str]) -> None:
    tmp_path = open_dir
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o755)
    if not unprivileged:
        locked.chmod(0o555)
    url = f"sqlite:///{locked / 'tracker.db'}"
    result = tracker("db", "upgrade", "--db-url", url, cwd=locked, env=clean_env(), prefix=unprivileged)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"cannot write in {locked}, where the SQLite database {locked / 'tracker.db'} lives: permission denied"
    )

    # An existing database file the user may not write.
    owned = tmp_path / "owned"
    owned.mkdir(mode=0o777)
    owned.chmod(0o777)
    path = owned / "tracker.db"
    upgrade(f"sqlite:///{path}")
    path.chmod(0o444 if not unprivileged else 0o644)
    result = tracker("db", "upgrade", "--db-url", f"sqlite:///{path}", cwd=owned, env=clean_env(), prefix=unprivileged)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"cannot write the SQLite database {path}: permission denied (check the file's owner and mode)"
    )

    # The directory named is a file.
    result = tracker("db", "upgrade", "--db-url", f"sqlite:///{path}/x.db", cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"cannot open the SQLite database {path}/x.db: the directory {path} does not exist"
    )


def test_secret_never_in_an_error(tmp_path: Path, db: str) -> None:
    env = clean_env(TRACKER_DB_URL="nonsense://", BITSTAMP_API_KEY="abcdefgh", BITSTAMP_API_SECRET=DEMO_API_SECRET)
    result = tracker("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert DEMO_API_SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("argv", [["config", "show"], ["discrepancies", "--format", "json"]])
def test_a_reader_gone_is_a_quiet_exit_141_not_a_traceback(tmp_path: Path, argv: list[str]) -> None:
    """``tracker ... | head``: the reader closes the pipe while tracker writes. Before, a ``BrokenPipeError``
    traceback (or Python's "Exception ignored ... BrokenPipeError" at exit). Now nothing on stderr and 141 (128 +
    SIGPIPE), as the shell's own tools. The reader is closed before tracker starts, so its first write fails: no
    race with a real ``head``."""
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(url)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tracker", *argv, "--db-url", url],
            cwd=tmp_path,
            env=clean_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
