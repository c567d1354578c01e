"""Sub-accounts' own API keys: ``BITSTAMP_SUBACCOUNT_<N>_API_KEY`` with ``BITSTAMP_SUBACCOUNT_<N>_API_SECRET`` (or
``..._API_SECRET_FILE``), for a sub-account id ``N`` listed in ``TRACKER_SUBACCOUNTS``; in ``tracker.toml``::

    [tracker.subaccount_keys.1001]
    api_key = "..."
    api_secret_file = "/run/secrets/bitstamp-1001"

A sub-account with its own key is asked with it: the documented way, the spec's endpoints run "on the account (Sub or
Main), to which the used API key is bound to" [D: docs/bitstamp.md §5.9]; one without keeps the
``X-Auth-Subaccount-Id`` header of the main key [G]. The same rules as the main secret: never from a flag, from the
config file only by file, masked in ``config show``, never in a repr, a log line or an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tracker.config import ConfigError, Secret, mask, mask_secret, read_secret_file

KEY_FIELDS = ("api_key", "api_secret_file")


def env_name(ident: str, what: str) -> str:
    """``env_name("1001", "API_KEY")`` -> ``BITSTAMP_SUBACCOUNT_1001_API_KEY``."""
    return f"BITSTAMP_SUBACCOUNT_{ident}_{what}"


@dataclass(frozen=True, slots=True)
class SubaccountKey:
    """The API key and secret bound to sub-account ``ident``, and where each came from (``env NAME``, ``file
    PATH``) for ``config show``."""

    ident: str
    api_key: Secret
    api_secret: Secret = field(repr=False)
    # (origin, where) of each: ("env", "BITSTAMP_SUBACCOUNT_1001_API_KEY"), ("file", "/run/secrets/...").
    key_source: tuple[str, str] = field(default=("env", ""), compare=False)
    secret_source: tuple[str, str] = field(default=("env", ""), compare=False)

    def reveal(self) -> tuple[str, str]:
        return self.api_key.reveal(), self.api_secret.reveal()


def _text(value: object, label: str) -> str:
    text = str(value).strip()
    if any(c.isspace() for c in text):
        raise ConfigError(f"{label} contains white space: check that it was copied whole")
    return text


def _pair(
    ident: str,
    key: str,
    secret: str,
    *,
    key_label: str,
    secret_label: str,
    sources: tuple[tuple[str, str], tuple[str, str]],
) -> SubaccountKey | None:
    if not key and not secret:
        return None
    if not key:
        raise ConfigError(f"{secret_label} is set but {key_label} is not: give sub-account {ident}'s key with it")
    if not secret:
        raise ConfigError(
            f"{key_label} is set but its secret is not: set {env_name(ident, 'API_SECRET')} or"
            f" {env_name(ident, 'API_SECRET_FILE')} (or unset the key to use the main key's header)"
        )
    return SubaccountKey(ident, Secret(key), Secret(secret), sources[0], sources[1])


def from_file(section: object, path: Path | str, warn: list[str]) -> dict[str, SubaccountKey]:
    """``[tracker.subaccount_keys.<N>]`` tables of ``tracker.toml``: ``api_key`` and ``api_secret_file``.

    ``path`` is how errors and ``config show`` name the place: the file, or the file and its ``[[accounts]]`` table
    (config.py's ``load_accounts``) for an account's own sub-account keys."""
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: subaccount_keys must be tables like [tracker.subaccount_keys.1234]")
    keys: dict[str, SubaccountKey] = {}
    for raw_id, table in section.items():
        ident = str(raw_id).strip()
        if not ident.isdigit() or int(ident) == 0:
            raise ConfigError(f"{path}: subaccount_keys.{raw_id} is not a sub-account id (a positive integer)")
        ident = str(int(ident))
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: subaccount_keys.{ident} must be a table with api_key and api_secret_file")
        if "api_secret" in table:
            raise ConfigError(
                f"{path}: do not put a secret in the config file; use subaccount_keys.{ident}.api_secret_file"
            )
        unknown = sorted(set(table) - set(KEY_FIELDS))
        if unknown:
            raise ConfigError(
                f"{path}: subaccount_keys.{ident}: unknown setting {unknown[0]!r} (known: api_key, api_secret_file)"
            )
        label = f"{path}: subaccount_keys.{ident}"
        key = _text(table.get("api_key", ""), f"{label}.api_key")
        secret_file = str(table.get("api_secret_file", "")).strip()
        secret = read_secret_file(Path(secret_file), warn) if secret_file else ""
        pair = _pair(
            ident,
            key,
            secret,
            key_label=f"{label}.api_key",
            secret_label=f"{label}.api_secret_file",
            sources=(("file", str(path)), ("file", secret_file)),
        )
        if pair is not None:
            keys[ident] = pair
    return keys


def from_env(env: Mapping[str, str], warn: list[str]) -> dict[str, SubaccountKey]:
    """Every ``BITSTAMP_SUBACCOUNT_<N>_API_KEY`` / ``_API_SECRET`` / ``_API_SECRET_FILE`` of ``env``."""
    prefix = "BITSTAMP_SUBACCOUNT_"
    idents: set[str] = set()
    for name, value in env.items():
        if not name.startswith(prefix) or not value.strip():
            continue
        ident, _, what = name[len(prefix) :].partition("_")
        if what not in ("API_KEY", "API_SECRET", "API_SECRET_FILE"):
            continue
        if not ident.isdigit() or int(ident) == 0 or str(int(ident)) != ident:
            raise ConfigError(
                f"{name}: {ident!r} is not a sub-account id (a positive integer like 1234, no zeros first)"
            )
        idents.add(ident)
    keys: dict[str, SubaccountKey] = {}
    for ident in sorted(idents, key=int):
        key_var, secret_var, file_var = (env_name(ident, w) for w in ("API_KEY", "API_SECRET", "API_SECRET_FILE"))
        key = _text(env.get(key_var, ""), key_var)
        secret = _text(env.get(secret_var, ""), secret_var)
        secret_source = ("env", secret_var)
        if not secret and env.get(file_var, "").strip():
            secret_path = env[file_var].strip()
            secret = read_secret_file(Path(secret_path), warn)
            secret_source = ("file", secret_path)
        pair = _pair(
            ident,
            key,
            secret,
            key_label=key_var,
            secret_label=secret_var if env.get(secret_var, "").strip() else file_var,
            sources=(("env", key_var), secret_source),
        )
        if pair is not None:
            keys[ident] = pair
    return keys


def check_listed(keys: Mapping[str, SubaccountKey], subaccounts: tuple[str, ...], account: str = "") -> None:
    """A key for a sub-account that is not tracked is a mistake: say which and how to fix it. ``account`` names the
    config file's ``[[accounts]]`` table both came from, if they did."""
    for ident in keys:
        if ident not in subaccounts and account:
            raise ConfigError(
                f"{account}: subaccount_keys.{ident} is set but {ident} is not in this account's subaccounts: add"
                f" {ident} to them (or remove the key)"
            )
        if ident not in subaccounts:
            raise ConfigError(
                f"{env_name(ident, 'API_KEY')} is set but {ident} is not in TRACKER_SUBACCOUNTS: add {ident} to it"
                " (or unset the key)"
            )


def origins_of(keys: Mapping[str, SubaccountKey]) -> dict[str, tuple[str, str]]:
    """``config show``'s names of the keys (``BITSTAMP_SUBACCOUNT_<N>_API_KEY`` / ``_API_SECRET``) -> (origin,
    where)."""
    out: dict[str, tuple[str, str]] = {}
    for k in keys.values():
        out[env_name(k.ident, "API_KEY")] = k.key_source
        out[env_name(k.ident, "API_SECRET")] = k.secret_source
    return out


def describe_keys(keys: tuple[SubaccountKey, ...], origins: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``config show`` rows (name, masked value, origin) of the sub-accounts' keys."""
    rows: list[tuple[str, str, str]] = []
    for k in keys:
        for what, value in (("API_KEY", k.api_key), ("API_SECRET", k.api_secret)):
            name = env_name(k.ident, what)
            shown = (mask_secret if what == "API_SECRET" else mask)(value.reveal())
            rows.append((name, shown, origins.get(name, "env")))
    return rows
