"""``tracker run`` as a child process against the fake exchange (real sockets on 127.0.0.1, port 0):

- SIGINT during a burst: exit code 0 and every frame the fake wrote to the socket is in the log, once;
- secrets: a known API key, API secret and every websocket token issued are absent from the child's logs (at DEBUG),
  from the database file and dump, and from ``/proc/<pid>/cmdline``.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation (waits are on the fake's
hub and on the child's exit).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_lease import poll

from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(90)

API_KEY = "leakKEYtest1234567890abcdefghijkl"
API_SECRET = "leakSECRETtest0987654321zyxwvutsr"
MARKETS = "btcusd,ethusd,btcusd-perp"


class Written(list[str]):
    """Data frames the fake's socket writers sent, with a way to wait for a count."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = trio.Event()

    def add(self, text: str) -> None:
        self.append(text)
        grew, self.grew = self.grew, trio.Event()
        grew.set()

    async def wait_count(self, n: int) -> None:
        while len(self) < n:
            await self.grew.wait()


class _Tee:
    """A receive channel proxy: records every data frame the fake's socket writer takes from a connection's queue."""

    def __init__(self, inner: trio.MemoryReceiveChannel[str], out: Written) -> None:
        self._inner = inner
        self._out = out

    def _keep(self, text: str) -> str:
        if '"event":"bts:' not in text:
            self._out.add(text)
        return text

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> str:
        try:
            return self._keep(await self._inner.receive())
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def receive_nowait(self) -> str:
        return self._keep(self._inner.receive_nowait())

    def close(self) -> None:
        self._inner.close()


def record_written(fx: FakeExchange) -> Written:
    """Every data frame the fake's socket writer sent. With a graceful close (our unsubscribe + heartbeat barrier)
    each of them was written before the server handled our close, so the tracker must have read it."""
    written = Written()
    original = type(fx.hub)._writer

    async def writer(ws, recv, *rest):  # type: ignore[no-untyped-def]
        await original(ws, _Tee(recv, written), *rest)

    fx.hub._writer = writer  # type: ignore[method-assign]
    return written


def child_env(fx: FakeExchange, db_url: str) -> dict[str, str]:
    return fx.tracker_env(os.environ, TRACKER_DB_URL=db_url, TRACKER_MARKETS=MARKETS)


async def run_child_through_burst(tmp_path: Path) -> tuple[FakeExchange, list[str], bytes, str, Path]:
    db_path = tmp_path / "tracker.db"
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    log_path = tmp_path / "child.log"
    async with open_fake_exchange(
        seed=3, markets=tuple(MARKETS.split(",")), api_key=API_KEY, api_secret=API_SECRET
    ) as fx:
        written = record_written(fx)
        with log_path.open("wb") as log_file:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tracker", "--verbose", "run"],
                env=child_env(fx, db_url),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                with trio.fail_after(30):
                    await fx.wait_subscribed(fx.private_channels())
                cmdline = await trio.Path(f"/proc/{process.pid}/cmdline").read_bytes()
                # SIGHUP to a run of the environment's account: nothing to reload, one warning, and it goes on.
                process.send_signal(signal.SIGHUP)
                await poll("the SIGHUP's warning", lambda: "nothing to reload" in log_path.read_text())
                fx.set_rate(4000)
                with trio.fail_after(30):
                    await written.wait_count(2000)
                process.send_signal(signal.SIGINT)  # mid-burst: the generator keeps going
                with trio.fail_after(30):
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            fx.set_rate(None)
            tokens = list(fx.tokens.tokens)
    assert code == 0, log_path.read_text()
    return fx, written, cmdline, "\n".join(tokens), db_path


async def test_sigint_during_burst_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    _fx, written, cmdline, tokens, db_path = await run_child_through_burst(tmp_path)
    engine = open_engine(f"sqlite:///{db_path}")
    try:
        entries = [e for page in EventLog(engine).iter_after(0) for e in page]
    finally:
        engine.dispose()
    payloads = [e.payload for e in entries if e.source == "ws"]
    assert len(payloads) == len(set(payloads)), "a frame was appended twice"
    missing = set(written) - set(payloads)
    assert not missing, f"{len(missing)} of {len(set(written))} frames written by the fake are not in the log"
    assert len(written) >= 2000
    # Each connection's close is recorded after its last frame (a backfill that was under way may still record its
    # completion after that: the stop lets it finish within the grace period, so "closed" need not be the last entry).
    last_frame: dict[str | None, int] = {}
    for e in entries:
        if e.source == "ws":
            last_frame[e.connection_id] = e.seq
    closed = {e.connection_id: e.seq for e in entries if e.source == "tracker" and e.event == "closed"}
    assert last_frame and all(closed.get(conn, 0) > seq for conn, seq in last_frame.items()), (closed, last_frame)

    # Secrets: not in argv, the child's log (at DEBUG), the database file or its dump.
    log_text = (tmp_path / "child.log").read_text()
    assert "subscribed 15 channels" in log_text
    assert log_text.count("received SIGHUP: nothing to reload") == 1
    dump = "\n".join(sqlite3.connect(db_path).iterdump())
    raw = db_path.read_bytes()
    secrets = [API_KEY, API_SECRET, *tokens.split("\n")]
    assert len(secrets) >= 3
    for secret in secrets:
        assert secret.encode() not in cmdline
        assert secret not in log_text
        assert secret not in dump
        assert secret.encode() not in raw


async def test_wrong_secret_is_one_actionable_line(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    markets = tuple(MARKETS.split(","))
    async with open_fake_exchange(seed=1, markets=markets, api_key=API_KEY, api_secret=API_SECRET) as fx:
        env = child_env(fx, db_url)
        env["BITSTAMP_API_SECRET"] = "wrongSECRETwrongSECRETwrongSECRET"
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-m", "tracker", "run"], env=env, capture_stdout=True, capture_stderr=True, check=False
            )
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert err.strip().splitlines()[-1] == "tracker: error: signature rejected: check BITSTAMP_API_SECRET"
    assert "wrongSECRET" not in err and API_KEY not in err


async def test_unmigrated_database_says_run_db_upgrade(tmp_path: Path) -> None:
    db_path = tmp_path / "empty.db"
    sqlite3.connect(db_path).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(BITSTAMP_API_KEY=API_KEY, BITSTAMP_API_SECRET=API_SECRET, TRACKER_DB_URL=f"sqlite:///{db_path}")
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "tracker", "run"], env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert err[-1].startswith("tracker: error: ") and "run `tracker db upgrade`" in err[-1]
