"""Settings, read once and frozen. Secrets are wrapped so that no repr, log line or traceback shows them.

Precedence, highest first: command-line flags, environment variables, ``tracker.toml`` (the file named by
``TRACKER_CONFIG``, else ``./tracker.toml`` when it exists), built-in defaults. The API secret is never taken from a
flag (it would show in the process list): only from ``BITSTAMP_API_SECRET``, ``BITSTAMP_API_SECRET_FILE`` or the
config file's ``api_secret_file``.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from tracker.errors import TrackerError

DEFAULT_DB_URL = "sqlite:///tracker.db"
DEFAULT_API_URL = "https://www.bitstamp.net/api/v2/"
DEFAULT_WS_URL = "wss://ws.bitstamp.net"


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
    """How a secret is shown to people: enough to tell keys apart, never enough to use one."""
    if not value:
        return "(not set)"
    if len(value) <= 8:
        return "***"
    return value[:4] + "…" + "***"


@dataclass(frozen=True, slots=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    api_key: Secret | None = None
    api_secret: Secret | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    ws_url: str = DEFAULT_WS_URL
    markets: tuple[str, ...] | None = None  # None: discovered from the API
    reconcile_interval_s: float = 300.0
    metrics_port: int | None = None
    insecure: bool = False
    # Where each value came from ("default", "env", "file", "flag"), for `tracker config show`.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    def require_credentials(self) -> tuple[str, str]:
        """The API key and secret, or a ConfigError saying how to provide them."""
        if not self.api_key:
            raise ConfigError("BITSTAMP_API_KEY is not set: export your Bitstamp API key (or run `tracker demo`)")
        if not self.api_secret:
            raise ConfigError(
                "BITSTAMP_API_SECRET is not set: export it or put it in a file named by BITSTAMP_API_SECRET_FILE"
            )
        return self.api_key.reveal(), self.api_secret.reveal()


ENV_NAMES: dict[str, str] = {
    "db_url": "TRACKER_DB_URL",
    "api_key": "BITSTAMP_API_KEY",
    "api_secret": "BITSTAMP_API_SECRET",
    "api_url": "BITSTAMP_API_URL",
    "ws_url": "BITSTAMP_WS_URL",
    "markets": "TRACKER_MARKETS",
    "reconcile_interval_s": "TRACKER_RECONCILE_INTERVAL",
    "metrics_port": "TRACKER_METRICS_PORT",
}
SECRET_FILE_ENV = "BITSTAMP_API_SECRET_FILE"
CONFIG_FILE_ENV = "TRACKER_CONFIG"


def parse_markets(text: str) -> tuple[str, ...]:
    """``"btcusd, ETHUSD,btcusd-perp"`` -> ``("btcusd", "ethusd", "btcusd-perp")``; validates the symbol syntax."""
    markets: list[str] = []
    for raw in text.split(","):
        symbol = raw.strip().lower()
        if not symbol:
            continue
        if not all(c.isalnum() or c == "-" for c in symbol) or symbol.startswith("-") or symbol.endswith("-"):
            raise ConfigError(f"TRACKER_MARKETS: {raw.strip()!r} is not a market symbol (like btcusd or btcusd-perp)")
        if symbol not in markets:
            markets.append(symbol)
    if not markets:
        raise ConfigError("TRACKER_MARKETS is empty: list market symbols like btcusd,ethusd or unset it to discover")
    return tuple(markets)


def read_secret_file(path: Path, warn: list[str]) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API secret file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn.append(f"the API secret file {path} is readable by group or others: chmod 600 {path}")
    if not text:
        raise ConfigError(
            f"the API secret file {path} is empty: write the API secret into it (or fix BITSTAMP_API_SECRET_FILE)"
        )
    return text


def _coerce(name: str, value: object, origin: str) -> object:
    label = ENV_NAMES.get(name, name)
    if name == "markets":
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return parse_markets(str(value))
    if name in ("api_key", "api_secret"):
        text = str(value).strip()
        if not text:
            return None
        if any(c.isspace() for c in text):
            raise ConfigError(f"{label} contains white space: check that it was copied whole")
        return Secret(text)
    if name == "reconcile_interval_s":
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except ValueError:
            raise ConfigError(f"{label} must be a number of seconds, got {value!r} (from {origin})") from None
        if seconds <= 0:
            raise ConfigError(f"{label} must be positive, got {value!r}")
        return seconds
    if name == "metrics_port":
        try:
            port = int(value)  # type: ignore[call-overload]
        except ValueError:
            raise ConfigError(f"{label} must be a port number, got {value!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{label} must be between 0 and 65535, got {port}")
        return port
    if name == "insecure":
        return bool(value)
    return str(value)


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    warnings: list[str] | None = None,
) -> Settings:
    """Build the frozen settings from defaults, the config file, the environment and flags (in rising priority).

    ``flags`` maps Settings field names to values (``None`` means the flag was not given).
    """
    env = os.environ if env is None else env
    warn = warnings if warnings is not None else []
    values: dict[str, object] = {}
    origins: dict[str, str] = {f.name: "default" for f in fields(Settings) if f.name != "origins"}

    path = config_file or (Path(env[CONFIG_FILE_ENV]) if env.get(CONFIG_FILE_ENV) else None)
    if path is None and Path("tracker.toml").is_file():
        path = Path("tracker.toml")
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        section = data.get("tracker", data)
        for key, value in section.items():
            if key == "api_secret_file":
                values["api_secret"] = Secret(read_secret_file(Path(str(value)), warn))
                origins["api_secret"] = "file"
                continue
            if key == "api_secret":
                raise ConfigError(f"{path}: do not put api_secret in the config file; use api_secret_file instead")
            if key not in origins:
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(origins))})")
            values[key] = _coerce(key, value, str(path))
            origins[key] = "file"

    for name, var in ENV_NAMES.items():
        raw = env.get(var)
        if raw is not None and raw.strip() != "":
            values[name] = _coerce(name, raw, var)
            origins[name] = "env"
    secret_file = env.get(SECRET_FILE_ENV)
    if secret_file and not env.get(ENV_NAMES["api_secret"]):
        values["api_secret"] = Secret(read_secret_file(Path(secret_file), warn))
        origins["api_secret"] = "env"

    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name == "api_secret":
            raise ConfigError("the API secret is never taken from the command line; use BITSTAMP_API_SECRET(_FILE)")
        values[name] = _coerce(name, value, "flag")
        origins[name] = "flag"

    settings = replace(Settings(), **values, origins=origins)  # type: ignore[arg-type]
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
    for label, url, plain in (
        ("BITSTAMP_API_URL", settings.api_url, "http"),
        ("BITSTAMP_WS_URL", settings.ws_url, "ws"),
    ):
        parts = urlsplit(url)
        if parts.scheme not in (plain, plain + "s"):
            raise ConfigError(f"{label} must start with {plain}s:// (got {url!r})")
        if parts.scheme == plain and not _is_loopback(parts.hostname) and not settings.insecure:
            raise ConfigError(
                f"{label} uses unencrypted {plain}:// to a non-loopback host; use {plain}s:// or pass --insecure"
            )


def hide_password(url: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``: URLs are printed, passwords never."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, shown value, origin) rows for `tracker config show`, with secrets masked."""
    rows: list[tuple[str, str, str]] = []
    for f in fields(Settings):
        if f.name == "origins":
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Secret):
            shown = mask(value.reveal())
        elif value is None:
            shown = "(not set)" if f.name not in ("markets",) else "(discovered from the API)"
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif f.name == "db_url":
            shown = hide_password(value)
        else:
            shown = str(value)
        rows.append((ENV_NAMES.get(f.name, f.name), shown, settings.origins.get(f.name, "default")))
    return rows
