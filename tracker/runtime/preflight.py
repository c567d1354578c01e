"""Checks ``tracker run`` makes before it subscribes anything, so a mistake is one clear line instead of silence.

Markets: the server acknowledges a subscription to a channel that does not exist and then sends nothing
(docs/bitstamp.md §1.3), so a typo in ``TRACKER_MARKETS`` would look like a quiet account. Each configured market is
checked against the public ``markets/`` list first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tracker.config import ConfigError, Settings
from tracker.exchange.rest import BitstampClient
from tracker.runtime.polite_api import call_at_start


def unknown_markets(wanted: Sequence[str], rows: Sequence[Any]) -> tuple[list[str], list[str]]:
    """(the wanted markets the exchange does not list, every market it lists)."""
    known = sorted(
        {str(row.get("market_symbol") or row.get("url_symbol") or "").lower() for row in rows if isinstance(row, dict)}
        - {""}
    )
    return [m for m in wanted if m not in known], known


async def check_markets(settings: Settings, client: BitstampClient | None = None) -> None:
    """Raise ``ConfigError`` naming the first configured market the exchange does not list (no-op when discovering)."""
    if not settings.markets:
        return
    key, secret = settings.require_credentials()
    own = client is None
    client = client or BitstampClient(settings.api_url, key, secret)
    try:
        rows = await call_at_start("markets/", client.markets)
    finally:
        if own:
            await client.aclose()
    missing, known = unknown_markets(settings.markets, rows)
    if missing:
        sample = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        raise ConfigError(
            f"unknown market {missing[0]}: the exchange does not list it (it has {sample});"
            " fix TRACKER_MARKETS or --markets"
        )


async def account_of(settings: Settings) -> str:
    """The Bitstamp account (user id) ``settings``' key belongs to: one signed token call (its errors are the run's:
    a wrong secret is an ``AuthError`` saying so)."""
    key, secret = settings.require_credentials()
    async with BitstampClient(settings.api_url, key, secret) as client:
        return (await call_at_start("websockets_token/", client.websockets_token)).user_id


def same_accounts(users: Iterable[tuple[int, str | None]]) -> str | None:
    """The error for config entries whose keys belong to one Bitstamp account, else None. ``users``: each entry's
    place in the file (from 1) and its account (None: not known). The places are the entries' own, not their
    positions in ``users``: during a reload the accounts running are not every place of the file."""
    first: dict[str, int] = {}
    for number, user in sorted(users, key=lambda pair: pair[0]):
        if user is None:
            continue
        if (earlier := first.setdefault(user, number)) != number:
            return (
                f"accounts {earlier} and {number} of [[accounts]] have keys of one Bitstamp account (user {user}):"
                " list each account once"
            )
    return None
