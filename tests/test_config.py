"""Settings: precedence (flags > env > file > default), secrets never shown, one-line errors. Tmp files only."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tracker.config import ConfigError, Secret, describe, load_settings
from tracker.logs import scrub


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./tracker.toml from the developer's checkout


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracker.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.db_url == "sqlite:///tracker.db"
    assert settings.api_key is None
    assert settings.markets is None
    assert set(settings.origins.values()) == {"default"}


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[tracker]\ndb_url = "sqlite:///file.db"\nreconcile_interval_s = 60\nmarkets = ["btcusd"]\n')
    env = {"TRACKER_DB_URL": "sqlite:///env.db", "TRACKER_MARKETS": "ethusd"}
    from_file = load_settings(env={}, config_file=path)
    assert (from_file.db_url, from_file.reconcile_interval_s) == ("sqlite:///file.db", 60.0)
    assert from_file.markets == ("btcusd",)
    from_env = load_settings(env=env, config_file=path)
    assert (from_env.db_url, from_env.markets, from_env.reconcile_interval_s) == ("sqlite:///env.db", ("ethusd",), 60.0)
    flagged = load_settings({"db_url": "sqlite:///flag.db", "markets": None}, env=env, config_file=path)
    assert flagged.db_url == "sqlite:///flag.db"
    assert flagged.markets == ("ethusd",)  # a flag left as None does not override
    assert flagged.origins["db_url"] == "flag"
    assert flagged.origins["markets"] == "env"
    assert flagged.origins["reconcile_interval_s"] == "file"
    assert flagged.origins["api_url"] == "default"


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('db_url = "sqlite:///named.db"\n', encoding="utf-8")
    assert load_settings(env={"TRACKER_CONFIG": str(path)}).db_url == "sqlite:///named.db"


def test_secret_never_shows() -> None:
    settings = load_settings(env={"BITSTAMP_API_KEY": "key-abcdefghijkl", "BITSTAMP_API_SECRET": "s3cr3t-value-xyz"})
    for text in (repr(settings), str(settings), repr(settings.api_secret), str(settings.api_key)):
        assert "s3cr3t-value-xyz" not in text
        assert "key-abcdefghijkl" not in text
    assert settings.require_credentials() == ("key-abcdefghijkl", "s3cr3t-value-xyz")
    shown = {name: value for name, value, _origin in describe(settings)}
    assert shown["BITSTAMP_API_SECRET"] == "***"
    assert Secret("a") != Secret("b")


def test_secret_from_file_warns_about_loose_permissions(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("file-secret-123\n", encoding="utf-8")
    secret.chmod(0o644)
    warnings: list[str] = []
    settings = load_settings(env={"BITSTAMP_API_SECRET_FILE": str(secret)}, warnings=warnings)
    assert settings.api_secret == Secret("file-secret-123")
    assert warnings == [f"the API secret file {secret} is readable by group or others: chmod 600 {secret}"]
    secret.chmod(0o600)
    warnings.clear()
    load_settings(env={"BITSTAMP_API_SECRET_FILE": str(secret)}, warnings=warnings)
    assert warnings == []


def test_secret_is_never_taken_from_a_flag_or_the_file_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never taken from the command line"):
        load_settings({"api_secret": "x"}, env={})
    with pytest.raises(ConfigError, match="do not put api_secret in the config file; use api_secret_file"):
        load_settings(env={}, config_file=_toml(tmp_path, 'api_secret = "x"\n'))


def test_missing_credentials_say_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="BITSTAMP_API_KEY is not set"):
        load_settings(env={}).require_credentials()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("btc/usd", "TRACKER_MARKETS: 'btc/usd' is not a market symbol"),
        (" , ", "TRACKER_MARKETS is empty"),
        ("-btcusd", "TRACKER_MARKETS: '-btcusd' is not a market symbol"),
    ],
)
def test_bad_markets_message(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"TRACKER_MARKETS": value})
    assert str(caught.value).startswith(message)


def test_markets_are_normalised() -> None:
    assert load_settings(env={"TRACKER_MARKETS": "BTCUSD, ethusd,btcusd,btcusd-perp"}).markets == (
        "btcusd",
        "ethusd",
        "btcusd-perp",
    )


def test_plain_http_only_to_loopback_unless_insecure() -> None:
    with pytest.raises(ConfigError, match=r"BITSTAMP_API_URL uses unencrypted http:// to a non-loopback host"):
        load_settings(env={"BITSTAMP_API_URL": "http://example.com/api/v2/"})
    with pytest.raises(ConfigError, match=r"BITSTAMP_WS_URL uses unencrypted ws://"):
        load_settings(env={"BITSTAMP_WS_URL": "ws://10.0.0.1:9000"})
    assert load_settings(env={"BITSTAMP_API_URL": "http://127.0.0.1:8080/"}).api_url == "http://127.0.0.1:8080/"
    assert load_settings(env={"BITSTAMP_WS_URL": "ws://localhost:1"}).ws_url == "ws://localhost:1"
    insecure = load_settings({"insecure": True}, env={"BITSTAMP_API_URL": "http://example.com/"})
    assert insecure.api_url == "http://example.com/"
    with pytest.raises(ConfigError, match="must start with https://"):
        load_settings(env={"BITSTAMP_API_URL": "ftp://example.com/"})


def test_bad_numbers_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRACKER_RECONCILE_INTERVAL must be a number of seconds"):
        load_settings(env={"TRACKER_RECONCILE_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="TRACKER_METRICS_PORT must be between 0 and 65535"):
        load_settings(env={"TRACKER_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="unknown setting 'db_ulr'"):
        load_settings(env={}, config_file=_toml(tmp_path, 'db_ulr = "x"\n'))
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(env={}, config_file=_toml(tmp_path, "db_url = \n"))


# -- issue 14: errors name the value's real source; warnings reach every command; the known-settings list --------


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({"db_url": "postgresql+psycopg://u@127.0.0.1:abc/x"}, {}, None, "--db-url has a port that is not a number"),
        ({}, {"TRACKER_DB_URL": "postgresql+psycopg2://u@h/x"}, None, "TRACKER_DB_URL: tracker does not support"),
        ({}, {}, 'db_url = "nothing like a url"\n', "tracker.toml: db_url is not a database URL"),
        ({"markets": "btc/usd"}, {}, None, "--markets: 'btc/usd' is not a market symbol"),
        ({}, {}, "markets = []\n", "tracker.toml: markets is empty"),
        ({"metrics_port": 70000}, {}, None, "--metrics-port must be between 0 and 65535"),
        ({}, {}, "metrics_port = true\n", "tracker.toml: metrics_port must be a port number"),
        ({}, {}, 'reconcile_interval_s = "nan"\n', "tracker.toml: reconcile_interval_s must be a positive number"),
        ({}, {}, "reconcile_interval_s = [1]\n", "tracker.toml: reconcile_interval_s must be a number of seconds"),
        ({"api_url": "http://example.com/"}, {}, None, "--api-url uses unencrypted http://"),
        ({}, {}, 'ws_url = "ws://example.com/"\n', "tracker.toml: ws_url uses unencrypted ws://"),
        ({"api_url": "https://127.0.0.1:abc/"}, {}, None, "--api-url is not a URL"),
        ({}, {}, "tracker = 5\n", "tracker.toml: [tracker] must be a table"),
    ],
)
def test_errors_name_the_flag_variable_or_file(
    tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str | None, message: str
) -> None:
    if toml is not None:
        _toml(tmp_path, toml)  # ./tracker.toml, found because cwd is tmp_path
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, env=env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_database_url_error_never_echoes_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"db_url": "postgresql+psycopg://u:hunter22@127.0.0.1:abc/x"}, env={})
    assert "hunter22" not in str(caught.value)


def test_secret_file_warning_is_logged_when_the_caller_does_not_collect_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: `run` and `reconcile` call load_settings without a warnings list; the warning must still show."""
    secret = tmp_path / "secret"
    secret.write_text("file-secret-123\n", encoding="utf-8")
    secret.chmod(0o644)
    logger = logging.getLogger("tracker.config")
    logger.addHandler(caplog.handler)  # directly: `tracker` may not propagate (logs.setup_logging, run by main())
    try:
        settings = load_settings(env={"BITSTAMP_API_SECRET_FILE": str(secret)})
    finally:
        logger.removeHandler(caplog.handler)
    assert settings.origins["api_secret"] == "file"
    assert settings.sources["api_secret"] == str(secret)
    # (scrubbed like every log line: a value another test registered as secret may sit inside the path)
    assert {r.getMessage() for r in caplog.records} == {
        scrub(f"the API secret file {secret} is readable by group or others: chmod 600 {secret}")
    }


def test_unknown_toml_key_lists_the_settings_the_file_really_takes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=_toml(tmp_path, 'db_ulr = "x"\n'))
    known = str(caught.value).split("(known: ", 1)[1].rstrip(")").split(", ")
    assert "api_secret_file" in known
    assert "api_secret" not in known
    assert "origins" not in known and "sources" not in known
    assert {"db_url", "api_url", "ws_url", "markets", "reconcile_interval_s", "metrics_port", "api_key"} <= set(known)


# --- the ledger settings (issue 15) ---------------------------------------------------------------------------------


def test_subaccounts_and_ledger_interval(tmp_path: Path) -> None:
    assert load_settings(env={}).subaccounts == ()
    assert load_settings(env={}).ledger_interval_s == 5.0
    env = {"TRACKER_SUBACCOUNTS": " 1234, 5678,1234 ,", "TRACKER_LEDGER_INTERVAL": "2.5"}
    settings = load_settings(env=env)
    assert settings.subaccounts == ("1234", "5678")
    assert settings.ledger_interval_s == 2.5
    assert settings.origins["subaccounts"] == "env"
    path = _toml(tmp_path, "[tracker]\nsubaccounts = [42, 7]\nledger_interval_s = 1\n")
    from_file = load_settings(env={}, config_file=path)
    assert (from_file.subaccounts, from_file.ledger_interval_s) == (("42", "7"), 1.0)
    # An empty variable is unset: the file's value stands (main account only needs neither).
    assert load_settings(env={"TRACKER_SUBACCOUNTS": ""}).subaccounts == ("42", "7")


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "12 34", "\uff11\uff12"])
def test_subaccounts_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match=r"TRACKER_SUBACCOUNTS: .* is not a sub-account id") as caught:
        load_settings(env={"TRACKER_SUBACCOUNTS": f"1,{value}"})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("toml", ["subaccounts = [true]\n", "subaccounts = [1.5]\n", "subaccounts = [[1]]\n"])
def test_subaccounts_refused_from_file(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError, match=r"subaccounts: .* is not a sub-account id"):
        load_settings(env={}, config_file=_toml(tmp_path, toml))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_ledger_interval_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigError, match="TRACKER_LEDGER_INTERVAL must be a"):
        load_settings(env={"TRACKER_LEDGER_INTERVAL": value})


# --- the stop's grace (runtime/service.py) --------------------------------------------------------------------------


def test_stop_grace(tmp_path: Path) -> None:
    default = load_settings(env={})
    assert (default.stop_grace_s, default.origins["stop_grace_s"]) == (10.0, "default")
    from_env = load_settings(env={"TRACKER_STOP_GRACE": " 1.5 "})
    assert (from_env.stop_grace_s, from_env.origins["stop_grace_s"]) == (1.5, "env")
    assert load_settings(env={"TRACKER_STOP_GRACE": "0"}).stop_grace_s == 0.0  # no wait: give up at once
    path = _toml(tmp_path, "[tracker]\nstop_grace_s = 3\n")
    assert load_settings(env={}, config_file=path).stop_grace_s == 3.0
    assert load_settings(env={"TRACKER_STOP_GRACE": "2"}, config_file=path).stop_grace_s == 2.0  # env over file
    assert ("TRACKER_STOP_GRACE", "10.0", "default") in describe(default)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-1", "a number of seconds, 0 or more, got '-1'"),
        ("nan", "a number of seconds, 0 or more, got 'nan'"),
        ("inf", "a number of seconds, 0 or more, got 'inf'"),
        ("soon", "a number of seconds, got 'soon'"),
    ],
)
def test_stop_grace_refused_in_one_line(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"TRACKER_STOP_GRACE": value})
    assert str(caught.value) == f"TRACKER_STOP_GRACE must be {says}"


@pytest.mark.parametrize("toml", ["stop_grace_s = -0.5\n", 'stop_grace_s = "x"\n', "stop_grace_s = true\n"])
def test_stop_grace_refused_from_file(tmp_path: Path, toml: str) -> None:
    path = _toml(tmp_path, toml)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: stop_grace_s must be a number of seconds"):
        load_settings(env={}, config_file=path)
