"""Behaviour modes of the fake exchange: the ways the real Bitstamp was found (or may turn out) to differ from the
default fake, each off by default and switched on by a test (``open_fake_exchange(modes=...)``) or by
``tracker fake-exchange --mode NAME`` (repeatable). docs/fake.md describes each one; the names:

derivatives-refused      every derivatives endpoint answers HTTP 400 ``{"code":"API5506",...}`` (a spot-only account)
derivatives-flaky        every 3rd derivatives call answers HTTP 400 ``{"code":"API5502",...}``, the others normally
unsigned                 no successful signed answer carries ``X-Server-Auth-Signature`` (every endpoint)
error-200                ``order_status/`` and ``open_orders/`` answer their errors with HTTP 200 and a JSON error body
get-query-bare           a signed GET's query is checked in the string to sign without its leading ``?``
market-wide-chain        ``pre_event_id`` runs over other users' (unseen) events of the market: every one is a break
liquidations-untimed     my_liquidations alerts carry no ``microtimestamp``
orders-without-trade-account  my_orders frames and ``account_order_data/`` events carry no ``trade_account_id`` (as the
                         2022-2023 captures); the ``my_trades`` frames still do
settlement-ms            ``position_settlement_transactions/`` rows carry ``settlement_time`` in milliseconds
subaccount-header-ignored  ``X-Auth-Subaccount-Id`` is ignored: every request is answered for the main account
refuse-channel=NAME      subscribing NAME (``my_token_settlements``, ``my_trades_btcusd`` or the full channel name)
                         is always answered with a channel-less ``bts:error``; repeatable
all                      every mode above but ``subaccount-header-ignored``; ``derivatives-refused`` wins over
                         ``derivatives-flaky``, and the refused channel is ``my_token_settlements`` (subscribed by
                         tracker, never used by the fake)

Pure: a frozen value the servers read; the modes never change the account's story (same seed, same orders, fills,
settlements: the ground truth is the same with or without them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Final

FLAG_NAMES: Final = (
    "derivatives-refused",
    "derivatives-flaky",
    "unsigned",
    "error-200",
    "get-query-bare",
    "market-wide-chain",
    "liquidations-untimed",
    "orders-without-trade-account",
    "settlement-ms",
    "subaccount-header-ignored",
)
# Left out of ``all``: with it no client can see a sub-account at all (every answer is the main account's), so a run
# with ``all`` could not be compared with the sub-accounts' truth. Switch it on by name.
NOT_IN_ALL: Final = frozenset({"subaccount-header-ignored"})
REFUSE_CHANNEL: Final = "refuse-channel"
ALL: Final = "all"
ALL_REFUSED_CHANNEL: Final = "my_token_settlements"
DERIVATIVES_ENDPOINTS: Final = frozenset(
    {"trade_history", "position_settlement_transactions", "open_positions", "position_history", "position_status"}
)


@dataclass(frozen=True, slots=True)
class Modes:
    """Which modes are on (all off: the default fake). Build it directly or with :meth:`parse` from names."""

    derivatives_refused: bool = False
    derivatives_flaky: bool = False
    unsigned: bool = False
    error_200: bool = False
    get_query_bare: bool = False
    market_wide_chain: bool = False
    liquidations_untimed: bool = False
    orders_without_trade_account: bool = False
    settlement_ms: bool = False
    subaccount_header_ignored: bool = False
    refuse_channels: frozenset[str] = frozenset()
    flaky_every: int = 3  # derivatives-flaky: the Nth, 2Nth, ... derivatives call fails

    @classmethod
    def parse(cls, names: Iterable[str]) -> Modes:
        """From mode names (``--mode`` values; a comma-separated list counts as several). Raises ``ValueError`` on
        an unknown name."""
        flags: dict[str, bool] = {}
        refused: set[str] = set()
        for item in names:
            for name in (part.strip() for part in item.split(",")):
                if not name:
                    continue
                key, sep, value = name.partition("=")
                if name == ALL:
                    flags.update(dict.fromkeys((_attr(n) for n in FLAG_NAMES if n not in NOT_IN_ALL), True))
                    refused.add(ALL_REFUSED_CHANNEL)
                elif key == REFUSE_CHANNEL and sep and value.strip():
                    refused.add(value.strip())
                elif name in FLAG_NAMES:
                    flags[_attr(name)] = True
                else:
                    known = ", ".join((*FLAG_NAMES, REFUSE_CHANNEL + "=NAME", ALL))
                    raise ValueError(f"unknown fake-exchange mode {name!r}; known: {known}")
        return replace(cls(), **flags, refuse_channels=frozenset(refused))

    def names(self) -> list[str]:
        """The modes that are on, as names (``parse(m.names()) == m`` for the default ``flaky_every``)."""
        on = [n for n in FLAG_NAMES if getattr(self, _attr(n))]
        return on + [f"{REFUSE_CHANNEL}={c}" for c in sorted(self.refuse_channels)]

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "flaky_every")

    def refuses(self, channel: str) -> bool:
        """Whether subscribing ``channel`` is refused: named in full, or without ``private-`` and the user-id suffix
        (``my_trades_btcusd-perp`` for ``private-my_trades_btcusd-perp-314159``)."""
        if not self.refuse_channels:
            return False
        bare = channel.removeprefix("private-").rsplit("-", 1)[0] if channel.startswith("private-") else channel
        return channel in self.refuse_channels or bare in self.refuse_channels

    def derivatives_refusal(self, endpoint: str, call_number: int) -> tuple[str, str] | None:
        """The (code, message) a derivatives ``endpoint`` answers on its ``call_number``-th derivatives call (from
        1), or None to answer normally."""
        if endpoint not in DERIVATIVES_ENDPOINTS:
            return None
        if self.derivatives_refused:
            return "API5506", "Trade account does not support derivatives."
        if self.derivatives_flaky and call_number % self.flaky_every == 0:
            return "API5502", "Something went wrong, try again later."
        return None


def _attr(name: str) -> str:
    return name.replace("-", "_")
