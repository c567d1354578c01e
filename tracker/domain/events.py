"""Typed domain events: what one log entry means. ``bitstamp.parse.parse_entry`` makes exactly one per entry.

Every event carries ``seq`` and ``account`` of its log entry. Money is ``Decimal``, ids are text, times are aware UTC.

Events are frozen ``msgspec.Struct``s, as the projected rows are (``rows.py`` says why: a struct's ``__init__`` is C,
a third of a ``frozen.fast_init`` dataclass's; the parser makes one per log entry). ``gc=False``: their values are
text, numbers, times, ``None`` and tuples of other events' parts, so no reference cycle can pass through one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec

from tracker.domain.log import Source

Side = Literal["buy", "sell"]
OrderEventKind = Literal["created", "changed", "deleted", "replaced", "stop_active", "stop_inactive"]
SettlementKind = Literal["settlement", "insurance_fund_premium"]
LiquidationKind = Literal[
    "im_breach_warning", "im_breach", "mm_breach_warning", "liquidation_start", "liquidation_concluded"
]


class OrderEvent(msgspec.Struct, frozen=True, gc=False):
    """A ``my_orders`` event (WS) or its ``account_order_data/`` replay (REST).

    ``amount_remaining`` is ``amount_str``; ``amount_traded`` is per step (not cumulative). ``price`` is ``None``
    when the event carries a market-order placeholder (buy ``999999999…``, sell ``0``): ``price_is_placeholder``.
    ``is_market`` marks a market order (placeholder price or subtype 1/2/7).
    """

    seq: int
    account: str
    source: Source
    kind: OrderEventKind
    order_id: str
    market: str
    side: Side | None
    amount_remaining: Decimal
    amount_traded: Decimal | None
    amount_at_create: Decimal | None
    price: Decimal | None
    price_is_placeholder: bool
    is_market: bool
    client_order_id: str | None
    orig_order_id: str | None
    event_id: str | None
    pre_event_id: str | None
    order_source: str | None
    occurred_at: datetime | None
    received_at: datetime
    trade_account_id: str | None = None  # 0 = the main account (docs/bitstamp.md §2.1)
    is_liquidation: bool | None = None
    reduce_only: bool | None = None  # perp only; present when true
    stop_price: Decimal | None = None  # stop and take-profit orders


class Fill(msgspec.Struct, frozen=True, gc=False):
    """One execution of one of the user's orders (``my_trades`` ``trade``, REST ``user_transactions`` type 2, or
    derivatives ``trade_history``). ``fee`` is in the market's quote currency."""

    seq: int
    account: str
    source: Source
    trade_id: str
    order_id: str | None
    market: str | None
    side: Side
    amount: Decimal
    price: Decimal
    fee: Decimal
    executed_at: datetime
    position_id: str | None
    is_liquidation: bool
    trade_account_id: str | None = None
    trade_type: str | None = None  # "ORDERBOOK"; REST trade_history also LIQUIDATION, ADL, ... (§2.2, §5.7)
    client_order_id: str | None = None


class SelfTrade(msgspec.Struct, frozen=True, gc=False):
    """Self-trade prevention offset between two of the user's orders: not a fill, no fee."""

    seq: int
    account: str
    market: str
    buy_order_id: str
    sell_order_id: str
    amount: Decimal
    price: Decimal | None
    occurred_at: datetime
    time_from_receipt: bool = False  # the frame carried no time: ``occurred_at`` is when tracker received it
    trade_type: int | None = None  # the frame's ``type`` (undocumented values; 0 seen)
    buyers_trade_account_id: str | None = None
    sellers_trade_account_id: str | None = None


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """A perp settlement or insurance-fund premium (WS ``my_settlements`` or REST). Amounts are signed."""

    seq: int
    account: str
    source: Source
    kind: SettlementKind
    transaction_id: str
    position_id: str | None
    ccy: str | None
    amount: Decimal
    occurred_at: datetime | None
    price_component: Decimal | None = None
    trading_fee_component: Decimal | None = None
    liquidation_fee_component: Decimal | None = None
    funding_component: Decimal | None = None
    socialized_loss_component: Decimal | None = None
    settlement_price: Decimal | None = None
    strike_price: Decimal | None = None
    settlement_type: str | None = None


class LiquidationAlert(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    kind: LiquidationKind
    position_id: str
    margin_mode: str | None
    occurred_at: datetime
    initial_margin_ratio: Decimal | None
    maintenance_margin_ratio: Decimal | None
    time_from_receipt: bool = False  # the alert carried no microtimestamp: ``occurred_at`` is its receipt time
    alert_type: str | None = None  # repeats the event name (§2.6)
    trade_account_id: str | None = None


class TokenReady(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    action: str | None
    order_id: str | None
    instrument: str | None
    currency: str | None
    quantity: Decimal | None
    occurred_at: datetime | None


class OrderStatusSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A REST ``order_status/`` answer (status ``Open``/``Finished``/``Canceled``/``Expired``/...)."""

    seq: int
    account: str
    order_id: str
    market: str | None
    status: str
    side: Side | None
    amount_remaining: Decimal | None
    client_order_id: str | None
    transaction_count: int
    received_at: datetime


class AccountTransaction(msgspec.Struct, frozen=True, gc=False):
    """A REST ``user_transactions/`` row that is not a fill (deposit, withdrawal, transfer, staking, ...).

    Logged and counted; no projected table reads it yet.
    """

    seq: int
    account: str
    transaction_id: str
    type_code: str
    occurred_at: datetime | None


class LedgerLeg(msgspec.Struct, frozen=True, gc=False):
    """One currency movement of a ledger row: ``leg`` ``amount`` (the signed value of one currency key) or ``fee``
    (``amount`` = -fee, ``fee`` = fee; ``currency`` ``None`` when the fee currency cannot be told)."""

    leg: Literal["amount", "fee"]
    currency: str | None
    amount: Decimal
    fee: Decimal | None


class LedgerRow(msgspec.Struct, frozen=True, gc=False):
    """One row of the account-wide ``user_transactions/`` (log event ``rest_ledger_row``) with its legs.

    ``trade_account_id`` comes from the entry's channel (``ledger_channels``). ``type_code`` is the raw code as text
    (an int and a string are the same code); ``type`` its name (``unknown`` for a code tracker does not know).
    ``notes`` are counter names the fold counts (``ledger_type_unknown:<code>``, ``fee_currency_unknown``,
    ``ledger_derivatives_fill``, ...): things worth knowing that no column shows."""

    seq: int
    account: str
    trade_account_id: str
    entry_id: str
    type_code: str
    type: str
    subtype: str | None
    occurred_at: datetime | None
    market: str | None  # the pair as ``btcusd`` when the row has a pair-rate key
    rate: Decimal | None
    order_id: str | None
    trade_id: str | None  # = entry_id for type 2
    fee: Decimal | None
    legs: tuple[LedgerLeg, ...]
    notes: tuple[str, ...]


class BalanceLine(msgspec.Struct, frozen=True, gc=False):
    currency: str
    total: Decimal
    available: Decimal | None
    reserved: Decimal | None


class BalanceSnapshot(msgspec.Struct, frozen=True, gc=False):
    """One ``account_balances/`` answer of one trade account (log event ``rest_balances``), taken at a consistent cut
    of the ledger (docs/semantics.md): the fold checks it against the legs with a smaller seq."""

    seq: int
    account: str
    trade_account_id: str
    received_at: datetime
    lines: tuple[BalanceLine, ...]
    notes: tuple[str, ...] = ()


class CryptoTransaction(msgspec.Struct, frozen=True, gc=False):
    """One row of ``crypto-transactions/`` (log event ``rest_crypto_transaction``; main account only).
    ``list_name``: ``deposits``, ``withdrawals`` or ``ripple_iou_transactions``."""

    seq: int
    account: str
    list_name: str
    currency: str | None
    network: str | None
    address: str | None
    txid: str | None  # the on-chain hash [D: "Transaction hash"]
    amount: Decimal
    occurred_at: datetime | None


class WithdrawalRequest(msgspec.Struct, frozen=True, gc=False):
    """One state of one ``withdrawal-requests/`` row (log event ``rest_withdrawal_request``: each status change is a
    new fact). ``txid`` is "Bitstamp's transaction id" [D]; ``transaction_id`` the on-chain id [D]."""

    seq: int
    account: str
    trade_account_id: str
    request_id: str
    occurred_at: datetime | None
    method: int | None  # the spec's ``type`` (0 SEPA, 1 BTC, ...)
    currency: str | None
    network: str | None
    amount: Decimal | None
    status: int | None
    txid: str | None
    address: str | None
    transaction_id: str | None


class StatementRow(msgspec.Struct, frozen=True, gc=False):
    """One row of the user's own Bitstamp CSV statement (``tracker import-statement``, event ``statement_row``).

    A witness compared with the ledger, never a ledger entry: it builds no legs (the same movement would count twice;
    docs/export.md). The fold reads nothing from it; it is a known event so that it is not counted as unknown."""

    seq: int
    account: str
    trade_account_id: str
    statement_format: str  # "bitstamp" or "bitstamp-legacy" (the channel's)
    row_id: str | None  # Bitstamp's ID column (new format; a legacy row exported by tracker has one too)


class Lifecycle(msgspec.Struct, frozen=True, gc=False):
    """A tracker-made connection event: connected, subscribed, subscribe_failed, ws_error, reconnect_requested,
    closed, stalled, reconciled."""

    seq: int
    account: str
    kind: str
    channel: str
    connection_id: str | None
    received_at: datetime


class GapDetected(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    market: str | None
    channel: str
    detail: str
    received_at: datetime


class BackfillCompleted(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    market: str | None
    channel: str
    detail: str
    received_at: datetime


class Discrepancy(msgspec.Struct, frozen=True, gc=False):
    """Tracker-made (e.g. by reconciliation). ``discrepancy_id`` names it so a later resolution can close it."""

    seq: int
    account: str
    discrepancy_id: str
    kind: str
    entity: str
    detail: str


class DiscrepancyResolved(msgspec.Struct, frozen=True, gc=False):
    seq: int
    account: str
    discrepancy_id: str
    detail: str


class DiscrepancyAcknowledged(msgspec.Struct, frozen=True, gc=False):
    """A person looked at an open discrepancy and recorded why it may stay (``tracker discrepancies ack``)."""

    seq: int
    account: str
    discrepancy_id: str
    note: str
    by: str


class Unknown(msgspec.Struct, frozen=True, gc=False):
    """Anything the parser cannot map: an unknown event name, a payload that does not parse. Never an exception."""

    seq: int
    account: str
    source: Source
    channel: str
    event: str
    reason: str


DomainEvent = (
    OrderEvent
    | Fill
    | SelfTrade
    | Settlement
    | LiquidationAlert
    | TokenReady
    | OrderStatusSnapshot
    | AccountTransaction
    | LedgerRow
    | BalanceSnapshot
    | CryptoTransaction
    | WithdrawalRequest
    | StatementRow
    | Lifecycle
    | GapDetected
    | BackfillCompleted
    | Discrepancy
    | DiscrepancyResolved
    | DiscrepancyAcknowledged
    | Unknown
)
