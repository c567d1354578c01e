"""``tracker run`` reloads its config file (``run_accounts``' reload, ``config_reload.py``), end to end over real
sockets against fake exchanges, on both backends:

- two accounts; the file edited to remove the first, keep the second, add a third: the kept account's connections
  were never closed (the fake's and the log's view), it takes place 1; the removed one's frames up to the reload
  are committed and it has no connection left; the added one's frames are committed; metrics per place;
- a key rotation of a one-account file (a new key of the same Bitstamp account, the old one revoked): its trades
  are in the log exactly once, its frames before and after all there;
- a file that fails to load, a restart-only setting changed, two keys of one account: one ERROR line or the new
  account down, everything else running on;
- ``tracker run`` as a child process, started from a one-table file, given a real SIGHUP.

Reloads are triggered by ``Reloads.request()`` in process (the SIGHUP watcher's hook) and waited for with
``wait_finished``; loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation.
"""

from __future__ import annotations

import json
import logging
import signal
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import pytest
import trio
from store_helpers import walk
from test_accounts_cli import KEYS, MARKETS, child_env, interrupt, tracker_child, write_config
from test_accounts_process import _by_account, _payloads, _up, start_accounts
from test_ingest_e2e import record_deliveries
from test_ingest_process import record_written

from tracker.config import load_accounts
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.metrics import Metrics
from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.config_reload import Reloads
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(90)

THIRD = ("cliKEYthree234567890abcdefghij", "cliSECRETthree87654321zyxwvu")
ROTATED = ("cliKEYrotated4567890abcdefghij", "cliSECRETrotated654321zyxwvu")


def _fake(seed: int, user_id: int, key: tuple[str, str]) -> AbstractAsyncContextManager[FakeExchange]:
    return open_fake_exchange(seed=seed, markets=MARKETS, user_id=user_id, api_key=key[0], api_secret=key[1])


def _tracker_entries(log: EventLog, fx: FakeExchange, event: str) -> list[str | None]:
    """The connection ids of account ``fx``'s tracker-made ``event`` entries."""
    return [
        e.connection_id
        for page in log.iter_after(0)
        for e in page
        if e.source == "tracker" and e.event == event and e.account == str(fx.user_id)
    ]


async def _committed(log: EventLog, fx: FakeExchange, sent: list[str], state: AccountState) -> None:
    """Until every frame in ``sent`` is in the log (account ``fx``'s)."""
    assert state.services is not None, state.down
    with trio.fail_after(30):
        while not set(sent) <= set(_payloads(log, fx.user_id)):
            await state.services.writer_stats.committed.wait()


async def test_a_reload_touches_only_what_changed(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    engine = open_engine(db_url)
    log = EventLog(engine)
    try:
        async with (
            _fake(11, 730001, KEYS[0]) as one,
            _fake(12, 730002, KEYS[1]) as two,
            _fake(13, 730003, THIRD) as three,
        ):
            fakes: tuple[FakeExchange, FakeExchange, FakeExchange] = (one, two, three)
            delivered = [record_deliveries(fx) for fx in fakes]
            config = write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
            env = child_env(config, db_url)
            reloads, stop, metrics = Reloads(), trio.Event(), Metrics()
            async with trio.open_nursery() as nursery:
                states = await start_accounts(
                    nursery,
                    load_accounts(env=env),
                    engine,
                    stop,
                    metrics=metrics,
                    reload_from=partial(load_accounts, env=env),
                    reloads=reloads,
                )
                first, second = states
                for fx in (one, two):
                    await fx.wait_subscribed(fx.private_channels())
                    await fx.generate(10)
                await _committed(log, two, delivered[1], second)
                kept_conns, kept_total = set(two.hub.conns), two.hub.connections_total
                kept_service = second.services
                connected = _tracker_entries(log, two, "connected")
                assert connected and not _tracker_entries(log, two, "closed")
                await one.generate(10)  # not waited for: the reload's stop of account 1 commits them

                write_config(tmp_path, (two, three), (KEYS[1][1], THIRD[1]))  # account 1 removed, a third added
                reloads.request()
                with trio.fail_after(40):
                    await reloads.wait_finished(1)
                assert reloads.outcomes == [
                    "config reloaded: account 2 added, 1 removed (was account 1), 1 unchanged (account 2 is now"
                    " account 1)"
                ]
                # Account 1's service ended, its writer drained: everything delivered to it is committed.
                assert first.ended.is_set() and first.stop.is_set()
                with trio.fail_after(30):  # a bound for a failure only (a loaded machine's close handshake)
                    await one.wait_connections(0)  # its close handshake done, on the fake's side too
                assert delivered[0] and set(delivered[0]) <= set(_payloads(log, one.user_id))
                # The kept account was not touched: same connections, same service, no close in the log.
                assert states[0] is second and second.index == 1 and second.services is kept_service
                assert set(two.hub.conns) == kept_conns and two.hub.connections_total == kept_total
                assert _tracker_entries(log, two, "connected") == connected
                assert not _tracker_entries(log, two, "closed")
                added = states[1]
                assert (added.index, added.down) == (2, None) and added.services is not None
                await three.wait_subscribed(three.private_channels())
                for fx in (two, three):
                    await fx.generate(10)
                await _committed(log, three, delivered[2], added)
                await _committed(log, two, delivered[1], second)
                # Metrics by place: the removed account's series are gone, place 1 is the kept account's.
                assert _up(metrics) == {"1": 1.0, "2": 1.0}
                assert set(_by_account(metrics, "tracker_account_failures_total")) <= {"1", "2"}
                assert kept_service is not None and kept_service.config_index == 1
                stop.set()
        for fx, sent in zip(fakes, delivered, strict=True):
            stored = _payloads(log, fx.user_id)
            assert sent and len(stored) == len(set(stored)) and set(sent) <= set(stored)
        assert walk(log).head == log.head()
    finally:
        engine.dispose()


def _trade_ids(payloads: list[str]) -> list[str]:
    return [
        str(json.loads(text)["data"]["id"])
        for text in payloads
        if json.loads(text).get("channel", "").startswith("private-my_trades")
    ]


async def test_a_rotated_key_keeps_every_trade_once(db_url: str, tmp_path: Path) -> None:
    """A file of one account; its key rotated (the new key of the same Bitstamp account in the file, the old one
    revoked after the reload): every trade is in the log once per source, the frames of both keys' runs all
    there."""
    upgrade(db_url)
    engine = open_engine(db_url)
    log = EventLog(engine)
    try:
        async with _fake(21, 730011, KEYS[0]) as one:
            delivered = record_deliveries(one)
            config = write_config(tmp_path, (one,), (KEYS[0][1],))
            env = child_env(config, db_url)
            reloads, stop = Reloads(), trio.Event()
            async with trio.open_nursery() as nursery:
                states = await start_accounts(
                    nursery, load_accounts(env=env), engine, stop, reload_from=partial(load_accounts, env=env),
                    reloads=reloads,
                )  # fmt: skip
                [old] = states
                await one.wait_subscribed(one.private_channels())
                await one.generate(20)
                one.add_key(*ROTATED)
                write_config(tmp_path, (one,), (ROTATED[1],), keys=(ROTATED[0],))
                reloads.request()
                with trio.fail_after(40):
                    await reloads.wait_finished(1)
                assert reloads.outcomes == ["config reloaded: account 1 added, 1 removed (was account 1), 0 unchanged"]
                one.revoke_key()  # the old key is deleted once the new one runs
                [new] = states
                assert new is not old and new.down is None and old.ended.is_set()
                await one.wait_subscribed(one.private_channels())
                await one.generate(20)
                await _committed(log, one, delivered, new)
                assert new.services is not None and new.services.backfiller is not None
                await new.services.backfiller.wait_runs(1)  # the new run's start-up backfill, over the same trades
                stop.set()
        entries = [e for page in log.iter_after(0) for e in page if e.account == str(one.user_id)]
        ws = [e.payload for e in entries if e.source == "ws"]
        assert len(ws) == len(set(ws)) and set(delivered) <= set(ws)
        trades = _trade_ids(delivered)
        assert trades and len(trades) == len(set(trades))
        # Each trade once per kind of fact (a REST user transaction and its ledger row are two facts of one trade).
        facts = [(e.source, e.event, e.trade_id) for e in entries if e.trade_id is not None]
        assert len(facts) == len(set(facts)), "a trade twice"
        assert set(trades) <= {e.trade_id for e in entries if e.source == "ws"}
        assert walk(log).head == log.head()
    finally:
        engine.dispose()


async def test_a_bad_reload_changes_nothing(sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file that fails to load, a restart-only setting changed: one ERROR line each, the accounts run on. A new
    account whose key is another key of an account already tracked: that one is down, the others run on."""
    caplog.set_level(logging.INFO)
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    log = EventLog(engine)
    try:
        async with _fake(31, 730021, KEYS[0]) as one, _fake(32, 730022, KEYS[1]) as two:
            delivered = record_deliveries(one)
            config = write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
            good = config.read_text()
            env = child_env(config, sqlite_url)
            reloads, stop, metrics = Reloads(), trio.Event(), Metrics()
            async with trio.open_nursery() as nursery:
                states = await start_accounts(
                    nursery, load_accounts(env=env), engine, stop, metrics=metrics,
                    reload_from=partial(load_accounts, env=env), reloads=reloads, retry_base_s=30.0,
                )  # fmt: skip
                for fx in (one, two):
                    await fx.wait_subscribed(fx.private_channels())
                totals = [fx.hub.connections_total for fx in (one, two)]
                services = [state.services for state in states]

                config.write_text(good + "\n[[accounts]\n")  # not TOML
                reloads.request()
                with trio.fail_after(20):
                    await reloads.wait_finished(1)
                config.write_text(good)
                (tmp_path / "secret2").unlink()  # a secret file gone
                reloads.request()
                with trio.fail_after(20):
                    await reloads.wait_finished(2)
                write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
                config.write_text(good.replace("[[accounts]]", "metrics_port = 9\n[[accounts]]", 1))
                reloads.request()
                with trio.fail_after(20):
                    await reloads.wait_finished(3)
                config.write_text("insecure = false\n")  # no [[accounts]] left: the environment's one account?
                reloads.request()
                with trio.fail_after(20):
                    await reloads.wait_finished(4)
                config.write_text(good)
                not_toml, no_secret, restart, no_accounts = reloads.outcomes
                assert no_accounts == (
                    "config not reloaded: the config file no longer lists [[accounts]] (tracker run would track the"
                    " environment's one account): restart tracker to change it; kept the running config"
                )
                assert not_toml.startswith(f"config not reloaded: config file {config} is not valid TOML: ")
                assert no_secret.startswith(
                    f"config not reloaded: {config} [[accounts]] #2: cannot read the API secret"
                )
                assert restart == (
                    f"config not reloaded: {config}: metrics_port changed, and is a setting the process set up once"
                    " at its start: restart tracker to change it; kept the running config"
                )
                assert all(line.endswith("; kept the running config") for line in reloads.outcomes)
                errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
                assert errors == reloads.outcomes
                assert [fx.hub.connections_total for fx in (one, two)] == totals
                assert [state.services for state in states] == services

                # Another key of account 1's Bitstamp account, as a third account: refused as at the start (down).
                one.add_key(*ROTATED)
                config = write_config(tmp_path, (one, two, one), (KEYS[0][1], KEYS[1][1], ROTATED[1]),
                                      keys=(KEYS[0][0], KEYS[1][0], ROTATED[0]))  # fmt: skip
                reloads.request()
                with trio.fail_after(20):
                    await reloads.wait_finished(5)
                assert reloads.outcomes[4] == "config reloaded: account 3 added, 2 unchanged"
                third = states[2]
                assert third.down == (
                    "accounts 1 and 3 of [[accounts]] have keys of one Bitstamp account (user 730021): list each"
                    " account once"
                )
                assert _up(metrics) == {"1": 1.0, "2": 1.0, "3": 0.0}
                assert [fx.hub.connections_total for fx in (one, two)] == totals
                await one.generate(10)
                await _committed(log, one, delivered, states[0])
                stop.set()
        assert len(one.hub.conns) == 0 and delivered
        text = caplog.text
        assert all(secret not in text for pair in (*KEYS, ROTATED) for secret in pair)
    finally:
        engine.dispose()


async def test_sighup_reloads_a_tracker_run(tmp_path: Path) -> None:
    """``tracker run`` from a file of one account; the file given a second account, then SIGHUP: the second is
    tracked, the first's connection never closed; SIGINT: exit 0, both accounts' frames in the log."""
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    log_path = tmp_path / "child.log"
    async with _fake(41, 730031, KEYS[0]) as one, _fake(42, 730032, KEYS[1]) as two:
        written = [record_written(fx) for fx in (one, two)]
        config = write_config(tmp_path, (one,), (KEYS[0][1],))
        async with tracker_child(["--verbose", "run"], child_env(config, db_url), log_path) as process:
            with trio.fail_after(40):
                await one.wait_subscribed(one.private_channels())
                await one.generate(10)
                await written[0].wait_count(1)
            total = one.hub.connections_total
            write_config(tmp_path, (one, two), (KEYS[0][1], KEYS[1][1]))
            process.send_signal(signal.SIGHUP)
            with trio.fail_after(40):
                await two.wait_subscribed(two.private_channels())
                for fx, frames in zip((one, two), written, strict=True):
                    await fx.generate(10)
                    await frames.wait_count(len(frames) + 1)
            assert one.hub.connections_total == total
            code = await interrupt(process)
    log_text = log_path.read_text()
    assert code == 0, log_text
    assert "tracking 1 account in this process" in log_text
    assert "received SIGHUP: reloading the config file" in log_text
    assert "config reloaded: account 2 added, 1 unchanged" in log_text
    assert "account=2" in log_text
    assert "not committed" not in log_text  # no writer was cancelled (a reload's start is not the stop's to cancel)
    engine = open_engine(db_url)
    try:
        entries = [e for page in EventLog(engine).iter_after(0) for e in page if e.source == "ws"]
    finally:
        engine.dispose()
    for fx, frames in zip((one, two), written, strict=True):
        payloads = [e.payload for e in entries if e.account == str(fx.user_id)]
        assert len(payloads) == len(set(payloads)) and set(frames) <= set(payloads)
    assert all(secret not in log_text for pair in KEYS for secret in pair)
