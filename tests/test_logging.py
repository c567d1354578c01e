"""Logs of a real ``tracker run`` (a subprocess) against the fake exchange: one line per state change, ``--log-format
json`` emits JSON lines, and the API key, the secret and the websocket tokens never appear, even with ``--verbose``.

Rules: loopback only (the fake on port 0 in this process), an absolute timeout, no sleep used as synchronisation:
the test waits on the fake's hub (subscribed, connections) and on lines read from the process's stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(60)

MARKETS = ("btcusd", "btcusd-perp")


@dataclass
class Proc:
    process: trio.Process
    lines: list[str] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def wait_lines(self, predicate: Callable[[str], bool], count: int = 1) -> None:
        """Until ``count`` lines read so far match."""
        with trio.fail_after(30):
            while sum(map(predicate, self.lines)) < count:
                await self.changed.wait()


async def _read_lines(proc: Proc) -> None:
    assert proc.process.stderr is not None
    buffer = b""
    while chunk := await proc.process.stderr.receive_some():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        proc.lines.extend(line.decode() for line in complete)
        proc.changed.set()
        proc.changed = trio.Event()
    if buffer:
        proc.lines.append(buffer.decode())
    proc.changed.set()


def env_for(fx: FakeExchange, db: str) -> dict[str, str]:
    return fx.tracker_env(os.environ, TRACKER_DB_URL=db)


@asynccontextmanager
async def tracker_run(fx: FakeExchange, tmp_path: Path, *args: str) -> AsyncIterator[Proc]:
    """``tracker <args> run`` until the block ends, then SIGINT and wait; exits 0 or the test fails."""
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db)
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tracker", *args],
            cwd=tmp_path,
            env=env_for(fx, db),
            stderr=subprocess.PIPE,
        )
        proc = Proc(process)
        nursery.start_soon(_read_lines, proc)
        try:
            yield proc
        finally:
            process.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await process.wait()
    assert process.returncode == 0, "\n".join(proc.lines)


def secrets_of(fx: FakeExchange) -> list[str]:
    return [fx.api_key, fx.api_secret, *fx.tokens.tokens]  # and every websocket token the fake issued


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_state_changes_one_line_each_and_no_secret(tmp_path: Path, fmt: str) -> None:
    async with open_fake_exchange(markets=MARKETS) as fx:
        channels = fx.private_channels()
        async with tracker_run(fx, tmp_path, "--verbose", "--log-format", fmt, "run") as proc:
            subscribed = re.compile(rf"subscribed {len(channels)} channels on ws-\w+")
            await fx.wait_subscribed(channels)
            await proc.wait_lines(lambda line: bool(subscribed.search(line)))
            await fx.generate(30)
            await fx.drop_connections()
            await fx.wait_connections_total(2)
            await fx.wait_subscribed(channels)
            await proc.wait_lines(lambda line: bool(subscribed.search(line)), 2)
        secrets = secrets_of(fx)
    lines = proc.lines
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text
    if fmt == "json":
        records = [json.loads(line) for line in lines if line.strip()]  # every line is a JSON object
        messages = [r["msg"] for r in records]
        assert {"ts", "level", "logger", "msg"} <= set(records[0])
        assert any(r["level"] == "debug" for r in records)  # --verbose: frame-level lines
    else:
        messages = lines
        assert any(" DEBUG " in line for line in lines)
    # One line per state change: connected, subscribed N channels (twice: start and after the drop), why it reconnected.
    assert sum(bool(re.search(r"connected ws-\w+ to ws://", m)) for m in messages) == 2
    assert sum(bool(re.search(rf"subscribed {len(channels)} channels on ws-\w+", m)) for m in messages) == 2
    assert any("connection ws-" in m and "closed: " in m for m in messages)  # the drop and its reason
    assert any(m.startswith("stopped: ") or "stopped: " in m for m in messages)


def test_secret_redacted_even_if_a_message_carries_it() -> None:
    """Redaction is the last line of defence: a key the run registered is scrubbed from any record, text or json."""
    from tracker.logs import redact, setup_logging

    for fmt in ("text", "json"):
        stream = io.StringIO()
        setup_logging(verbose=True, fmt=fmt, stream=stream)
        redact("topSECRETvalue123")
        logging.getLogger("tracker.test").debug("signing with %s", "topSECRETvalue123")
        try:
            int("topSECRETvalue123")  # the ValueError's message carries the value
        except ValueError:
            logging.getLogger("tracker.test").exception("failed")
        assert "topSECRETvalue123" not in stream.getvalue()
        assert "***" in stream.getvalue()
