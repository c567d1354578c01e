"""The projection fold: ``apply(state, event) -> state``, total and deterministic (docs/semantics.md is the contract).

Ownership: for speed (a 1M-event rebuild), ``apply`` **mutates** the state it is given and returns it. The state is
owned by the fold: callers must not share it, and rows inside it are frozen (a changed row is a new row object).
Every changed key is recorded in ``state.dirty[table]``; the persister writes ``state.changed_rows()`` in the same
transaction as ``state.checkpoint`` and then calls ``state.clear_dirty()``. Nothing is ever deleted.

Idempotence: an event with ``seq <= checkpoint`` is ignored, so re-applying a batch after a crash is harmless.

Batches: after the last ``apply`` of a batch (before its rows are written), ``refold_positions(state)`` completes
the positions a fill learned out of exchange order left waiting (``projection_positions``: a position's entry price
is the fold of its fills in the exchange's order, not the log's). ``fold`` does it at its end. A state between two
``apply`` calls may so hold a waiting position; a written one never does.

The read rule: the fold touches a state table ONLY through ``table.get(key)``, ``key in table`` and
``table[key] = row``. It never iterates a table, never takes its ``len``, never reads ``table[key]``, never
deletes. Its reads not by key are ``state.position_fills`` (the fills of one position, at a batch's end:
``refold_positions``) and ``state.order_fills`` (the fills of one order that learns its trade account after them:
``learn_order_account``, or that named none and looks for one in its fills), which a store serves by an index and
counts as reads of those fills. So what an event does depends only on the rows it names (by key, or as a position's
or an order's fills), and a store may hand the fold tables that hold just the rows it prefetched for a batch and load
any other row on ``get`` / ``in`` (``ProjectionState(tables=...)``, ``StateTable``;
``tracker.store.projection_prefetch``). The parallel rebuild leans on the same rule: two
groups of events that touch no common key fold the same apart as together. ``StateTable`` makes the type checker
hold the fold to it, and ``tests/test_projection_read_rule.py`` checks it twice: over the source (an AST walk of the
folding modules) and at run time (the fold over a real event sequence with tables that have nothing but the three
operations).

Where things are (each module under ``tracker/domain/``):

- ``projection_state``: the state, its ``StateTable`` protocol, the counters and discrepancies every part writes;
- ``projection_orders``: order events, the order link rows, the fills cross-check, the ``pre_event_id`` chain;
- ``projection_fills``: fills, daily fees, self trades;
- ``projection_positions``: positions, settlements, liquidation alerts;
- ``projection_ledger``: the account ledger (legs, balances, balance checks, crypto transactions, withdrawal
  requests), touched only by the four ledger events;
- ``projection_keys``: which keys a batch will read (the store prefetches them); it mirrors the fold's lookups;
- here: ``apply`` (one ``match`` over every event type, ``assert_never`` makes the type checker prove it total)
  and ``fold``.

Rules worth knowing (all from docs/semantics.md unless said):

- orders from ``my_orders`` (and REST ``account_order_data/`` replays; an ``event_id`` already applied to that order
  is skipped); fills from ``my_trades`` and REST, one row per (account, trade_id), first-learned values stay, a
  disagreement opens ``fill_source_mismatch``;
- a closed order (filled/cancelled/replaced) whose ``amount_filled`` differs from the sum of its fills has an open
  ``order_fills_mismatch``; re-checked whenever the order, its fills or its self-trade offsets change, and
  resolved when they agree;
- the ``pre_event_id`` chain is followed on ws order events per (account, market, order_source) and per (account,
  market) (``order_source`` ``"*"``); a break is counted in ``StreamRow.chain_breaks`` (gap handling is elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

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
from tracker.domain.projection_fills import apply_fill, apply_self_trade, learn_order_account
from tracker.domain.projection_ledger import (
    apply_balance_snapshot,
    apply_crypto_transaction,
    apply_ledger_row,
    apply_withdrawal_request,
)
from tracker.domain.projection_orders import ALL_SOURCES, CLOSED, EVENT_ID_LENGTH, apply_order, confirm_by_order_status
from tracker.domain.projection_positions import apply_liquidation, apply_settlement, refold_positions
from tracker.domain.projection_state import (
    ZERO,
    ProjectionState,
    StateTable,
    acknowledge_discrepancy,
    count,
    open_discrepancy,
    resolve_discrepancy,
    unix_us,
)

__all__ = [
    "ALL_SOURCES",
    "CLOSED",
    "EVENT_ID_LENGTH",
    "ZERO",
    "ProjectionState",
    "StateTable",
    "apply",
    "fold",
    "refold_positions",
    "unix_us",
]


def _apply_discrepancy(state: ProjectionState, event: Discrepancy) -> None:
    open_discrepancy(state, event.account, event.discrepancy_id, event.kind, event.entity, event.detail, event.seq)


def apply(state: ProjectionState, event: DomainEvent) -> ProjectionState:
    """Fold one event into the state (mutating it; see the module docstring) and return it."""
    if event.seq <= state.checkpoint:
        return state
    match event:
        case OrderEvent():
            learned = apply_order(state, event)
            if learned is not None:  # fills of the order were folded before it named its trade account
                learn_order_account(state, event.account, event.order_id, learned)
        case Fill():
            apply_fill(state, event)
        case SelfTrade():
            apply_self_trade(state, event)
        case Settlement():
            apply_settlement(state, event)
        case LiquidationAlert():
            apply_liquidation(state, event)
        case Discrepancy():
            _apply_discrepancy(state, event)
        case DiscrepancyResolved():
            resolve_discrepancy(state, event.account, event.discrepancy_id, event.seq, event.detail)
        case DiscrepancyAcknowledged():
            note = f"{event.note} (by {event.by})" if event.by else event.note
            acknowledge_discrepancy(state, event.account, event.discrepancy_id, event.seq, note)
        case TokenReady():
            count(state, event.account, "token_ready", event.seq)
        case OrderStatusSnapshot():
            count(state, event.account, "order_status_snapshot", event.seq)
            confirm_by_order_status(state, event)
        case AccountTransaction():
            count(state, event.account, f"account_transaction:{event.type_code}", event.seq)
        case LedgerRow():
            apply_ledger_row(state, event)
        case BalanceSnapshot():
            apply_balance_snapshot(state, event)
        case CryptoTransaction():
            apply_crypto_transaction(state, event)
        case WithdrawalRequest():
            apply_withdrawal_request(state, event)
        case StatementRow():
            pass  # a witness (tracker import-statement compares it with v_ledger), never legs: docs/export.md
        case Lifecycle():
            count(state, event.account, f"lifecycle:{event.kind}", event.seq)
        case GapDetected():
            count(state, event.account, "gap_detected", event.seq)
        case BackfillCompleted():
            count(state, event.account, "backfill_completed", event.seq)
        case Unknown():
            count(state, event.account, "unknown", event.seq)
            count(state, event.account, f"unknown:{event.source}:{event.event}"[:200], event.seq)
        case _:
            assert_never(event)
    state.checkpoint = event.seq
    return state


def fold(events: Iterable[DomainEvent], state: ProjectionState | None = None) -> ProjectionState:
    """Apply every event in order to ``state`` (a fresh one by default), then end the batch (``refold_positions``)."""
    result = ProjectionState() if state is None else state
    for event in events:
        result = apply(result, event)
    refold_positions(result)
    return result
