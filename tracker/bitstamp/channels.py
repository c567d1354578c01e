"""Channel-name grammar (docs/bitstamp.md §1.6).

- Public: ``<name>_<market>`` (``live_trades_btcusd``); ``announcements`` has no market.
- Private, per market: ``private-<name>_<market>-<user_id>``.
- Private, account-wide: ``private-<name>-<user_id>``.

Parsing survives hyphenated markets: strip ``private-``, split the user id off at the **last** ``-``, then the
market is what follows the **last** ``_`` -- except for the known account-wide names (``my_settlements`` ...), which
contain an underscore but no market.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

PRIVATE_PREFIX: Final = "private-"
PRIVATE_MARKET_CHANNELS: Final = ("my_orders", "my_trades", "live_trades")
PRIVATE_MARKET_EXTRAS: Final = ("live_order_trades",)
PRIVATE_ACCOUNT_CHANNELS: Final = ("my_settlements", "my_liquidations")
PRIVATE_ACCOUNT_EXTRAS: Final = ("my_token_settlements",)
_ACCOUNT_NAMES: Final = frozenset(PRIVATE_ACCOUNT_CHANNELS + PRIVATE_ACCOUNT_EXTRAS)
_PUBLIC_NO_MARKET: Final = frozenset({"announcements"})

_MARKET_RE: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]|[a-z]")
_UID_RE: Final = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name. ``user_id`` is set exactly for private channels."""

    name: str
    market: str | None
    user_id: str | None
    private: bool

    def __str__(self) -> str:
        return format_channel(self)


def is_valid_market(symbol: str) -> bool:
    """A lowercase market symbol: ``btcusd``, ``btcusd-perp``. Upper case and ``/`` are refused by the server."""
    return _MARKET_RE.fullmatch(symbol) is not None


def validate_market(symbol: str) -> str:
    if not is_valid_market(symbol):
        raise ValueError(f"invalid market symbol {symbol!r} (lowercase letters and digits, '-' separated)")
    return symbol


def _split_name_market(text: str, original: str) -> tuple[str, str | None]:
    if text in _ACCOUNT_NAMES or text in _PUBLIC_NO_MARKET:
        return text, None
    name, sep, market = text.rpartition("_")
    if not sep or not name or not market:
        raise ValueError(f"bad channel {original!r}: no market after '_'")
    if _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"bad channel {original!r}: bad name {name!r}")
    if not is_valid_market(market):
        raise ValueError(f"bad channel {original!r}: bad market {market!r}")
    return name, market


def parse_channel(text: str) -> Channel:
    """Parse a channel name; raise ``ValueError`` on bad syntax."""
    if text.startswith(PRIVATE_PREFIX):
        rest = text[len(PRIVATE_PREFIX) :]
        name_market, sep, uid = rest.rpartition("-")
        if not sep or _UID_RE.fullmatch(uid) is None:
            raise ValueError(f"bad private channel {text!r}: no numeric user id after the last '-'")
        name, market = _split_name_market(name_market, text)
        return Channel(name=name, market=market, user_id=uid, private=True)
    if not text:
        raise ValueError("empty channel name")
    name, market = _split_name_market(text, text)
    return Channel(name=name, market=market, user_id=None, private=False)


def format_channel(channel: Channel) -> str:
    base = channel.name if channel.market is None else f"{channel.name}_{channel.market}"
    if channel.private:
        return f"{PRIVATE_PREFIX}{base}-{channel.user_id}"
    return base


def private_channel(name: str, user_id: str, market: str | None = None) -> str:
    """``private_channel("my_trades", "314159", "btcusd-perp") == "private-my_trades_btcusd-perp-314159"``."""
    if _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"bad channel name {name!r}")
    if _UID_RE.fullmatch(user_id) is None:
        raise ValueError(f"bad user id {user_id!r}")
    if market is None:
        if name not in _ACCOUNT_NAMES:
            raise ValueError(f"channel {name!r} needs a market")
        return f"{PRIVATE_PREFIX}{name}-{user_id}"
    if name in _ACCOUNT_NAMES:
        raise ValueError(f"channel {name!r} is account-wide: no market")
    return f"{PRIVATE_PREFIX}{name}_{validate_market(market)}-{user_id}"


def channels_for(markets: Iterable[str], user_id: str, *, extras: bool = False) -> list[str]:
    """Every private channel to subscribe for these markets: per-market ones first, then the account-wide ones.

    ``extras`` adds ``live_order_trades`` (payload undocumented) and ``my_token_settlements``.
    """
    market_names = PRIVATE_MARKET_CHANNELS + (PRIVATE_MARKET_EXTRAS if extras else ())
    account_names = PRIVATE_ACCOUNT_CHANNELS + (PRIVATE_ACCOUNT_EXTRAS if extras else ())
    result: list[str] = []
    seen: set[str] = set()
    for market in markets:
        if market in seen:
            continue
        seen.add(market)
        result.extend(private_channel(name, user_id, market) for name in market_names)
    result.extend(private_channel(name, user_id) for name in account_names)
    return result
