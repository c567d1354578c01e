"""Sub-accounts with their own API keys (the documented way: the endpoints run "on the account ... to which the used
API key is bound", docs/bitstamp.md §5.9) beside the ``X-Auth-Subaccount-Id`` header of the main key.

- config: ``BITSTAMP_SUBACCOUNT_<N>_API_KEY`` with ``_API_SECRET`` or ``_API_SECRET_FILE`` (or ``tracker.toml``'s
  ``[tracker.subaccount_keys.N]``); half a pair, or a key for an untracked sub-account, is a one-line error; masked in
  ``config show``, never in a repr or an error;
- end to end against the fake ignoring the header (``subaccount-header-ignored``): sub-account 1001, walked with its
  own key, has exactly the fake's balances; 1002 (header only) gets the main account's rows, which tracker refuses to
  count again (``subaccount_header_ignored``), as before;
- ``tracker --verbose reconcile`` in a child process: the sub-account's key and secret are in no output and nowhere in
  the SQLite file.

Rules: loopback only, port 0, absolute timeouts, no sleep as synchronisation.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from ledger_truth import balances_in_db, fake_balances
from sqlalchemy import text

from tracker.config import ConfigError, Secret, describe, load_settings
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime.recovery import reconcile_once
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore
from tracker.subaccount_keys import SubaccountKey

pytestmark = pytest.mark.timeout(120)
MARKETS = ("btcusd", "ethusd")
KEY, SECRET = "subKEYfor1001abcdefghijklmnop", "subSECRETfor1001abcdefghijklmn"


# --- config ------------------------------------------------------------------------------------------------------


def test_a_subaccount_key_and_secret_from_the_environment() -> None:
    env = {
        "TRACKER_SUBACCOUNTS": "1001,1002",
        "BITSTAMP_SUBACCOUNT_1001_API_KEY": KEY,
        "BITSTAMP_SUBACCOUNT_1001_API_SECRET": SECRET,
    }
    settings = load_settings(env=env)
    assert settings.subaccount_keys == (SubaccountKey("1001", Secret(KEY), Secret(SECRET)),)
    assert settings.subaccount_key("1001") is not None and settings.subaccount_key("1002") is None
    shown = {name: (value, origin) for name, value, origin in describe(settings)}
    assert shown["BITSTAMP_SUBACCOUNT_1001_API_KEY"] == ("subK…***", "env")
    assert shown["BITSTAMP_SUBACCOUNT_1001_API_SECRET"] == ("***", "env")
    for text_ in (repr(settings), str(settings), repr(settings.subaccount_keys), str(describe(settings))):
        assert KEY not in text_ and SECRET not in text_


def test_a_subaccount_secret_from_a_file_and_from_the_config_file(tmp_path: Path) -> None:
    secret = tmp_path / "sub-secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    secret.chmod(0o600)
    env = {
        "TRACKER_SUBACCOUNTS": "1001",
        "BITSTAMP_SUBACCOUNT_1001_API_KEY": KEY,
        "BITSTAMP_SUBACCOUNT_1001_API_SECRET_FILE": str(secret),
    }
    settings = load_settings(env=env)
    assert settings.subaccount_keys[0].reveal() == (KEY, SECRET)
    assert settings.origins["BITSTAMP_SUBACCOUNT_1001_API_SECRET"] == "file"
    assert settings.sources["BITSTAMP_SUBACCOUNT_1001_API_SECRET"] == str(secret)
    toml = tmp_path / "tracker.toml"
    toml.write_text(
        f'[tracker]\nsubaccounts = [1001]\n[tracker.subaccount_keys.1001]\napi_key = "{KEY}"\n'
        f'api_secret_file = "{secret}"\n',
        encoding="utf-8",
    )
    from_file = load_settings(env={}, config_file=toml)
    assert from_file.subaccount_keys[0].reveal() == (KEY, SECRET)
    assert from_file.origins["BITSTAMP_SUBACCOUNT_1001_API_KEY"] == "file"
    toml.write_text(
        f'[tracker]\nsubaccounts = [1001]\n[tracker.subaccount_keys.1001]\napi_key = "{KEY}"\napi_secret = "x"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="api_secret_file"):
        load_settings(env={}, config_file=toml)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BITSTAMP_SUBACCOUNT_1001_API_KEY": KEY}, "BITSTAMP_SUBACCOUNT_1001_API_KEY is set but its secret is not"),
        (
            {"BITSTAMP_SUBACCOUNT_1001_API_SECRET": SECRET},
            "BITSTAMP_SUBACCOUNT_1001_API_SECRET is set but BITSTAMP_SUBACCOUNT_1001_API_KEY is not",
        ),
        (
            {"BITSTAMP_SUBACCOUNT_1003_API_KEY": KEY, "BITSTAMP_SUBACCOUNT_1003_API_SECRET": SECRET},
            "1003 is not in TRACKER_SUBACCOUNTS",
        ),
        ({"BITSTAMP_SUBACCOUNT_1001_API_KEY": "a b", "BITSTAMP_SUBACCOUNT_1001_API_SECRET": SECRET}, "white space"),
        ({"BITSTAMP_SUBACCOUNT_x_API_KEY": KEY}, "not a sub-account id"),
    ],
)
def test_half_a_pair_is_a_one_line_error_without_the_secret(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(env={"TRACKER_SUBACCOUNTS": "1001", **env})
    shown = str(info.value)
    assert "\n" not in shown and KEY not in shown and SECRET not in shown


# --- end to end --------------------------------------------------------------------------------------------------


def keyed_env(fx: FakeExchange, db_url: str, keyed: str) -> dict[str, str]:
    """The fake's variables with sub-account ``keyed``'s own key only (the other sub-accounts: header)."""
    variables = fx.tracker_variables(subaccount_keys=True)
    own = f"BITSTAMP_SUBACCOUNT_{keyed}_"
    env = {k: v for k, v in variables.items() if not k.startswith("BITSTAMP_SUBACCOUNT_") or k.startswith(own)}
    return env | {"TRACKER_DB_URL": db_url, "TRACKER_MARKETS": ",".join(MARKETS)}


def rows(db_url: str, sql: str) -> list[Any]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


async def test_a_subaccount_with_its_own_key_is_walked_with_it(db_url: str) -> None:
    upgrade(db_url)
    async with open_fake_exchange(seed=21, markets=MARKETS, modes=["subaccount-header-ignored"]) as fx:
        assert "BITSTAMP_SUBACCOUNT_1001_API_KEY" not in fx.tracker_variables()  # only when asked
        settings = load_settings(env=keyed_env(fx, db_url, "1001"))
        assert [k.ident for k in settings.subaccount_keys] == ["1001"]
        await fx.generate(300)
        engine = open_engine(db_url)
        try:
            log = EventLog(engine)
            with trio.fail_after(60):
                await reconcile_once(settings, log, full=True)
                await fx.generate(100)  # a second run continues from 1001's cursor, still with its key
                await reconcile_once(settings, log, full=True)
            ProjectionStore(engine).catch_up(log)
        finally:
            engine.dispose()
        truth = fx.truth()
    mine, theirs = balances_in_db(open_engine(db_url)), fake_balances(truth)
    for tai in ("0", "1001"):
        keys = {c for t, c in (*mine, *theirs) if t == tai}
        assert {c: mine.get((tai, c), Decimal(0)) for c in keys} == {c: theirs.get((tai, c), Decimal(0)) for c in keys}
    assert any(t == "1001" and b != 0 for (t, _), b in theirs.items())  # 1001 did move
    checks = rows(db_url, "SELECT trade_account_id, status FROM v_balance_checks WHERE trade_account_id = '1001'")
    assert checks and {s for _, s in checks} == {"agrees"}
    ignored = rows(db_url, "SELECT trade_account_id FROM v_discrepancies WHERE kind = 'subaccount_header_ignored'")
    assert ignored and {str(t) for (t,) in ignored} == {"1002"}  # 1002 (header only) refused as before; 1001 never


async def test_a_subaccount_secret_is_in_no_output_and_not_in_the_database(tmp_path: Path) -> None:
    db_file = tmp_path / "tracker.db"
    db_url = f"sqlite:///{db_file}"
    upgrade(db_url)
    async with open_fake_exchange(seed=22, markets=MARKETS) as fx:
        await fx.generate(150)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
        env |= keyed_env(fx, db_url, "1001")
        key, secret = fx.subaccount_credentials(1001)
        with trio.fail_after(60):
            result = await trio.run_process(
                [sys.executable, "-m", "tracker", "--verbose", "reconcile"],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    out = result.stdout.decode() + result.stderr.decode()
    # 1: discrepancies left open (the fills of a fake run without websocket ingest), which is what reconcile says
    assert result.returncode in (0, 1) and "reconciled:" in out, out
    assert key not in out and secret not in out
    data = db_file.read_bytes()
    assert key.encode() not in data and secret.encode() not in data
    assert rows(db_url, "SELECT count(*) FROM v_ledger WHERE trade_account_id = '1001'")[0][0] > 0


# --- the fake ----------------------------------------------------------------------------------------------------


async def test_the_fake_answers_a_subaccount_key_for_its_subaccount_whatever_the_header() -> None:
    from tracker.exchange.errors import AuthError
    from tracker.exchange.rest import BitstampClient

    async with open_fake_exchange(seed=23, markets=MARKETS) as fx:
        await fx.generate(200)
        unissued = BitstampClient(fx.api_url, "fakeKEYsub00000000000000000001001", "x" * 30)
        with pytest.raises(AuthError):
            async with unissued:
                await unissued.user_transactions(since_id=0, sort="asc", limit=1000)
        key, secret = fx.subaccount_credentials(1001)
        assert fx.subaccount_credentials("1001") == (key, secret)
        with pytest.raises(ValueError, match="no sub-account 7"):
            fx.subaccount_credentials(7)
        want = sorted(r.id for r in fx.model.state.accounts["1001"].transactions)
        async with BitstampClient(fx.api_url, key, secret) as client:
            for header in (None, "1002", "0"):
                got = await client.user_transactions(trade_account=header, since_id=0, sort="asc", limit=1000)
                assert sorted(int(r["id"]) for r in got) == want
            assert client.signed_ok  # answers signed with the sub-account's secret, and they checked
    variables = fx.tracker_variables(subaccount_keys=True)
    assert variables["BITSTAMP_SUBACCOUNT_1001_API_KEY"] == key and "BITSTAMP_SUBACCOUNT_1002_API_SECRET" in variables


async def test_subaccount_clients_are_opened_for_keyed_subaccounts_only_and_closed() -> None:
    from tracker.exchange.rest import BitstampClient
    from tracker.runtime.recovery import open_subaccount_clients

    env = {
        "TRACKER_SUBACCOUNTS": "1001,1002",
        "BITSTAMP_SUBACCOUNT_1001_API_KEY": KEY,
        "BITSTAMP_SUBACCOUNT_1001_API_SECRET": SECRET,
    }
    made: list[tuple[str, BitstampClient]] = []

    def make(url: str, key: str, secret: str) -> BitstampClient:
        client = BitstampClient(url, key, secret)
        made.append((key, client))
        return client

    async with open_subaccount_clients(load_settings(env=env), make) as clients:
        assert list(clients) == ["1001"] and [k for k, _ in made] == [KEY]
        assert KEY not in repr(clients)
    assert all(client._http.is_closed for _, client in made)


def test_a_keyed_subaccount_walker_sends_no_header_and_shares_nothing_but_the_budget() -> None:
    from tracker.exchange.rest import BitstampClient
    from tracker.runtime.ledger_capture import LedgerCapture
    from tracker.runtime.polite_api import PoliteApi

    main = PoliteApi(BitstampClient("http://127.0.0.1:1/api/v2/", "k", "s"))
    own = PoliteApi(BitstampClient("http://127.0.0.1:1/api/v2/", KEY, SECRET), main.limiter)
    capture = LedgerCapture(
        main,
        None,  # type: ignore[arg-type]  # no walk runs here
        account="1",
        trade_accounts=("1001", "1002"),
        own_apis={"1001": own},
    )
    walkers = capture.walkers
    assert walkers["1001"].api is own and walkers["1001"].header_account is None
    assert walkers["1002"].api is main and walkers["1002"].header_account == "1002"
    assert walkers["0"].api is main and walkers["0"].header_account is None
    assert own.limiter is main.limiter
