"""Which projection rows an event will read: the keys the store prefetches before folding a batch.

Pure (no I/O), beside the fold it mirrors: what ``tracker.domain.projection.apply`` looks up (``get`` / ``in``, the
read rule). It does not need to be perfect, because the store loads any row the fold asks for that was not
prefetched (``tracker.store.projection_prefetch.LazyTable``): a miss only costs one query, and the tests count
misses so this list does not silently drift from the fold. Rows the fold only *writes* (a new discrepancy, a
liquidation alert) need no prefetch. Change it with the folding modules (``projection_orders`` and the others).

Discrepancies that an order's link row points at (``OrderLinkRow.mismatch_id``) are a second step: they are known
only once the links are loaded (``discrepancy_keys_of_links``). The ledger's are alike: the balances of a loaded
trade account (``balance_keys_of_accounts``), then the discrepancies those balances point at
(``discrepancy_keys_of_balances``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

from tracker.domain.events import (
    AccountTransaction,
    BackfillCompleted,
    BalanceSnapshot,
    CryptoTransaction,
    Discrepancy,
    DiscrepancyAcknowledged,
    DiscrepancyResolved,
    DomainEvent,
    Fill,
    GapDetected,
    LedgerRow,
    Lifecycle,
    LiquidationAlert,
    OrderEvent,
    OrderStatusSnapshot,
    SelfTrade,
    Settlement,
    StatementRow,
    TokenReady,
    Unknown,
    WithdrawalRequest,
)
from tracker.domain.projection_orders import ALL_SOURCES
from tracker.domain.projection_state import StateTable, unix_us
from tracker.domain.rows import TABLES, BalanceRow, LedgerAccountRow, OrderLinkRow, OrderRow

Keys = dict[str, set[tuple[Any, ...]]]  # table name -> row keys


def empty_keys() -> Keys:
    return {name: set() for name in TABLES}


def _order(keys: Keys, account: str, order_id: str) -> None:
    keys["orders"].add((account, order_id))
    keys["order_links"].add((account, order_id))


def add_keys_for(keys: Keys, event: DomainEvent) -> None:
    """Add the keys of the rows ``apply(state, event)`` may read to ``keys``."""
    account = event.account
    counters = keys["counters"]
    match event:
        case OrderEvent():
            _order(keys, account, event.order_id)
            if event.orig_order_id is not None:
                _order(keys, account, event.orig_order_id)
            keys["streams"].add((account, event.market, event.order_source or ""))
            keys["streams"].add((account, event.market, ALL_SOURCES))
            counters.add((account, "order_event_replayed"))
            counters.add((account, "order_event_stale"))
        case Fill():
            keys["fills"].add((account, event.trade_id))
            day, market = event.executed_at.date().isoformat(), event.market or ""
            keys["fees_daily"].add((account, event.trade_account_id or "", day, market))
            if event.trade_account_id is not None:  # a fill seen before without one moves from the "" row
                keys["fees_daily"].add((account, "", day, market))
            if event.order_id is not None:
                _order(keys, account, event.order_id)
            if event.position_id is not None:
                keys["positions"].add((account, event.position_id))
            counters.add((account, f"fill_seen_again:{event.source}"))
        case SelfTrade():
            _order(keys, account, event.buy_order_id)
            _order(keys, account, event.sell_order_id)
            counters.add((account, "self_trade_seen_again"))
            keys["self_trades"].add(
                (account, event.market, event.buy_order_id, event.sell_order_id, unix_us(event.occurred_at))
            )
        case Settlement():
            keys["settlements"].add((account, event.kind, event.transaction_id))
            if event.position_id is not None:
                keys["positions"].add((account, event.position_id))
            counters.add((account, f"settlement_seen_again:{event.source}"))
        case LiquidationAlert():
            keys["positions"].add((account, event.position_id))
        case DiscrepancyResolved() | DiscrepancyAcknowledged():
            keys["discrepancies"].add((account, event.discrepancy_id))
        case Discrepancy():
            pass
        case TokenReady():
            counters.add((account, "token_ready"))
        case OrderStatusSnapshot():
            _order(keys, account, event.order_id)  # it may confirm a fills_before_tracking difference
            counters.add((account, "order_status_snapshot"))
        case AccountTransaction():
            counters.add((account, f"account_transaction:{event.type_code}"))
        case LedgerRow():
            tai = event.trade_account_id
            keys["ledger_entries"].add((account, event.entry_id))
            keys["ledger_accounts"].add((account, tai))
            for leg in event.legs:
                if leg.currency is not None:
                    keys["balances"].add((account, tai, leg.currency))
            for note in event.notes:
                counters.add((account, note))
            counters.add((account, "ledger_row_seen_again"))
        case BalanceSnapshot():
            keys["ledger_accounts"].add((account, event.trade_account_id))
            for line in event.lines:
                keys["balances"].add((account, event.trade_account_id, line.currency))
            for note in event.notes:
                counters.add((account, note))
        case CryptoTransaction():
            pass
        case WithdrawalRequest():
            keys["withdrawal_requests"].add((account, event.trade_account_id, event.request_id))
        case StatementRow():
            pass  # the fold reads nothing for it
        case Lifecycle():
            counters.add((account, f"lifecycle:{event.kind}"))
        case GapDetected():
            counters.add((account, "gap_detected"))
        case BackfillCompleted():
            counters.add((account, "backfill_completed"))
        case Unknown():
            counters.add((account, "unknown"))
            counters.add((account, f"unknown:{event.source}:{event.event}"[:200]))
        case _:
            assert_never(event)


def keys_for(events: Iterable[DomainEvent]) -> Keys:
    """The keys of the rows folding ``events`` may read, per table."""
    keys = empty_keys()
    for event in events:
        add_keys_for(keys, event)
    return keys


def balance_keys_of_accounts(accounts: Iterable[LedgerAccountRow]) -> set[tuple[Any, ...]]:
    """Every balance of the loaded trade accounts (a snapshot checks the currencies it lacks too; a few dozen)."""
    return {
        (row.account, row.trade_account_id, currency)
        for row in accounts
        for currency in row.currencies.split()
        if currency
    }


def discrepancy_keys_of_balances(balances: Iterable[BalanceRow]) -> set[tuple[Any, ...]]:
    """The open ``negative_balance`` / ``balance_mismatch`` discrepancies the loaded balances point at."""
    keys: set[tuple[Any, ...]] = set()
    for row in balances:
        for discrepancy_id in (row.negative_id, row.mismatch_id):
            if discrepancy_id is not None:
                keys.add((row.account, discrepancy_id))
    return keys


def discrepancy_keys_of_links(links: Iterable[OrderLinkRow]) -> set[tuple[Any, ...]]:
    """The open ``order_fills_mismatch`` discrepancies the loaded link rows point at (the fold may resolve them)."""
    return {(link.account, link.mismatch_id) for link in links if link.mismatch_id is not None}


def fee_keys_of_order_accounts(events: Iterable[DomainEvent], orders: StateTable[Any, Any]) -> set[tuple[Any, ...]]:
    """The fee rows of the batch's fills that take their order's trade account (``projection_fills``: a fill that
    names none): the account the loaded order row names, or an order event of the batch, or a fill of the batch
    that names one (it teaches an order whose events name none) (more than the fold will touch is harmless; fewer is
    a query each)."""
    named: dict[tuple[str, str], set[str]] = {}
    for event in events:
        if isinstance(event, (OrderEvent, Fill)) and event.trade_account_id is not None and event.order_id is not None:
            named.setdefault((event.account, event.order_id), set()).add(event.trade_account_id)
    keys: set[tuple[Any, ...]] = set()
    for event in events:
        if isinstance(event, Fill) and event.trade_account_id is None and event.order_id is not None:
            order_key = (event.account, event.order_id)
            accounts = set(named.get(order_key, ()))
            order = orders.get(order_key)
            if isinstance(order, OrderRow) and order.trade_account_id is not None:
                accounts.add(order.trade_account_id)
            day, market = event.executed_at.date().isoformat(), event.market or ""
            keys.update((event.account, account, day, market) for account in accounts)
    return keys
