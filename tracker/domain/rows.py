"""Projected rows: the read models of docs/semantics.md plus the hidden per-entity state the fold needs.

Every piece of projection state is one of these rows, so the store can persist the state as tables and reload it
(``ProjectionState.to_rows`` / ``from_rows``); a rebuild equals the incremental result row for row. Columns are
plain values (text, ``Decimal``, int, bool, aware ``datetime``, ``None``). Each row type names its key columns in
``KEY``; ``TABLES`` maps table name → row type.

Rows are frozen ``msgspec.Struct``s, not frozen dataclasses: the fold makes a new row for every change (an order
event an ``OrderRow`` and two ``StreamRow``s, a fill three rows), and a struct's ``__init__`` is C: a 24-field
``OrderRow`` ~2.4k machine instructions against ~7.7k for the dataclass even with ``frozen.fast_init`` (a rebuild
-8.1 % in machine instructions, docs/storage.md "Rebuild, fifth round"). The same semantics where the fold and the
store use them: positional and keyword construction, ``==`` and ``hash`` by type and values, assignment refused
(``AttributeError``), ``msgspec.structs.fields`` / ``replace`` for ``dataclasses.fields`` / ``replace``.
``gc=False``: their values are text, numbers, times and ``None``, so no reference cycle can pass through a row, and
the cyclic collector need not track the millions a rebuild makes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar, Final, Literal

import msgspec

from tracker.domain.events import Side

OrderStatus = Literal["open", "filled", "cancelled", "replaced"]
PositionStatus = Literal["open", "closed", "liquidating", "liquidated"]
DiscrepancyStatus = Literal["open", "acknowledged", "resolved"]


class OrderRow(msgspec.Struct, frozen=True, gc=False):
    """``v_orders``. Columns after ``updated_at`` are hidden fold state."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "order_id")
    account: str
    order_id: str
    market: str
    side: Side | None  # None until an event names it (order_type missing or unknown)
    amount: Decimal
    amount_remaining: Decimal
    amount_filled: Decimal
    status: OrderStatus
    price: Decimal | None
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime
    order_source: str | None
    last_remaining: Decimal  # amount_str of the latest event
    event_count: int
    remaining_is_placeholder: bool  # only event so far is a market order's order_created with remaining 0
    seen_event_ids: str  # space-separated event_ids already applied (REST replays of the same event are skipped)
    first_seq: int
    last_seq: int
    # Public again (v_orders), first-learned: wire fields added after the hidden ones (docs/sql.md).
    trade_account_id: str | None
    is_liquidation: bool | None
    reduce_only: bool | None
    stop_price: Decimal | None
    creation_seen: bool | None  # hidden: an event of its creation was applied (never: live before tracking)


class OrderLinkRow(msgspec.Struct, frozen=True, gc=False):
    """Hidden: what other streams say about an order, whether or not its own events arrived yet."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "order_id")
    account: str
    order_id: str
    fills_count: int
    fills_sum: Decimal
    self_trade_offset: Decimal
    replaced_by: str | None
    mismatch_id: str | None  # the open order_fills_mismatch discrepancy, if any


class FillRow(msgspec.Struct, frozen=True, gc=False):
    """``v_fills``: one row per (account, trade_id); ``source`` and the values are the first-learned ones."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_id")
    account: str
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
    source: str
    seq: int
    trade_account_id: str | None
    trade_type: str | None
    client_order_id: str | None


class FeesDailyRow(msgspec.Struct, frozen=True, gc=False):
    """``v_fees_daily``, maintained per new fill. ``market`` is ``""`` for a fill without a known market, and
    ``trade_account_id`` ``""`` for a fill whose trade account is unknown (the view shows NULL). A fill whose trade
    account is learned later moves from the ``""`` row to its account's; a row can so fall to ``fills`` 0 (the view
    hides it: the fold never deletes)."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_account_id", "day", "market")
    account: str
    trade_account_id: str  # "" = unknown (NULL in v_fees_daily)
    day: str  # YYYY-MM-DD of executed_at, UTC
    market: str
    fills: int
    volume: Decimal  # sum of amount * price (quote currency)
    base_volume: Decimal  # sum of amount
    fees: Decimal


class SelfTradeRow(msgspec.Struct, frozen=True, gc=False):
    KEY: ClassVar[tuple[str, ...]] = ("account", "market", "buy_order_id", "sell_order_id", "occurred_us")
    account: str
    market: str
    buy_order_id: str
    sell_order_id: str
    occurred_us: int
    amount: Decimal
    price: Decimal | None
    occurred_at: datetime
    seq: int
    trade_type: int | None
    buyers_trade_account_id: str | None
    sellers_trade_account_id: str | None
    time_from_receipt: bool | None  # the frame carried no time: occurred_at is its receipt time (None: before 0005)


class SettlementRow(msgspec.Struct, frozen=True, gc=False):
    """``v_settlements``: first-learned per (account, kind, transaction_id)."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "kind", "transaction_id")
    account: str
    kind: str
    transaction_id: str
    position_id: str | None
    ccy: str | None
    amount: Decimal
    occurred_at: datetime | None
    price_component: Decimal | None
    trading_fee_component: Decimal | None
    liquidation_fee_component: Decimal | None
    funding_component: Decimal | None
    socialized_loss_component: Decimal | None
    settlement_price: Decimal | None
    strike_price: Decimal | None
    settlement_type: str | None
    source: str
    seq: int


class LiquidationRow(msgspec.Struct, frozen=True, gc=False):
    KEY: ClassVar[tuple[str, ...]] = ("account", "position_id", "event", "occurred_us")
    account: str
    position_id: str
    event: str
    occurred_us: int
    margin_mode: str | None
    occurred_at: datetime
    initial_margin_ratio: Decimal | None
    maintenance_margin_ratio: Decimal | None
    seq: int
    alert_type: str | None
    trade_account_id: str | None
    time_from_receipt: bool | None  # no microtimestamp: occurred_at is its receipt time (None: before 0005)


class PositionRow(msgspec.Struct, frozen=True, gc=False):
    """``v_positions``. Columns after ``realised_pnl`` are hidden fold state."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "position_id")
    account: str
    position_id: str
    market: str | None
    side: str | None  # long | short; None before any fill
    size: Decimal
    status: PositionStatus
    entry_price: Decimal | None
    fees: Decimal
    realised_pnl: Decimal
    net_size: Decimal  # signed: sum(buy) - sum(sell)
    first_side: str | None
    entry_cost: Decimal  # sum of amount * price of the quantity that increased the position
    entry_qty: Decimal
    liquidation_state: str  # "" | "liquidating" | "liquidated"
    # Public again (v_positions, last column): first-learned from the position's fills and liquidation alerts.
    trade_account_id: str | None
    # Hidden (since 0012): the newest fill folded, in exchange order (``projection_positions.exchange_later``). None
    # with ``first_side`` set: entry_cost, entry_qty and first_side wait for ``refold_positions`` (a fill arrived
    # older than the newest folded one, or a row from before 0012).
    last_trade_id: str | None


class DiscrepancyRow(msgspec.Struct, frozen=True, gc=False):
    KEY: ClassVar[tuple[str, ...]] = ("account", "discrepancy_id")
    account: str
    discrepancy_id: str
    kind: str
    entity: str
    detail: str
    status: DiscrepancyStatus
    opened_seq: int
    resolved_seq: int | None
    acknowledged_seq: int | None  # the log entry of the acknowledgement (``tracker discrepancies ack``)
    note: str | None  # its note and who wrote it
    trade_account_id: str | None = None  # the ledger's discrepancies name their trade account (None: not one)


class StreamRow(msgspec.Struct, frozen=True, gc=False):
    """The ``event_id``/``pre_event_id`` chain of one private order stream (ws only); ``order_source`` ``"*"`` is the
    market-wide stream (both sources)."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "market", "order_source")
    account: str
    market: str
    order_source: str  # "" when the frame had none; "*" for the market-wide row
    last_event_id: str
    events: int
    chain_breaks: int
    last_break_seq: int | None


class CounterRow(msgspec.Struct, frozen=True, gc=False):
    """Counted things no table shows: unknown events, non-fill transactions, lifecycle events, ..."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "name")
    account: str
    name: str
    value: int
    last_seq: int


# --- the ledger (issue 15; tracker/domain/projection_ledger.py, docs/sql.md "Ledger and balances") ----------------


class LedgerEntryRow(msgspec.Struct, frozen=True, gc=False):
    """Hidden: one ledger row (``rest_ledger_row``) per (account, entry_id): which trade account it was applied to
    (a second one is ``subaccount_header_ignored``), and its fee for ``v_transfers``."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "entry_id")
    account: str
    entry_id: str
    trade_account_id: str
    type_code: str
    type: str
    subtype: str | None
    occurred_at: datetime | None
    fee: Decimal | None
    legs: int
    seq: int


class LedgerLegRow(msgspec.Struct, frozen=True, gc=False):
    """``v_ledger``: one currency movement. ``balance_after`` is the running balance of its trade account and
    currency in log order (``None`` for a leg without a currency). The last two columns are hidden (``v_transfers``
    matches by them)."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "entry_id", "leg_no")
    account: str
    entry_id: str
    leg_no: int  # 0, 1, ... within the entry
    trade_account_id: str
    leg: str  # amount | fee
    occurred_at: datetime | None
    type: str
    type_code: str
    subtype: str | None
    currency: str | None
    amount: Decimal
    fee: Decimal | None
    market: str | None
    rate: Decimal | None
    order_id: str | None
    trade_id: str | None
    source: str
    seq: int
    balance_after: Decimal | None
    occurred_us: int | None  # hidden: occurred_at in µs (time windows in SQL, same on both backends)
    abs_amount: Decimal  # hidden: |amount| canonical (exact equality on both backends; domain.ledger.amount_key)


class BalanceRow(msgspec.Struct, frozen=True, gc=False):
    """``v_balances`` (rows with ``entries > 0``): the balance of one trade account and currency, maintained leg by
    leg. Columns after ``last_seq`` are hidden check state."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_account_id", "currency")
    account: str
    trade_account_id: str
    currency: str
    balance: Decimal
    as_of: datetime | None  # occurred_at of the latest leg
    last_entry_id: str | None
    entries: int  # ledger entries that moved it (0: known from a snapshot only)
    last_seq: int | None
    negative_id: str | None  # the open negative_balance discrepancy
    mismatch_id: str | None  # the open balance_mismatch discrepancy
    first_entry_since_check: str | None  # the first entry that moved it after the last agreeing check


class BalanceCheckRow(msgspec.Struct, frozen=True, gc=False):
    """``v_balance_checks``: one (snapshot, currency). ``difference`` and ``status`` are computed exactly here."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_account_id", "snapshot_seq", "currency")
    account: str
    trade_account_id: str
    currency: str
    snapshot_at: datetime
    snapshot_seq: int
    exchange_total: Decimal | None  # None: the snapshot lacks a currency the ledger holds
    exchange_available: Decimal | None
    exchange_reserved: Decimal | None
    computed_total: Decimal
    difference: Decimal  # exchange_total - computed_total (a missing exchange_total counts as 0)
    status: str  # agrees | differs | missing_on_exchange
    first_entry_id: str | None


class LedgerAccountRow(msgspec.Struct, frozen=True, gc=False):
    """Hidden: the currencies one trade account's ledger holds (space-separated, sorted): a snapshot checks them all
    (the fold may not iterate the balances, see the read rule), and its snapshot count."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_account_id")
    account: str
    trade_account_id: str
    currencies: str
    snapshots: int
    last_snapshot_seq: int | None


class CryptoTransactionRow(msgspec.Struct, frozen=True, gc=False):
    """Hidden (read by ``v_transfers``): one ``crypto-transactions/`` row, per log entry."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "seq")
    account: str
    seq: int
    list_name: str  # deposits | withdrawals | ripple_iou_transactions
    currency: str | None
    network: str | None
    address: str | None
    txid: str | None
    amount: Decimal
    occurred_at: datetime | None
    occurred_us: int | None
    abs_amount: Decimal


class WithdrawalRequestRow(msgspec.Struct, frozen=True, gc=False):
    """Hidden (read by ``v_transfers``): the latest state (by log seq) of one withdrawal request."""

    KEY: ClassVar[tuple[str, ...]] = ("account", "trade_account_id", "request_id")
    account: str
    trade_account_id: str
    request_id: str
    occurred_at: datetime | None
    method: int | None
    currency: str | None
    network: str | None
    amount: Decimal | None
    signed_amount: Decimal | None  # hidden: -amount, signed as the ledger's withdrawals (v_transfers shows it)
    status: int | None
    status_name: str
    txid: str | None
    address: str | None
    transaction_id: str | None
    seq: int  # the latest state's entry
    first_seq: int
    states: int  # distinct states logged


Row = (
    OrderRow
    | OrderLinkRow
    | FillRow
    | FeesDailyRow
    | SelfTradeRow
    | SettlementRow
    | LiquidationRow
    | PositionRow
    | DiscrepancyRow
    | StreamRow
    | CounterRow
    | LedgerEntryRow
    | LedgerLegRow
    | BalanceRow
    | BalanceCheckRow
    | LedgerAccountRow
    | CryptoTransactionRow
    | WithdrawalRequestRow
)

TABLES: Final[dict[str, type]] = {
    "orders": OrderRow,
    "order_links": OrderLinkRow,
    "fills": FillRow,
    "fees_daily": FeesDailyRow,
    "self_trades": SelfTradeRow,
    "settlements": SettlementRow,
    "liquidations": LiquidationRow,
    "positions": PositionRow,
    "discrepancies": DiscrepancyRow,
    "streams": StreamRow,
    "counters": CounterRow,
    "ledger_entries": LedgerEntryRow,
    "ledger_legs": LedgerLegRow,
    "balances": BalanceRow,
    "balance_checks": BalanceCheckRow,
    "ledger_accounts": LedgerAccountRow,
    "crypto_transactions": CryptoTransactionRow,
    "withdrawal_requests": WithdrawalRequestRow,
}


def row_key(row: Row) -> tuple[object, ...]:
    return tuple(getattr(row, name) for name in row.KEY)
