"""A PostgreSQL server the test owns: ``initdb`` in a temporary directory, ``pg_ctl`` on a free loopback port, stopped
and removed at the end. Tests that stop and start a database (restart faults) use this, never the shared server.

PostgreSQL refuses to run as root, and tests run as root: every server command runs as the ``postgres`` OS user
(``runuser``) when we are root. Authentication is ``trust`` on 127.0.0.1 only (``listen_addresses``), no Unix socket
outside the data directory. If the binaries are missing the fixture skips (fails under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("TRACKER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """None when a private server can be run here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries at {PG_BIN} (set TRACKER_TEST_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _ephemeral_low(ranges: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the kernel's ephemeral range (Linux's default where it cannot be read)."""
    try:
        return int(ranges.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. The server binds it after initdb (seconds later) and
    again at each restart (after an outage of seconds): a port of the ephemeral range, as port 0 gave before, can be
    handed out meanwhile to any other socket (a fake exchange's port 0 or a client's connection, in any xdist worker),
    and the server's start then fails (address in use). Below the range only an explicit bind takes a port."""
    high = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, high - 10_000), high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another one
        return port
    raise RuntimeError(f"no free loopback port below {high}")


@dataclass
class PgServer:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
            " -c fsync=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=40",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, the server shuts down cleanly (what a restart looks like to them)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def log_text(self) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """initdb + start; yields the running server; stops it (immediate) and removes everything at the end."""
    directory = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = PgServer(directory, _free_port())
    try:
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                server.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
