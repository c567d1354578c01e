"""Settings, read once and frozen. Secrets are wrapped so that no repr, log line or traceback shows them.

Precedence, highest first: command-line flags, environment variables, ``tracker.toml`` (the file named by
``TRACKER_CONFIG``, else ``./tracker.toml`` when it exists), built-in defaults. The API secret is never taken from a
flag (it would show in the process list): only from ``BITSTAMP_API_SECRET``, ``BITSTAMP_API_SECRET_FILE`` or the
config file's ``api_secret_file``.

Several Bitstamp accounts, one ``tracker run``: the config file lists them as an array of tables, each holding what
belongs to one account and nothing else::

    [[accounts]]                        # [[tracker.accounts]] when the settings are under [tracker]
    api_key = "..."
    api_secret_file = "/run/secrets/bitstamp-main"
    markets = ["btcusd"]                # optional: this account's own, over the shared value
    api_url = "https://..."             # optional, and ws_url: this account's own endpoints (a proxy, a test exchange)
    subaccounts = [1234]                # optional: this account's sub-accounts
    [accounts.subaccount_keys.1234]     # optional: as [tracker.subaccount_keys.N], for this account only
    api_key = "..."
    api_secret_file = "/run/secrets/bitstamp-1234"

``load_accounts`` gives one ``Settings`` per table, in file order: the shared settings (the same precedence) with the
account's own. One account's settings given for all (``api_key``, ``api_secret_file``, ``subaccounts`` or
``subaccount_keys`` at the file's top level; ``BITSTAMP_API_KEY``, ``BITSTAMP_API_SECRET(_FILE)``,
``TRACKER_SUBACCOUNTS`` or ``BITSTAMP_SUBACCOUNT_*`` in the environment) beside ``[[accounts]]`` would be ambiguous and
is an error. Commands that take one account use ``load_settings``: it never picks one of the listed accounts; the
environment's ``BITSTAMP_API_KEY`` and ``BITSTAMP_API_SECRET(_FILE)`` name the account they work on.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracker.errors import TrackerError
from tracker.logs import hide_password

if TYPE_CHECKING:
    from tracker.subaccount_keys import SubaccountKey

DEFAULT_DB_URL = "sqlite:///tracker.db"
DEFAULT_API_URL = "https://www.bitstamp.net/api/v2/"
DEFAULT_WS_URL = "wss://ws.bitstamp.net"
# Drivers tracker ships (``postgresql://`` means psycopg 3, see store/engine.py); any other is refused up front
# with the fix instead of failing deep inside SQLAlchemy on a module that is not installed.
DB_DRIVERS: tuple[str, ...] = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")

log = logging.getLogger("tracker.config")


class ConfigError(TrackerError):
    """Bad configuration; the message says what is wrong and how to fix it, in one line."""


class Secret:
    """A string that never shows itself in ``repr``/``str``; call ``reveal()`` where it is really needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask(value: str | None) -> str:
    """How an API key is shown to people: enough to tell keys apart, never enough to use one."""
    if not value:
        return "(not set)"
    if len(value) <= 8:
        return "***"
    return value[:4] + "…" + "***"


def mask_secret(value: str | None) -> str:
    """How an API secret is shown to people: whether it is set, not one of its characters (a key's first four tell
    keys apart; a secret's would only narrow a guess)."""
    return "***" if value else "(not set)"


@dataclass(frozen=True, slots=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    api_key: Secret | None = None
    api_secret: Secret | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    ws_url: str = DEFAULT_WS_URL
    markets: tuple[str, ...] | None = None  # None: discovered from the API
    reconcile_interval_s: float = 300.0
    # Sub-accounts whose ledger is walked besides the main account's ("0", always): ids > 0, as text.
    subaccounts: tuple[str, ...] = ()
    # Sub-accounts asked with their own API key (tracker/subaccount_keys.py); the others with the main key's header.
    subaccount_keys: tuple[SubaccountKey, ...] = ()
    ledger_interval_s: float = 5.0  # the ledger walk runs at least this often (issue 15: current within 10 s)
    metrics_port: int | None = None
    # After SIGINT/SIGTERM: how long ingest may take to close and a writer in a database outage keeps trying before
    # it saves what it holds to a side file (runtime/service.py, runtime/writer.py). 0: no grace.
    stop_grace_s: float = 10.0
    insecure: bool = False
    # Where each value came from ("default", "env", "file", "flag"), for `tracker config show`.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Which flag, variable or file exactly ("--db-url", "TRACKER_DB_URL", "/etc/tracker.toml", the secret file's
    # path), so that an error names the place the user has to fix.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # How many accounts the config file lists ([[accounts]]), so that a command taking one account says how to pick.
    accounts_in_file: int = field(default=0, compare=False)

    def label(self, name: str) -> str:
        """How errors name setting ``name``: the flag, the variable or ``file: key`` it came from."""
        return source_label(name, self.origins.get(name, "default"), self.sources.get(name, ""))

    def require_credentials(self) -> tuple[str, str]:
        """The API key and secret, or a ConfigError saying how to provide them."""
        if not self.api_key and self.accounts_in_file:
            listed = f"{self.accounts_in_file} account" + ("s" if self.accounts_in_file > 1 else "")
            raise ConfigError(
                f"{self.sources.get('accounts', 'the config file')} lists {listed}: `tracker run`"
                " tracks them all; a command that takes one account needs BITSTAMP_API_KEY and BITSTAMP_API_SECRET"
                " (or BITSTAMP_API_SECRET_FILE) set to that account's key and secret"
            )
        if not self.api_key:
            raise ConfigError("BITSTAMP_API_KEY is not set: export your Bitstamp API key (or run `tracker demo`)")
        if not self.api_secret:
            raise ConfigError(
                "BITSTAMP_API_SECRET is not set: export it or put it in a file named by BITSTAMP_API_SECRET_FILE"
            )
        return self.api_key.reveal(), self.api_secret.reveal()

    def subaccount_key(self, ident: str) -> SubaccountKey | None:
        """Sub-account ``ident``'s own key, if it has one."""
        return next((k for k in self.subaccount_keys if k.ident == ident), None)


ENV_NAMES: dict[str, str] = {
    "db_url": "TRACKER_DB_URL",
    "api_key": "BITSTAMP_API_KEY",
    "api_secret": "BITSTAMP_API_SECRET",
    "api_url": "BITSTAMP_API_URL",
    "ws_url": "BITSTAMP_WS_URL",
    "markets": "TRACKER_MARKETS",
    "reconcile_interval_s": "TRACKER_RECONCILE_INTERVAL",
    "subaccounts": "TRACKER_SUBACCOUNTS",
    "ledger_interval_s": "TRACKER_LEDGER_INTERVAL",
    "metrics_port": "TRACKER_METRICS_PORT",
    "stop_grace_s": "TRACKER_STOP_GRACE",
}
SECRET_FILE_ENV = "BITSTAMP_API_SECRET_FILE"
CONFIG_FILE_ENV = "TRACKER_CONFIG"
FLAG_NAMES: dict[str, str] = {
    "db_url": "--db-url",
    "markets": "--markets",
    "api_url": "--api-url",
    "ws_url": "--ws-url",
    "metrics_port": "--metrics-port",
    "insecure": "--insecure",
}
INTERNAL_FIELDS = frozenset({"origins", "sources", "subaccount_keys", "accounts_in_file"})
# One account's alone: with [[accounts]] in the file, only its tables set them, never the file's top level.
ONE_ACCOUNT_KEYS: tuple[str, ...] = ("api_key", "api_secret_file", "subaccounts", "subaccount_keys")
# What one [[accounts]] table may set. Its own api_url / ws_url: an account behind another endpoint (a proxy, a test
# exchange: the tests' fake exchanges are one account each); the shared ones otherwise.
ACCOUNT_KEYS: tuple[str, ...] = (*ONE_ACCOUNT_KEYS, "markets", "api_url", "ws_url")
ONE_ACCOUNT_ENV: tuple[str, ...] = (
    ENV_NAMES["api_key"],
    ENV_NAMES["api_secret"],
    SECRET_FILE_ENV,
    ENV_NAMES["subaccounts"],
)


def source_label(name: str, origin: str, where: str = "") -> str:
    """``--db-url``, ``TRACKER_DB_URL`` or ``tracker.toml: db_url``: where the user finds the value to fix."""
    if origin == "flag":
        return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    if origin == "file":
        return f"{where}: {name}" if where else name
    return ENV_NAMES.get(name, name)


def config_file_keys() -> list[str]:
    """The settings ``tracker.toml`` accepts: every setting, but the secret only by file (``api_secret_file``)."""
    names = [f.name for f in fields(Settings) if f.name not in INTERNAL_FIELDS and f.name != "api_secret"]
    return sorted([*names, "accounts", "api_secret_file", "subaccount_keys"])


def parse_markets(text: str, label: str = "TRACKER_MARKETS") -> tuple[str, ...]:
    """``"btcusd, ETHUSD,btcusd-perp"`` -> ``("btcusd", "ethusd", "btcusd-perp")``; validates the symbol syntax."""
    markets: list[str] = []
    for raw in text.split(","):
        symbol = raw.strip().lower()
        if not symbol:
            continue
        if not all(c.isalnum() or c == "-" for c in symbol) or symbol.startswith("-") or symbol.endswith("-"):
            raise ConfigError(f"{label}: {raw.strip()!r} is not a market symbol (like btcusd or btcusd-perp)")
        if symbol not in markets:
            markets.append(symbol)
    if not markets:
        raise ConfigError(f"{label} is empty: list market symbols like btcusd,ethusd or unset it to discover")
    return tuple(markets)


def parse_subaccounts(value: object, label: str = "TRACKER_SUBACCOUNTS") -> tuple[str, ...]:
    """``"1234, 5678"`` (or a list of ints from the config file) -> ``("1234", "5678")``: sub-account ids, each a
    positive integer (the main account, ``0``, is always tracked and is not listed). Empty: main account only."""
    items: list[object] = list(value) if isinstance(value, (list, tuple)) else list(str(value).split(","))
    ids: list[str] = []
    for raw in items:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{label}: {raw!r} is not a sub-account id (a positive integer, like 1234)")
        text = str(raw).strip()
        if not text:
            continue
        if not text.isdigit() or not text.isascii() or len(text) > 19 or int(text) == 0:
            raise ConfigError(
                f"{label}: {text!r} is not a sub-account id (a positive integer, like 1234; the main account 0 is"
                " always tracked)"
            )
        ident = str(int(text))
        if ident not in ids:
            ids.append(ident)
    return tuple(ids)


def read_secret_file(path: Path, warn: list[str], named_by: str = SECRET_FILE_ENV) -> str:
    """The secret in file ``path`` (named by ``named_by``); a warning into ``warn`` if others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API secret file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the API secret file {path} is not UTF-8 text: write the API secret into it") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn.append(f"the API secret file {path} is readable by group or others: chmod 600 {path}")
    if not text:
        raise ConfigError(f"the API secret file {path} is empty: write the API secret into it (or fix {named_by})")
    return text


def _coerce(name: str, value: object, label: str) -> object:
    """``value`` as the type of setting ``name``; errors name ``label``, the flag, variable or file it came from."""
    if name == "markets":
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return parse_markets(str(value), label)
    if name in ("api_key", "api_secret"):
        text = str(value).strip()
        if not text:
            return None
        if any(c.isspace() for c in text):
            raise ConfigError(f"{label} contains white space: check that it was copied whole")
        return Secret(text)
    if name == "subaccounts":
        return parse_subaccounts(value, label)
    if name in ("reconcile_interval_s", "ledger_interval_s"):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{label} must be a number of seconds, got {value!r}") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"{label} must be a positive number of seconds, got {value!r}")
        return seconds
    if name == "stop_grace_s":
        try:
            # TOML's true is no number of seconds (float(True) would say 1): NaN, refused below as a number is.
            seconds = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{label} must be a number of seconds, got {value!r}") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(f"{label} must be a number of seconds, 0 or more, got {value!r}")
        return seconds
    if name == "metrics_port":
        try:
            port = int(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"{label} must be a port number, got {value!r}")
        if not 0 <= port <= 65535:
            raise ConfigError(f"{label} must be between 0 and 65535, got {port}")
        return port
    if name == "insecure":
        return bool(value)
    if name == "db_url":
        return check_db_url(str(value), label)
    return str(value)


def check_db_url(url: str, label: str) -> str:
    """A database URL tracker can open, or a ConfigError that never echoes the URL (it may hold a password)."""
    from tracker.store.db_urls import BadUrl, parse_db_url

    fix = "use sqlite:///path/to/tracker.db or postgresql+psycopg://user@host/dbname"
    try:
        parsed = parse_db_url(url)
    except BadUrl as exc:
        what = "is not a database URL" if str(exc) == "not a database URL" else f"has {exc}"
        raise ConfigError(f"{label} {what}: {fix}") from None
    if parsed.drivername not in DB_DRIVERS:
        raise ConfigError(
            f"{label}: tracker does not support {parsed.drivername!r} (psycopg 3 and SQLite are the drivers it ships):"
            f" {fix}"
        )
    if parsed.backend == "sqlite" and (parsed.has_credentials or parsed.host or parsed.port):
        raise ConfigError(
            f"{label}: a SQLite URL names a file, not a host: sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if parsed.backend == "sqlite" and parsed.has_query:
        # pysqlite would ignore them with a warning, or change how the file is opened behind store/engine.py's back.
        raise ConfigError(f"{label}: tracker takes no ?options in a SQLite URL: use sqlite:///path/to/tracker.db")
    if parsed.port is not None and not 0 < parsed.port <= 65535:
        raise ConfigError(f"{label} has port {parsed.port}, not between 1 and 65535")
    return url


def _read_config_file(path: Path) -> tuple[dict[str, object], str]:
    """The settings' table of file ``path`` and how it spells the accounts array (``accounts`` or
    ``tracker.accounts``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("tracker", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tracker] must be a table of settings (known: {', '.join(config_file_keys())})")
    return section, "tracker.accounts" if "tracker" in data else "accounts"


def _find_config(env: Mapping[str, str], config_file: Path | None) -> tuple[Path | None, dict[str, object], str]:
    """The config file (``config_file``, else ``TRACKER_CONFIG``, else ``./tracker.toml`` if it exists) read."""
    path = config_file or (Path(env[CONFIG_FILE_ENV]) if env.get(CONFIG_FILE_ENV) else None)
    if path is None and Path("tracker.toml").is_file():
        path = Path("tracker.toml")
    if path is None:
        return None, {}, "accounts"
    return (path, *_read_config_file(path))


def _account_tables(raw: object, path: Path, name: str) -> list[tuple[str, dict[str, object]]]:
    """The ``[[accounts]]`` tables, each with how errors name it (``tracker.toml [[accounts]] #2``), checked without
    reading any other file: their keys, the two required ones, the values' syntax, no account twice."""
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        raise ConfigError(
            f"{path}: accounts must be an array of tables: one [[{name}]] (double brackets) per Bitstamp account,"
            " each with api_key and api_secret_file"
        )
    if not raw:
        raise ConfigError(
            f"{path}: accounts is empty: add one [[{name}]] table per Bitstamp account (api_key, api_secret_file),"
            " or remove accounts to track the one account of BITSTAMP_API_KEY"
        )
    tables: list[tuple[str, dict[str, object]]] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(raw, 1):
        where = f"{path} [[{name}]] #{number}"
        if "api_secret" in table:
            raise ConfigError(f"{where}: do not put api_secret in the config file; use api_secret_file instead")
        unknown = sorted(set(table) - set(ACCOUNT_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting {unknown[0]!r} (an account takes: {', '.join(sorted(ACCOUNT_KEYS))})"
            )
        for key in ("api_key", "api_secret_file"):
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string (in quotes)")
            if not value or not value.strip():
                raise ConfigError(
                    f"{where} has no {key}: give each account its api_key and api_secret_file (the file holding"
                    " its API secret)"
                )
        for key in ("api_key", "markets", "subaccounts", "api_url", "ws_url"):
            if key in table:
                _coerce(key, table[key], f"{where}: {key}")
        api_key = str(table["api_key"]).strip()
        if (first := seen.setdefault(api_key, number)) != number:
            raise ConfigError(
                f"{path}: [[{name}]] #{first} and #{number} have the same api_key {mask(api_key)}: list each"
                " Bitstamp account once"
            )
        tables.append((where, table))
    return tables


def _refuse_shared_account_keys(section: Mapping[str, object], path: Path, name: str) -> None:
    """One account's settings at the file's top level beside [[accounts]]: which account would they be?"""
    given = [key for key in ONE_ACCOUNT_KEYS if key in section]
    if given:
        keys = ", ".join(given)
        raise ConfigError(
            f"{path} lists [[{name}]] but also sets {keys} at the top level: use one or the other (move {keys} into"
            f" the [[{name}]] table of the account {'it belongs' if len(given) == 1 else 'they belong'} to)"
        )


def _refuse_one_account_env(env: Mapping[str, str], path: Path, name: str) -> None:
    """One account's variables beside [[accounts]] (``tracker run``): track that account or the listed ones?"""
    given = [var for var in ONE_ACCOUNT_ENV if env.get(var, "").strip()]
    given += sorted(
        var
        for var, value in env.items()
        if var.startswith("BITSTAMP_SUBACCOUNT_")
        and var.endswith(("_API_KEY", "_API_SECRET", "_API_SECRET_FILE"))
        and value.strip()
    )
    if given:
        them = "it" if len(given) == 1 else "them"
        raise ConfigError(
            f"{path} lists [[{name}]] but {', '.join(given)} {'is' if len(given) == 1 else 'are'} also set: use one"
            f" or the other (unset {them} to track the listed accounts, or remove [[{name}]] to track one account)"
        )


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    warnings: list[str] | None = None,
) -> Settings:
    """Build the frozen settings from defaults, the config file, the environment and flags (in rising priority).

    ``flags`` maps Settings field names to values (``None`` means the flag was not given). Warnings (a secret file
    others can read) go into ``warnings`` when given, else to the ``tracker.config`` logger: every command that
    reads the secret shows them, not only the ones that remember to ask.
    """
    env = os.environ if env is None else env
    warn: list[str] = []
    settings = _shared_settings(flags, env, _find_config(env, config_file), warn)
    _report(warn, warnings)
    return settings


def load_accounts(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    warnings: list[str] | None = None,
) -> tuple[Settings, ...]:
    """The settings of every account ``tracker run`` tracks: one per ``[[accounts]]`` table of the config file, in
    file order, each the shared settings (as ``load_settings`` builds them) with the account's own key, secret and,
    where the table sets them, markets, sub-accounts and sub-account keys. Without ``[[accounts]]``:
    ``(load_settings(...),)``. Parameters as ``load_settings``'s."""
    env = os.environ if env is None else env
    warn: list[str] = []
    found = _find_config(env, config_file)
    path, section, name = found
    if path is None or "accounts" not in section:
        accounts: tuple[Settings, ...] = (_shared_settings(flags, env, found, warn),)
    else:
        tables = _account_tables(section["accounts"], path, name)
        _refuse_shared_account_keys(section, path, name)
        _refuse_one_account_env(env, path, name)  # before the shared settings read BITSTAMP_API_SECRET_FILE
        shared = _shared_settings(flags, env, found, warn)
        accounts = tuple(_account_settings(shared, where, table, warn) for where, table in tables)
    _report(warn, warnings)
    return accounts


def _report(warn: list[str], warnings: list[str] | None) -> None:
    if warnings is not None:
        warnings.extend(warn)
    else:
        for line in warn:
            log.warning(line)


def _account_settings(shared: Settings, where: str, table: Mapping[str, object], warn: list[str]) -> Settings:
    """``shared`` with the account of table ``where``'s own settings; its secret and sub-account keys read."""
    from tracker import subaccount_keys as sk

    origins, sources = dict(shared.origins), dict(shared.sources)
    values: dict[str, object] = {"subaccounts": ()}
    for key in ("api_key", "markets", "subaccounts", "api_url", "ws_url"):
        if key in table:
            values[key] = _coerce(key, table[key], f"{where}: {key}")
            origins[key], sources[key] = "file", where
    secret_file = str(table["api_secret_file"]).strip()
    try:
        values["api_secret"] = Secret(read_secret_file(Path(secret_file), warn, named_by="api_secret_file"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    origins["api_secret"], sources["api_secret"] = "file", secret_file
    sub_keys = sk.from_file(table["subaccount_keys"], where, warn) if "subaccount_keys" in table else {}
    for name, (origin, source) in sk.origins_of(sub_keys).items():
        origins[name], sources[name] = origin, source
    values["subaccount_keys"] = tuple(sub_keys[i] for i in sorted(sub_keys, key=int))
    settings = replace(shared, **values, origins=origins, sources=sources)  # type: ignore[arg-type]
    sk.check_listed(sub_keys, settings.subaccounts, account=where)
    check_transport(settings)
    return settings


def _shared_settings(
    flags: Mapping[str, object] | None,
    env: Mapping[str, str],
    found: tuple[Path | None, dict[str, object], str],
    warn: list[str],
) -> Settings:
    """``load_settings``'s work: with ``[[accounts]]`` in the file, the settings the accounts share (no API key
    unless the environment names one, for a command that takes one account)."""
    from tracker import subaccount_keys as sk

    sub_keys: dict[str, SubaccountKey] = {}
    values: dict[str, object] = {}
    origins: dict[str, str] = {f.name: "default" for f in fields(Settings) if f.name not in INTERNAL_FIELDS}
    sources: dict[str, str] = {}

    def take(name: str, raw: object, origin: str, where: str) -> None:
        values[name] = _coerce(name, raw, source_label(name, origin, where))
        origins[name], sources[name] = origin, where

    accounts = 0
    path, section, accounts_name = found
    if path is not None:
        if "accounts" in section:
            accounts = len(_account_tables(section["accounts"], path, accounts_name))
            _refuse_shared_account_keys(section, path, accounts_name)
        for key, value in section.items():
            if key == "accounts":
                origins[key], sources[key] = "file", str(path)
                continue
            if key == "api_secret_file":
                values["api_secret"] = Secret(read_secret_file(Path(str(value)), warn))
                origins["api_secret"], sources["api_secret"] = "file", str(value)
                continue
            if key == "subaccount_keys":
                sub_keys = sk.from_file(value, path, warn)
                continue
            if key == "api_secret":
                raise ConfigError(f"{path}: do not put api_secret in the config file; use api_secret_file instead")
            if key not in origins:
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(config_file_keys())})")
            take(key, value, "file", str(path))

    for name, var in ENV_NAMES.items():
        raw = env.get(var)
        if raw is not None and raw.strip() != "":
            take(name, raw, "env", var)
    secret_file = env.get(SECRET_FILE_ENV)
    if secret_file and not env.get(ENV_NAMES["api_secret"]):
        values["api_secret"] = Secret(read_secret_file(Path(secret_file), warn))
        origins["api_secret"], sources["api_secret"] = "file", secret_file
    sub_keys.update(sk.from_env(env, warn))  # a sub-account's key from the environment replaces the file's

    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name == "api_secret":
            raise ConfigError("the API secret is never taken from the command line; use BITSTAMP_API_SECRET(_FILE)")
        take(name, value, "flag", FLAG_NAMES.get(name, name))

    for name, (origin, where) in sk.origins_of(sub_keys).items():
        origins[name], sources[name] = origin, where
    values["subaccount_keys"] = tuple(sub_keys[i] for i in sorted(sub_keys, key=int))
    settings = replace(
        Settings(),
        **values,  # type: ignore[arg-type]
        origins=origins,
        sources=sources,
        accounts_in_file=accounts,
    )
    sk.check_listed(sub_keys, settings.subaccounts)
    check_transport(settings)
    return settings


def _is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address; a name that merely starts with ``127.`` (``127.example.com``) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_transport(settings: Settings) -> None:
    """Plain http:// and ws:// are for loopback only (the fake exchange), unless --insecure was given."""
    for name, url, plain in (("api_url", settings.api_url, "http"), ("ws_url", settings.ws_url, "ws")):
        label = settings.label(name)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError as exc:
            raise ConfigError(f"{label} is not a URL ({exc}): use {plain}s://host/...") from None
        if parts.scheme not in (plain, plain + "s"):
            raise ConfigError(f"{label} must start with {plain}s:// (got {url!r})")
        if not parts.hostname:
            raise ConfigError(f"{label} names no host (got {url!r}): use {plain}s://host/...")
        if parts.scheme == plain and not _is_loopback(parts.hostname) and not settings.insecure:
            raise ConfigError(
                f"{label} uses unencrypted {plain}:// to a non-loopback host; use {plain}s:// or pass --insecure"
            )


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, shown value, origin) rows for `tracker config show`, with secrets masked."""
    rows: list[tuple[str, str, str]] = []
    for f in fields(Settings):
        if f.name in INTERNAL_FIELDS:
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Secret):
            shown = (mask_secret if f.name == "api_secret" else mask)(value.reveal())
        elif value is None:
            shown = "(not set)" if f.name not in ("markets",) else "(discovered from the API)"
        elif f.name == "subaccounts" and not value:
            shown = "(none: the main account only)"
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif f.name in ("db_url", "api_url", "ws_url"):
            shown = hide_password(value)
        else:
            shown = str(value)
        rows.append((ENV_NAMES.get(f.name, f.name), shown, settings.origins.get(f.name, "default")))
    if settings.accounts_in_file:
        rows.append(("accounts", f"{settings.accounts_in_file}, each tracked by `tracker run`", "file"))
    from tracker.subaccount_keys import describe_keys

    return rows + describe_keys(settings.subaccount_keys, settings.origins)


def describe_source(settings: Settings, name: str) -> str:
    """The origin as `config show` prints it: ``env``, ``flag``, ``default`` or ``file PATH`` (tracker.toml or the
    secret file)."""
    origin = settings.origins.get(name, "default")
    where = settings.sources.get(name)
    return f"{origin} {where}" if origin == "file" and where else origin
