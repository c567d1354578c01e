"""Several Bitstamp accounts in one config file (``[[accounts]]``): ``load_accounts`` gives one Settings each, in file
order, the shared settings with the account's own; ``load_settings`` picks none of them. Tmp files only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.config import ConfigError, Secret, describe, load_accounts, load_settings

KEYS = ("keyAAAA1111aaaa", "keyBBBB2222bbbb", "keyCCCC3333cccc")
SECRETS = ("secretAAAA-0001-xyz", "secretBBBB-0002-xyz", "secretCCCC-0003-xyz")
SUB_KEY, SUB_SECRET = "subkeyDDDD4444dddd", "subsecretDDDD-0004-xyz"


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./tracker.toml from the developer's checkout


def _secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def _account(tmp_path: Path, n: int, extra: str = "", *, header: str = "[[accounts]]") -> str:
    secret = _secret(tmp_path, f"secret{n}", SECRETS[n])
    return f'{header}\napi_key = "{KEYS[n]}"\napi_secret_file = "{secret}"\n{extra}'


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracker.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _three(tmp_path: Path, top: str = "") -> Path:
    return _toml(tmp_path, top + "".join(_account(tmp_path, n) for n in range(3)))


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_accounts(env=env or {}, config_file=_toml(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    for secret in (*KEYS, *SECRETS, SUB_KEY, SUB_SECRET):
        assert secret not in message
    return message


# --- one Settings per account, in file order, the shared settings inherited ----------------------------------------


def test_one_settings_per_account_in_file_order(tmp_path: Path) -> None:
    path = _three(tmp_path)
    accounts = load_accounts(env={}, config_file=path)
    assert [s.require_credentials() for s in accounts] == list(zip(KEYS, SECRETS, strict=True))
    assert [s.sources["api_key"] for s in accounts] == [f"{path} [[accounts]] #{n}" for n in (1, 2, 3)]
    assert [s.sources["api_secret"] for s in accounts] == [str(tmp_path / f"secret{n}") for n in range(3)]
    assert all(s.origins["api_key"] == s.origins["api_secret"] == "file" for s in accounts)
    assert all(s.subaccounts == () and s.subaccount_keys == () for s in accounts)


def test_shared_settings_are_inherited_with_their_precedence(tmp_path: Path) -> None:
    top = (
        'db_url = "sqlite:///file.db"\napi_url = "https://api.example.com/v2/"\nmetrics_port = 9000\n'
        'markets = ["ethusd"]\nreconcile_interval_s = 60\n'
    )
    path = _three(tmp_path, top)
    env = {"TRACKER_DB_URL": "sqlite:///env.db"}
    accounts = load_accounts({"metrics_port": 9100, "markets": None}, env=env, config_file=path)
    assert len(accounts) == 3
    for settings in accounts:
        assert (settings.db_url, settings.origins["db_url"]) == ("sqlite:///env.db", "env")
        assert (settings.metrics_port, settings.origins["metrics_port"]) == (9100, "flag")
        assert (settings.api_url, settings.sources["api_url"]) == ("https://api.example.com/v2/", str(path))
        assert settings.markets == ("ethusd",)
        assert settings.reconcile_interval_s == 60.0
        assert settings.ws_url == "wss://ws.bitstamp.net"


def test_settings_under_tracker_use_tracker_accounts(tmp_path: Path) -> None:
    header = "[[tracker.accounts]]"
    text = '[tracker]\ndb_url = "sqlite:///t.db"\n' + "".join(_account(tmp_path, n, header=header) for n in (0, 1))
    accounts = load_accounts(env={}, config_file=_toml(tmp_path, text))
    assert [(s.db_url, s.require_credentials()[0]) for s in accounts] == [("sqlite:///t.db", k) for k in KEYS[:2]]
    assert accounts[1].sources["api_key"].endswith("[[tracker.accounts]] #2")


def test_an_accounts_own_markets_win_and_its_subaccounts_and_keys_are_its_own(tmp_path: Path) -> None:
    sub_secret = _secret(tmp_path, "sub-secret", SUB_SECRET)
    own = (
        'markets = ["BTCUSD", "btcusd-perp"]\nsubaccounts = [1234]\n[accounts.subaccount_keys.1234]\n'
        f'api_key = "{SUB_KEY}"\napi_secret_file = "{sub_secret}"\n'
    )
    path = _toml(tmp_path, 'markets = ["ethusd"]\n' + _account(tmp_path, 0) + _account(tmp_path, 1, own))
    first, second = load_accounts({"markets": "xrpusd"}, env={}, config_file=path)
    assert (first.markets, first.origins["markets"]) == (("xrpusd",), "flag")
    assert (second.markets, second.origins["markets"]) == (("btcusd", "btcusd-perp"), "file")
    assert second.sources["markets"] == f"{path} [[accounts]] #2"
    assert (first.subaccounts, second.subaccounts) == ((), ("1234",))
    assert first.subaccount_keys == ()
    assert second.subaccount_key("1234") is not None
    assert second.subaccount_keys[0].reveal() == (SUB_KEY, SUB_SECRET)
    assert second.sources["BITSTAMP_SUBACCOUNT_1234_API_KEY"] == f"{path} [[accounts]] #2"
    assert second.sources["BITSTAMP_SUBACCOUNT_1234_API_SECRET"] == str(sub_secret)


def test_without_accounts_it_is_load_settings(tmp_path: Path) -> None:
    secret = _secret(tmp_path, "secret", SECRETS[0])
    env = {"BITSTAMP_API_KEY": KEYS[0], "BITSTAMP_API_SECRET_FILE": str(secret), "TRACKER_SUBACCOUNTS": "7"}
    assert load_accounts(env=env) == (load_settings(env=env),)  # no config file at all
    path = _toml(tmp_path, 'db_url = "sqlite:///one.db"\nmarkets = ["btcusd"]\n')
    flags = {"metrics_port": 9100}
    (only,) = load_accounts(flags, env=env, config_file=path)
    single = load_settings(flags, env=env, config_file=path)
    assert only == single
    assert (only.origins, only.sources) == (single.origins, single.sources)
    assert only.accounts_in_file == 0


def test_a_loose_secret_file_warns_naming_that_file(tmp_path: Path) -> None:
    loose = _secret(tmp_path, "loose", SECRETS[1], mode=0o640)
    text = _account(tmp_path, 0) + f'[[accounts]]\napi_key = "{KEYS[1]}"\napi_secret_file = "{loose}"\n'
    warnings: list[str] = []
    accounts = load_accounts(env={}, config_file=_toml(tmp_path, text), warnings=warnings)
    assert accounts[1].api_secret == Secret(SECRETS[1])
    assert warnings == [f"the API secret file {loose} is readable by group or others: chmod 600 {loose}"]


# --- errors: one line, what is wrong, where, and what to do -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('accounts = "x"\n', "accounts must be an array of tables: one [[accounts]] (double brackets)"),
        ('[accounts]\napi_key = "k"\n', "accounts must be an array of tables"),
        ("accounts = [1, 2]\n", "accounts must be an array of tables"),
        ("accounts = []\n", "accounts is empty: add one [[accounts]] table per Bitstamp account"),
        ("[tracker]\naccounts = []\n", "accounts is empty: add one [[tracker.accounts]] table"),
    ],
)
def test_accounts_must_be_a_non_empty_array_of_tables(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(tmp_path, text).startswith(f"{tmp_path / 'tracker.toml'}: {expected}")
    with pytest.raises(ConfigError, match="accounts"):
        load_settings(env={}, config_file=tmp_path / "tracker.toml")  # every command: the file is wrong


def test_required_keys_name_the_account(tmp_path: Path) -> None:
    path = tmp_path / "tracker.toml"
    no_key = _account(tmp_path, 0) + '[[accounts]]\napi_secret_file = "/nowhere"\n'
    assert _error(tmp_path, no_key).startswith(f"{path} [[accounts]] #2 has no api_key: give each account its")
    no_file = _account(tmp_path, 0) + _account(tmp_path, 1) + f'[[accounts]]\napi_key = "{KEYS[2]}"\n'
    assert _error(tmp_path, no_file).startswith(f"{path} [[accounts]] #3 has no api_secret_file")
    empty = f'[[accounts]]\napi_key = " "\napi_secret_file = "{tmp_path / "secret0"}"\n'
    assert "#1 has no api_key" in _error(tmp_path, empty)
    number = '[[accounts]]\napi_key = 12345678\napi_secret_file = "/x"\n'
    assert _error(tmp_path, number) == f"{path} [[accounts]] #1: api_key must be a string (in quotes)"
    spaced = f'[[accounts]]\napi_key = "{KEYS[0][:6]} {KEYS[0][6:]}"\napi_secret_file = "/x"\n'
    assert _error(tmp_path, spaced).startswith(f"{path} [[accounts]] #1: api_key contains white space")


def test_a_secret_is_never_inline_in_an_account(tmp_path: Path) -> None:
    text = _account(tmp_path, 0, f'api_secret = "{SECRETS[0]}"\n')
    assert _error(tmp_path, text) == (
        f"{tmp_path / 'tracker.toml'} [[accounts]] #1: do not put api_secret in the config file; use api_secret_file"
        " instead"
    )


def test_an_unknown_key_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, _account(tmp_path, 0) + _account(tmp_path, 1, 'db_url = "sqlite:///b.db"\n'))
    assert message == (
        f"{tmp_path / 'tracker.toml'} [[accounts]] #2: unknown setting 'db_url' (an account takes: api_key,"
        " api_secret_file, api_url, markets, subaccount_keys, subaccounts, ws_url)"
    )


def test_the_same_key_twice_is_refused_masked(tmp_path: Path) -> None:
    text = _account(tmp_path, 0) + _account(tmp_path, 1) + _account(tmp_path, 0)
    assert _error(tmp_path, text) == (
        f"{tmp_path / 'tracker.toml'}: [[accounts]] #1 and #3 have the same api_key keyA…***: list each Bitstamp"
        " account once"
    )


def test_a_secret_file_error_names_the_account_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tracker.toml"
    missing = tmp_path / "missing-secret"
    text = _account(tmp_path, 0) + _account(tmp_path, 1)
    text += f'[[accounts]]\napi_key = "{KEYS[2]}"\napi_secret_file = "{missing}"\n'
    assert _error(tmp_path, text) == (
        f"{path} [[accounts]] #3: cannot read the API secret file {missing}: No such file or directory"
    )
    empty = _secret(tmp_path, "empty", "")
    text = f'[[accounts]]\napi_key = "{KEYS[0]}"\napi_secret_file = "{empty}"\n'
    assert _error(tmp_path, text) == (
        f"{path} [[accounts]] #1: the API secret file {empty} is empty: write the API secret into it (or fix"
        " api_secret_file)"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"BITSTAMP_API_KEY": KEYS[2]},
        {"BITSTAMP_API_SECRET": SECRETS[2]},
        {"BITSTAMP_API_SECRET_FILE": "/run/secrets/x"},
        {"BITSTAMP_SUBACCOUNT_9_API_KEY": SUB_KEY},
        {"TRACKER_SUBACCOUNTS": "9"},
    ],
)
def test_one_accounts_variables_beside_accounts_are_ambiguous(tmp_path: Path, env: dict[str, str]) -> None:
    (name,) = env
    assert _error(tmp_path, _account(tmp_path, 0), env) == (
        f"{tmp_path / 'tracker.toml'} lists [[accounts]] but {name} is also set: use one or the other (unset it to"
        " track the listed accounts, or remove [[accounts]] to track one account)"
    )


def test_several_variables_are_named_together(tmp_path: Path) -> None:
    env = {"BITSTAMP_API_KEY": KEYS[2], "BITSTAMP_API_SECRET": SECRETS[2], "BITSTAMP_SUBACCOUNT_9_API_SECRET": "x"}
    message = _error(tmp_path, _account(tmp_path, 0), env)
    assert "but BITSTAMP_API_KEY, BITSTAMP_API_SECRET, BITSTAMP_SUBACCOUNT_9_API_SECRET are also set" in message
    assert "(unset them to track the listed accounts" in message


@pytest.mark.parametrize(
    ("top", "named"),
    [
        (f'api_key = "{KEYS[2]}"\n', "api_key"),
        ('api_secret_file = "/run/secrets/x"\n', "api_secret_file"),
        ("subaccounts = [9]\n", "subaccounts"),
        (f'api_key = "{KEYS[2]}"\nsubaccounts = [9]\n', "api_key, subaccounts"),
    ],
)
def test_one_accounts_keys_at_the_top_level_are_ambiguous(tmp_path: Path, top: str, named: str) -> None:
    path = _toml(tmp_path, top + _account(tmp_path, 0))
    them = "it belongs" if "," not in named else "they belong"
    expected = (
        f"{path} lists [[accounts]] but also sets {named} at the top level: use one or the other (move {named} into"
        f" the [[accounts]] table of the account {them} to)"
    )
    assert _error(tmp_path, path.read_text()) == expected
    with pytest.raises(ConfigError) as caught:  # a file that says two things is wrong for every command
        load_settings(env={}, config_file=path)
    assert str(caught.value) == expected


def test_top_level_subaccount_keys_beside_accounts_are_ambiguous(tmp_path: Path) -> None:
    sub_secret = _secret(tmp_path, "sub-secret", SUB_SECRET)
    top = f'[subaccount_keys.9]\napi_key = "{SUB_KEY}"\napi_secret_file = "{sub_secret}"\n'
    text = _account(tmp_path, 0) + top  # [subaccount_keys.9] after the array: a top-level table
    assert "but also sets subaccount_keys at the top level" in _error(tmp_path, text)


def test_subaccount_checks_run_per_account(tmp_path: Path) -> None:
    sub_secret = _secret(tmp_path, "sub-secret", SUB_SECRET)
    keyed = f'[accounts.subaccount_keys.1234]\napi_key = "{SUB_KEY}"\napi_secret_file = "{sub_secret}"\n'
    path = tmp_path / "tracker.toml"
    # account #1 lists 1234, but the key sits in account #2, which does not
    text = _account(tmp_path, 0, "subaccounts = [1234]\n") + _account(tmp_path, 1, keyed)
    assert _error(tmp_path, text) == (
        f"{path} [[accounts]] #2: subaccount_keys.1234 is set but 1234 is not in this account's subaccounts: add"
        " 1234 to them (or remove the key)"
    )
    bad_id = _account(tmp_path, 0, "subaccounts = [0]\n")
    assert _error(tmp_path, bad_id).startswith(f"{path} [[accounts]] #1: subaccounts: '0' is not a sub-account id")
    bad_markets = _account(tmp_path, 0, 'markets = ["btc/usd"]\n')
    assert _error(tmp_path, bad_markets).startswith(f"{path} [[accounts]] #1: markets: 'btc/usd' is not a market")
    inline = f'[accounts.subaccount_keys.1234]\napi_key = "{SUB_KEY}"\napi_secret = "{SUB_SECRET}"\n'
    assert "use subaccount_keys.1234.api_secret_file" in _error(tmp_path, _account(tmp_path, 0, inline))


# --- load_settings (every command but `tracker run`) on a file listing accounts ---------------------------------


def test_load_settings_picks_no_account_and_says_how_to_name_one(tmp_path: Path) -> None:
    path = _three(tmp_path, 'db_url = "sqlite:///shared.db"\n')
    settings = load_settings(env={}, config_file=path)
    assert settings.api_key is None and settings.api_secret is None
    assert settings.db_url == "sqlite:///shared.db"  # status, verify, report... keep working
    assert settings.accounts_in_file == 3
    with pytest.raises(ConfigError) as caught:
        settings.require_credentials()
    assert str(caught.value) == (
        f"{path} lists 3 accounts: `tracker run` tracks them all; a command that takes one account needs"
        " BITSTAMP_API_KEY and BITSTAMP_API_SECRET (or BITSTAMP_API_SECRET_FILE) set to that account's key and"
        " secret"
    )
    one = load_settings(env={}, config_file=_toml(tmp_path, _account(tmp_path, 0)))
    with pytest.raises(ConfigError, match="lists 1 account: "):
        one.require_credentials()
    named = load_settings(env={"BITSTAMP_API_KEY": KEYS[1], "BITSTAMP_API_SECRET": SECRETS[1]}, config_file=path)
    assert named.require_credentials() == (KEYS[1], SECRETS[1])  # the account a one-account command works on


def test_load_settings_does_not_read_the_accounts_secret_files(tmp_path: Path) -> None:
    text = f'[[accounts]]\napi_key = "{KEYS[0]}"\napi_secret_file = "{tmp_path / "not-here"}"\n'
    path = _toml(tmp_path, text)
    assert load_settings(env={}, config_file=path).accounts_in_file == 1  # status needs no secret
    with pytest.raises(ConfigError, match="cannot read the API secret file"):
        load_accounts(env={}, config_file=path)


def test_the_message_without_accounts_is_unchanged() -> None:
    with pytest.raises(ConfigError, match=r"^BITSTAMP_API_KEY is not set: export your Bitstamp API key"):
        load_settings(env={}).require_credentials()


def test_config_show_rows_name_the_accounts(tmp_path: Path) -> None:
    path = _three(tmp_path)
    rows = {name: (value, origin) for name, value, origin in describe(load_settings(env={}, config_file=path))}
    assert rows["accounts"] == ("3, each tracked by `tracker run`", "file")
    assert rows["BITSTAMP_API_KEY"] == ("(not set)", "default")
    assert "accounts_in_file" not in rows
    path.unlink()
    assert "accounts" not in {name for name, _, _ in describe(load_settings(env={}))}


# --- secrets never show ----------------------------------------------------------------------------------------------


def test_no_key_or_secret_in_any_repr(tmp_path: Path) -> None:
    sub_secret = _secret(tmp_path, "sub-secret", SUB_SECRET)
    keyed = (
        f'subaccounts = [1234]\n[accounts.subaccount_keys.1234]\napi_key = "{SUB_KEY}"\n'
        f'api_secret_file = "{sub_secret}"\n'
    )
    path = _toml(tmp_path, _account(tmp_path, 0) + _account(tmp_path, 1, keyed))
    accounts = load_accounts(env={}, config_file=path)
    shown = repr(accounts) + str(accounts) + repr(load_settings(env={}, config_file=path))
    shown += repr([describe(s) for s in accounts])
    for secret in (*KEYS, *SECRETS, SUB_KEY, SUB_SECRET):
        assert secret not in shown


def test_an_accounts_own_endpoints_win_and_are_checked(tmp_path: Path) -> None:
    own = 'api_url = "http://127.0.0.1:8001/api/v2/"\nws_url = "ws://127.0.0.1:8002"\n'
    path = _toml(tmp_path, 'api_url = "https://api.example/v2/"\n' + _account(tmp_path, 0, own) + _account(tmp_path, 1))
    first, second = load_accounts(env={}, config_file=path)
    assert (first.api_url, first.ws_url) == ("http://127.0.0.1:8001/api/v2/", "ws://127.0.0.1:8002")
    assert first.origins["api_url"] == "file" and "#1" in first.sources["api_url"]
    assert second.api_url == "https://api.example/v2/"
    plain = _account(tmp_path, 0, 'ws_url = "ws://exchange.example"\n')
    message = _error(tmp_path, plain)
    assert "#1" in message and "unencrypted ws://" in message
