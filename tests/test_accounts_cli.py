"""``tracker run`` with several accounts in its config file (``[[accounts]]``), as a child process against two fake
exchanges (one account each; real sockets on 127.0.0.1, port 0):

- SIGINT mid-burst: exit 0, every frame either fake wrote is in the log once, under its own account; log lines name
  the account (``account=N``); no key, secret or token in the log, the database or the command line;
- a wrong secret for the second account: the first is tracked, one error line says the second is not and why;
- every account's secret wrong: the start fails with one error line naming the first account;

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from test_ingest_process import record_written

from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(90)

MARKETS = ("btcusd", "ethusd")
KEYS = (
    ("cliKEYone1234567890abcdefghij", "cliSECRETone0987654321zyxwvu"),
    ("cliKEYtwo1234567890abcdefghij", "cliSECRETtwo0987654321zyxwvu"),
)


def write_config(
    tmp_path: Path, fakes: tuple[FakeExchange, ...], secrets: tuple[str, ...], keys: tuple[str, ...] | None = None
) -> Path:
    """``tmp_path/tracker.toml`` (written anew) with one ``[[accounts]]`` table per fake, in order: its key (or that
    of ``keys``), a secret file holding ``secrets``' (``secretN``, N its place), its URLs."""
    lines = []
    keys = keys or tuple(fx.api_key for fx in fakes)
    for number, (fx, secret, key) in enumerate(zip(fakes, secrets, keys, strict=True), 1):
        secret_file = tmp_path / f"secret{number}"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        lines += [
            "[[accounts]]",
            f'api_key = "{key}"',
            f'api_secret_file = "{secret_file}"',
            f'api_url = "{fx.api_url}"',
            f'ws_url = "{fx.ws_url}"',
            "",
        ]
    config = tmp_path / "tracker.toml"
    config.write_text("\n".join(lines))
    return config


def child_env(config: Path, db_url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(TRACKER_CONFIG=str(config), TRACKER_DB_URL=db_url, TRACKER_MARKETS=",".join(MARKETS))
    return env


@asynccontextmanager
async def tracker_child(
    argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> AsyncIterator[trio.Process]:
    """``python -m tracker *argv`` (in ``cwd``) with its output in ``log_path``; killed on the way out if it still
    runs."""
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tracker", *argv], env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def interrupt(process: trio.Process) -> int:
    """SIGINT, then its exit code (within 30 s)."""
    process.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        return await process.wait()


async def test_sigint_mid_burst_keeps_every_accounts_frames_once(tmp_path: Path) -> None:
    db_path = tmp_path / "tracker.db"
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    log_path = tmp_path / "child.log"
    async with (
        open_fake_exchange(seed=5, markets=MARKETS, user_id=720001, api_key=KEYS[0][0], api_secret=KEYS[0][1]) as one,
        open_fake_exchange(seed=6, markets=MARKETS, user_id=720002, api_key=KEYS[1][0], api_secret=KEYS[1][1]) as two,
    ):
        fakes = (one, two)
        written = [record_written(fx) for fx in fakes]
        config = write_config(tmp_path, fakes, (KEYS[0][1], KEYS[1][1]))
        async with tracker_child(["--verbose", "run"], child_env(config, db_url), log_path) as process:
            with trio.fail_after(40):
                for fx in fakes:
                    await fx.wait_subscribed(fx.private_channels())
            cmdline = await trio.Path(f"/proc/{process.pid}/cmdline").read_bytes()
            for fx in fakes:
                fx.set_rate(1500)
            with trio.fail_after(30):
                for frames in written:
                    await frames.wait_count(600)
            code = await interrupt(process)  # mid-burst: the generators keep going
        for fx in fakes:
            fx.set_rate(None)
        tokens = [token for fx in fakes for token in fx.tokens.tokens]
    log_text = log_path.read_text()
    assert code == 0, log_text
    engine = open_engine(db_url)
    try:
        entries = [e for page in EventLog(engine).iter_after(0) for e in page]
    finally:
        engine.dispose()
    for fx, frames in zip(fakes, written, strict=True):
        payloads = [e.payload for e in entries if e.source == "ws" and e.account == str(fx.user_id)]
        assert len(payloads) == len(set(payloads)), "a frame was appended twice"
        missing = set(frames) - set(payloads)
        assert not missing, f"account {fx.user_id}: {len(missing)} of {len(set(frames))} written frames not in the log"
    assert "tracking 2 accounts in this process" in log_text
    assert "account=1" in log_text and "account=2" in log_text
    raw = db_path.read_bytes()
    for secret in [*(k for pair in KEYS for k in pair), *tokens]:
        assert secret.encode() not in cmdline
        assert secret not in log_text
        assert secret.encode() not in raw


async def test_a_wrong_secret_leaves_the_other_account_tracked(tmp_path: Path) -> None:
    """Account 2's secret is wrong: the run starts anyway, tracks account 1, and says in one ERROR line (again at the
    stop) that account 2 is not tracked and why; SIGINT: exit 0 with account 1's frames all logged."""
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    log_path = tmp_path / "child.log"
    async with (
        open_fake_exchange(seed=1, markets=MARKETS, user_id=720001, api_key=KEYS[0][0], api_secret=KEYS[0][1]) as one,
        open_fake_exchange(seed=2, markets=MARKETS, user_id=720002, api_key=KEYS[1][0], api_secret=KEYS[1][1]) as two,
    ):
        written = record_written(one)
        config = write_config(tmp_path, (one, two), (KEYS[0][1], "wrongSECRETwrongSECRETwrong"))
        async with tracker_child(["run"], child_env(config, db_url), log_path) as process:
            with trio.fail_after(40):
                await one.wait_subscribed(one.private_channels())
                await one.generate(20)
                await written.wait_count(1)
            code = await interrupt(process)
        assert not two.hub.conns
    log_text = log_path.read_text()
    assert code == 0, log_text
    assert "account 2 of [[accounts]] is not tracked: signature rejected: check its api_secret_file" in log_text, (
        log_text
    )
    assert "the other accounts go on" in log_text
    assert "account 2 of [[accounts]] was not tracked at the stop: signature rejected" in log_text
    engine = open_engine(db_url)
    try:
        payloads = {e.payload for page in EventLog(engine).iter_after(0) for e in page if e.source == "ws"}
    finally:
        engine.dispose()
    assert set(written) <= payloads
    assert "wrongSECRET" not in log_text and KEYS[1][0] not in log_text


async def test_every_account_failing_its_check_ends_the_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    async with (
        open_fake_exchange(seed=1, markets=MARKETS, user_id=720001, api_key=KEYS[0][0], api_secret=KEYS[0][1]) as one,
        open_fake_exchange(seed=2, markets=MARKETS, user_id=720002, api_key=KEYS[1][0], api_secret=KEYS[1][1]) as two,
    ):
        config = write_config(tmp_path, (one, two), ("wrongSECRETwrongSECRETone", "wrongSECRETwrongSECRETtwo"))
        with trio.fail_after(40):
            result = await trio.run_process(
                [sys.executable, "-m", "tracker", "run"],
                env=child_env(config, db_url),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    err = result.stderr.decode()
    assert result.returncode == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tracker: error: account 1 of [[accounts]]: signature rejected"), last
    assert "wrongSECRET" not in err and KEYS[0][0] not in err and KEYS[1][0] not in err


async def test_doctor_checks_every_listed_account(tmp_path: Path) -> None:
    async with (
        open_fake_exchange(seed=7, markets=MARKETS, user_id=720001, api_key=KEYS[0][0], api_secret=KEYS[0][1]) as one,
        open_fake_exchange(seed=8, markets=MARKETS, user_id=720002, api_key=KEYS[1][0], api_secret=KEYS[1][1]) as two,
    ):
        config = write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
        out = tmp_path / "doctor.json"
        command = [sys.executable, "-m", "tracker", "doctor", "--listen", "0.5", "--out", str(out)]
        env = child_env(config, f"sqlite:///{tmp_path / 'unused.db'}")
        with trio.fail_after(60):
            done = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True, check=False)
    stdout = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "== account 1 of [[accounts]]" in stdout and "== account 2 of [[accounts]]" in stdout
    assert stdout.count("verdict: tracker can run on this account") == 2
    reports = json.loads(out.read_text(encoding="utf-8"))
    assert [r["account"] for r in reports] == ["720001", "720002"]
    text = out.read_text(encoding="utf-8")
    assert all(secret not in text and secret not in stdout for pair in KEYS for secret in pair)


async def test_reconcile_goes_through_every_listed_account(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    async with (
        open_fake_exchange(seed=9, markets=MARKETS, user_id=720001, api_key=KEYS[0][0], api_secret=KEYS[0][1]) as one,
        open_fake_exchange(seed=10, markets=MARKETS, user_id=720002, api_key=KEYS[1][0], api_secret=KEYS[1][1]) as two,
    ):
        for fx in (one, two):
            await fx.generate(20)  # nobody subscribed: the exchange's REST answers are all there is
        config = write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
        command = [sys.executable, "-m", "tracker", "reconcile", "--format", "json"]
        with trio.fail_after(60):
            done = await trio.run_process(
                command, env=child_env(config, db_url), capture_stdout=True, capture_stderr=True, check=False
            )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout) == []
    engine = open_engine(db_url)
    try:
        accounts = {e.account for page in EventLog(engine).iter_after(0) for e in page if e.source == "rest"}
    finally:
        engine.dispose()
    assert accounts == {"720001", "720002"}  # each account's facts, backfilled under its own id
