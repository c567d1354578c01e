"""Which fields tracker expects in each answer and frame, for ``tracker doctor``'s "known / unknown / missing" (pure).

For every REST endpoint row and websocket event tracker reads, three sets (from docs/bitstamp.md §2 and §5, which
say where each field was documented or seen):

- ``required``: the parser cannot use a row without them (a missing one quarantines the row or fails the walk);
- ``read``: optional fields the parser reads when present;
- ``documented``: fields the docs list that tracker keeps only in the raw payload.

A field outside all three is *unknown*: the exchange sends something tracker has never heard of. It is still stored
(payloads are kept byte for byte) but no view shows it: worth a bug report. Dynamic keys (one per currency, and the
``<base>_<quote>`` rate key of ``user_transactions/``) are recognised by shape, not by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class Expected:
    required: frozenset[str]
    read: frozenset[str] = frozenset()
    documented: frozenset[str] = frozenset()
    dynamic: bool = False  # currency keys and a pair-rate key are expected (user_transactions/)

    @property
    def known(self) -> frozenset[str]:
        return self.required | self.read | self.documented


def _e(required: str, read: str = "", documented: str = "", *, dynamic: bool = False) -> Expected:
    return Expected(frozenset(required.split()), frozenset(read.split()), frozenset(documented.split()), dynamic)


# The frame envelope of every websocket event (docs/bitstamp.md §1.3, §2).
ENVELOPE: Final = _e("event channel data", "event_id pre_event_id order_source", "trade_account_id")

CATALOG: Final[dict[str, Expected]] = {
    # --- websocket: the ``data`` object of each private event (§2.1-§2.7)
    "ws:my_orders": _e(
        "id amount",
        "id_str amount_str order_type order_subtype datetime microtimestamp amount_traded amount_at_create price"
        " price_str client_order_id orig_order_id orig_order_id_str is_liquidation",
        "trade_account_id reduce_only stop_price activation_price trailing_delta",
    ),
    "ws:my_trades": _e(
        "id amount price",
        "id_str order_id order_id_str fee side microtimestamp position_id is_liquidation",
        "client_order_id trade_account_id trade_uti trade_type",
    ),
    "ws:live_trades": _e(
        "buy_order_id sell_order_id amount",
        "buy_order_id_str sell_order_id_str amount_str price price_str timestamp microtimestamp",
        "type sellers_trade_account_id buyers_trade_account_id",
    ),
    "ws:live_order_trades": _e("", "", "id amount price microtimestamp"),  # payload undocumented (§2.4)
    "ws:my_settlements": _e("tnx_id", "id ts price ccy as ap atf alf afu asl sp typ amount", ""),
    "ws:my_liquidations": _e(
        "position_id",
        "microtimestamp alert_type margin_mode initial_margin_ratio maintenance_margin_ratio",
        "trade_account_id",
    ),
    "ws:my_token_settlements": _e(
        "order_id", "order_id_str action instrument token_security_currency tokens_quantity datetime", ""
    ),
    # --- REST: one row of each answer (§4, §5)
    "rest:websockets_token": _e("token user_id", "valid_sec"),
    "rest:user_transactions": _e(
        "id datetime type",
        "fee order_id self_trade self_trade_order_id",
        "margin_mode leverage_rate trade_account_id",
        dynamic=True,
    ),
    "rest:open_orders": _e(
        "id",
        "datetime type price amount amount_at_create currency_pair market client_order_id",
        "subtype limit_price margin_mode leverage reduce_only stop_price id_str",
    ),
    "rest:account_order_data": _e("event data", "event_id pre_event_id order_source", "channel trade_account_id"),
    "rest:account_balances": _e("currency", "total available reserved", "withdrawal_fee"),
    # the ledger endpoints of issue 15 (parse_ledger; /tmp spec extract: CryptoTransaction, WithdrawalRequestsResponse)
    "rest:crypto_transactions": _e(
        "amount", "currency network destinationAddress destination_address txid datetime", "id status pending_reason"
    ),
    "rest:withdrawal_requests": _e("id", "datetime type currency network amount status txid address transaction_id"),
    "rest:trade_history": _e(
        "trade_id order_id side amount price",
        "trade_id_str fee position_id datetime market",
        "self_trade_order_id liquidation_fee fee_currency margin_mode leverage type self_trade_type trade_uti",
    ),
    "rest:position_settlement_transactions": _e(
        "transaction_id",
        "position_id settlement_time settlement_type settlement_price market pnl_currency pnl_settled"
        " pnl_component_price pnl_component_fees pnl_component_funding pnl_component_socialized_loss strike_price"
        " fees_component_trading fees_component_liquidation",
        "market_type margin_mode size",
    ),
    "rest:markets": _e(
        "market_symbol",
        "name base_currency counter_currency base_decimals counter_decimals",
        "url_symbol instant_order_counter_decimals minimum_order_value trading description market_type"
        " instant_and_market_orders contract_size isin maximum_order_amount maximum_order_value minimum_order_amount"
        " payoff_type tick_size underlying_asset",
    ),
}

# Optional fields tracker leans on for a feature: when frames of a kind came and none carried one, ``tracker doctor``
# says so, with what tracker does without it (``FieldReport.absent``). Each: the names that count (a field in
# ``data``, or ``(envelope) name`` beside it), the one shown, and the consequence (docs/bitstamp.md §2.1, §2.2).
LEANED_ON: Final[dict[str, tuple[tuple[frozenset[str], str, str], ...]]] = {
    "ws:my_orders": (
        (
            frozenset({"trade_account_id", "(envelope) trade_account_id"}),
            "trade_account_id",
            "an order takes the trade account its fills name (docs/semantics.md, Orders)",
        ),
        (
            frozenset({"(envelope) pre_event_id"}),
            "pre_event_id",
            "no order chain: frames withheld while the connection stays up are found by the periodic reconciliation",
        ),
    ),
    "ws:my_trades": (
        (
            frozenset({"trade_account_id", "(envelope) trade_account_id"}),
            "trade_account_id",
            "a fill takes its order's trade account, else counts as unknown in v_fees_daily",
        ),
    ),
}

_CURRENCY: Final = re.compile(r"[a-z0-9]{2,12}")
_PAIR_RATE: Final = re.compile(r"[a-z0-9]{2,12}_[a-z0-9]{2,12}")


@dataclass(frozen=True, slots=True)
class FieldReport:
    known: tuple[str, ...]
    unknown: tuple[str, ...]
    missing: tuple[str, ...]
    samples: int = 0  # rows or frames looked at
    absent: tuple[tuple[str, str], ...] = ()  # (field, what tracker does without it): ``LEANED_ON`` none carried

    def as_data(self) -> dict[str, object]:
        return {
            "known": list(self.known),
            "unknown": list(self.unknown),
            "missing": list(self.missing),
            "samples": self.samples,
            "absent": [{"field": name, "meaning": meaning} for name, meaning in self.absent],
        }


@dataclass
class FieldTally:
    """Fields seen over several rows of one kind (``missing``: a required field some row lacked; ``envelope``: the
    frames' known top-level keys, as ``(envelope) name``, which count for ``LEANED_ON`` only)."""

    kind: str
    seen: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    samples: int = 0
    envelope: set[str] = field(default_factory=set)

    def add(self, row: Mapping[str, object]) -> None:
        expected = CATALOG.get(self.kind)
        self.samples += 1
        self.seen.update(row)
        if expected is not None:
            self.missing.update(name for name in expected.required if name not in row)

    def add_all(self, rows: Iterable[object]) -> None:
        for row in rows:
            if isinstance(row, Mapping):
                self.add(row)

    def report(self) -> FieldReport:
        expected = CATALOG.get(self.kind, Expected(frozenset()))
        known = {name for name in self.seen if name in expected.known or _dynamic(expected, name)}
        present = self.seen | self.envelope
        absent = tuple(
            (shown, meaning)
            for names, shown, meaning in LEANED_ON.get(self.kind, ())
            if self.samples and not names & present
        )
        return FieldReport(
            tuple(sorted(known)), tuple(sorted(self.seen - known)), tuple(sorted(self.missing)), self.samples, absent
        )


def _dynamic(expected: Expected, name: str) -> bool:
    return expected.dynamic and bool(_CURRENCY.fullmatch(name) or _PAIR_RATE.fullmatch(name))
