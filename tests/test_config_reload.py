"""What a config reload does (``tracker/runtime/config_reload.py``), without sockets or a database.

- ``diff_accounts``: accounts known by their key; unchanged (moved or not), changed (any setting, the secret file's
  content, sub-account keys), added, removed; what only a restart can change refuses the whole reload, named, never
  its value; a file without ``[[accounts]]`` too. The summary line.
- the same through ``load_accounts`` from files on disk, as ``tracker run`` reads them again.
- ``Reloads``: requests coalesced; ``watch_hangups``: SIGHUP a request, ignored (one line) while stopping, a warning
  when there is nothing to reload.
- ``same_accounts``: two keys of one Bitstamp account named by their places in the file.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from tracker.config import Secret, Settings, load_accounts
from tracker.runtime.config_reload import AccountsDiff, Reloads, RestartNeeded, diff_accounts, watch_hangups
from tracker.runtime.preflight import same_accounts
from tracker.subaccount_keys import SubaccountKey

pytestmark = pytest.mark.timeout(30)


def _account(key: str, secret: str = "s", **changes: object) -> Settings:
    settings = Settings(db_url="sqlite:///t.db", api_key=Secret(key), api_secret=Secret(secret), accounts_in_file=2)
    return replace(settings, **changes)  # type: ignore[arg-type]


def test_accounts_are_known_by_their_key() -> None:
    old = [_account("ka"), _account("kb"), _account("kc")]
    new = [_account("kc"), _account("kb", markets=("btcusd",)), _account("kd")]
    diff = diff_accounts(old, new)
    assert diff == AccountsDiff(unchanged=((3, 1),), changed=((2, 2),), added=(3,), removed=(1,))
    assert diff.stopping == (1, 2) and diff.starting == (2, 3)
    assert diff.summary() == (
        "config reloaded: account 3 added, account 2 restarted (its settings changed), 1 removed (was account 1),"
        " 1 unchanged (account 3 is now account 1)"
    )
    assert diff_accounts(old, old).summary() == "config reloaded: 3 unchanged"


@pytest.mark.parametrize(
    "change",
    [
        {"api_secret": Secret("rotated")},  # the secret file's content
        {"markets": ("btcusd", "ethusd")},
        {"subaccounts": ("1234",)},
        {"subaccount_keys": (SubaccountKey("1234", Secret("sub"), Secret("subsecret")),)},
        {"api_url": "http://127.0.0.1:1/api/v2/"},
        {"ws_url": "ws://127.0.0.1:2"},
        {"reconcile_interval_s": 60.0},
        {"ledger_interval_s": 1.0},
        {"insecure": True},
    ],
)
def test_any_setting_of_an_account_restarts_it(change: dict[str, object]) -> None:
    old = [_account("ka"), _account("kb")]
    new = [_account("ka"), _account("kb", **change)]
    assert diff_accounts(old, new) == AccountsDiff(unchanged=((1, 1),), changed=((2, 2),))


def test_where_a_setting_came_from_is_no_change() -> None:
    old = [_account("ka", sources={"api_secret": "/run/secrets/a"}, origins={"api_secret": "file"})]
    new = [
        _account("ka", sources={"api_secret": "/run/secrets/a2"}, origins={"api_secret": "file"}, accounts_in_file=3)
    ]
    assert diff_accounts(old, new) == AccountsDiff(unchanged=((1, 1),))


def test_what_the_process_set_up_once_refuses_the_reload() -> None:
    old = [_account("ka"), _account("kb")]
    url = "postgresql+psycopg://tracker:hunter2@db/tracker"
    file = {"origins": {"db_url": "file", "metrics_port": "file"}, "sources": {"db_url": "/etc/tracker.toml"}}
    moved = [_account("ka", db_url=url, **file), _account("kb", db_url=url, **file)]
    with pytest.raises(RestartNeeded) as refused:
        diff_accounts(old, moved)
    assert str(refused.value) == (
        "/etc/tracker.toml: db_url changed, and is a setting the process set up once at its start: restart tracker"
        " to change it"
    )
    assert "hunter2" not in str(refused.value)
    both = [_account("ka", db_url=url, metrics_port=9100), _account("kc", db_url=url, metrics_port=9100)]
    with pytest.raises(RestartNeeded, match=r"^TRACKER_DB_URL and TRACKER_METRICS_PORT changed, and are settings"):
        diff_accounts(old, both)
    graced = [_account("ka", stop_grace_s=2.0), _account("kb", stop_grace_s=2.0)]
    with pytest.raises(RestartNeeded, match=r"^TRACKER_STOP_GRACE changed, and is a setting the process set up once"):
        diff_accounts(old, graced)  # run_accounts' stop grace is the process's (app.py)
    with pytest.raises(RestartNeeded, match=r"no longer lists \[\[accounts\]\].*restart tracker to change it"):
        diff_accounts(old, [_account("ka", accounts_in_file=0)])


def _write(tmp_path: Path, tables: list[tuple[str, str]], top: str = "") -> Path:
    lines = [top]
    for key, secret in tables:
        secret_file = tmp_path / f"secret-{key}"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        lines += ["[[accounts]]", f'api_key = "{key}"', f'api_secret_file = "{secret_file}"', ""]
    config = tmp_path / "tracker.toml"
    config.write_text("\n".join(lines))
    return config


def test_the_file_read_again_as_at_the_start(tmp_path: Path) -> None:
    env = {"TRACKER_CONFIG": str(tmp_path / "tracker.toml"), "TRACKER_MARKETS": "btcusd"}
    _write(tmp_path, [("keyone", "secretone"), ("keytwo", "secrettwo")], top='db_url = "sqlite:///a.db"')
    start = load_accounts(env=env)
    assert len(start) == 2
    # One account only, its secret rotated in its file: it is restarted (the secret is never in the line).
    _write(tmp_path, [("keyone", "secretone"), ("keytwo", "rotatedsecret")], top='db_url = "sqlite:///a.db"')
    diff = diff_accounts(start, load_accounts(env=env))
    assert diff == AccountsDiff(unchanged=((1, 1),), changed=((2, 2),))
    assert "secret" not in diff.summary() and "key" not in diff.summary()
    # One table left: a reload like any other.
    _write(tmp_path, [("keytwo", "secrettwo")], top='db_url = "sqlite:///a.db"')
    assert diff_accounts(start, load_accounts(env=env)) == AccountsDiff(unchanged=((2, 1),), removed=(1,))
    _write(tmp_path, [("keyone", "secretone")], top='db_url = "sqlite:///b.db"')
    with pytest.raises(RestartNeeded, match=rf"^{tmp_path / 'tracker.toml'}: db_url changed"):
        diff_accounts(start, load_accounts(env=env))
    # A flag or variable over the file: the file's change makes none.
    with_flag = load_accounts(flags={"db_url": "sqlite:///a.db"}, env=env)
    assert diff_accounts(start, with_flag) == AccountsDiff(unchanged=((1, 1),), removed=(2,))


async def test_requests_are_coalesced() -> None:
    reloads = Reloads()
    for _ in range(3):
        reloads.request()
    with trio.fail_after(1):
        await reloads.next()  # the three: one reload
    assert not reloads.wanted
    taken: list[int] = []

    async def reloader() -> None:
        while True:
            await reloads.next()
            taken.append(len(reloads.outcomes))
            await trio.testing.wait_all_tasks_blocked()  # a reload under way: requests meanwhile
            reloads.finished(f"reload {len(taken)}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reloader)
        reloads.request()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(1):
            await reloads.wait_finished(1)
        assert taken == [0]
        reloads.request()
        reloads.request()
        with trio.fail_after(1):
            await reloads.wait_finished(2)
        await trio.testing.wait_all_tasks_blocked()
        assert taken == [0, 1] and reloads.outcomes == ["reload 1", "reload 2"]  # two requests, one more reload
        nursery.cancel_scope.cancel()


async def test_sighup_is_a_request_or_a_line_saying_why_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracker.service")
    send, receive = trio.open_memory_channel[int](4)
    stop, reloads = trio.Event(), Reloads()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        await nursery.start(watch_hangups, receive, stop, reloads, scope)
        await send.send(signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        assert reloads.wanted
        reloads.wanted = False
        stop.set()
        await send.send(signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        assert not reloads.wanted
        scope.cancel()
    assert [r.getMessage() for r in caplog.records] == [
        "received SIGHUP: reloading the config file",
        "received SIGHUP while stopping: not reloading",
    ]
    caplog.clear()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        await nursery.start(watch_hangups, receive, trio.Event(), None, scope)
        await send.send(signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith("received SIGHUP: nothing to reload: this tracker run tracks the account of")


def test_more_accounts_than_the_pool_was_sized_for_need_a_restart() -> None:
    old = [_account("ka")]
    new = [_account("ka"), _account("kb"), _account("kc")]
    assert diff_accounts(old, new, max_accounts=3) == AccountsDiff(unchanged=((1, 1),), added=(2, 3))
    with pytest.raises(RestartNeeded, match=r"^the config file lists 3 accounts, more than the 2 .*restart tracker"):
        diff_accounts(old, new, max_accounts=2)


def test_two_keys_of_one_account_are_named_by_their_places_in_the_file() -> None:
    """During a reload the accounts running are not every place of the file (a removed one has gone, the added ones
    are not there yet): the error names each key's own place, not its position among them."""
    assert same_accounts([(1, "u1"), (2, "u2"), (3, None)]) is None
    assert same_accounts([(2, "u7"), (4, "u9"), (5, "u7")]) == (
        "accounts 2 and 5 of [[accounts]] have keys of one Bitstamp account (user u7): list each account once"
    )
    # in whatever order the running accounts are listed, the earlier place comes first
    assert same_accounts([(5, "u7"), (3, "u8"), (2, "u7")]) == (
        "accounts 2 and 5 of [[accounts]] have keys of one Bitstamp account (user u7): list each account once"
    )
