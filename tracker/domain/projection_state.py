"""The projection's state: one table per row type, the checkpoint, the dirty keys; and the small writes all the
folding modules share (counters, discrepancies).

The tables are typed as ``StateTable``: the three operations the fold may use on them (``get``, ``in``, item
assignment; the read rule in ``tracker.domain.projection``'s docstring says why). A plain ``dict`` is one; a store
passes its own tables in by construction (``ProjectionState(tables=...)``, e.g. tables that load a row from the
database when the fold asks for one that was not prefetched). Whole-table operations (``to_rows``, ``changed_rows``,
``==``) are for in-memory states and are not part of the fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol, TypeVar

from tracker.domain.rows import (
    TABLES,
    BalanceCheckRow,
    BalanceRow,
    CounterRow,
    CryptoTransactionRow,
    DiscrepancyRow,
    FeesDailyRow,
    FillRow,
    LedgerAccountRow,
    LedgerEntryRow,
    LedgerLegRow,
    LiquidationRow,
    OrderLinkRow,
    OrderRow,
    PositionRow,
    Row,
    SelfTradeRow,
    SettlementRow,
    StreamRow,
    WithdrawalRequestRow,
    row_key,
)
from tracker.domain.timeutil import datetime_to_us

ZERO: Final = Decimal(0)

K = TypeVar("K", contravariant=True)
R = TypeVar("R")


# Microseconds since the epoch, exactly (the ``occurred_us`` key columns).
unix_us = datetime_to_us


class StateTable(Protocol[K, R]):
    """What the fold may do with a state table, and all it may do (the read rule: see ``tracker.domain.projection``).

    No iteration, no ``len``, no ``table[key]`` reads, no deletes: a store may hand the fold a table that holds only
    the rows it prefetched and loads the others on ``get`` / ``in``, so an answer from any other operation would be
    about the prefetched rows only, not about the table. ``dict`` satisfies this protocol.
    """

    def get(self, key: K, /) -> R | None: ...

    def __contains__(self, key: object, /) -> bool: ...

    def __setitem__(self, key: K, value: R, /) -> None: ...


class PositionFills(Protocol):
    """The fills of one position (every ``FillRow`` of ``account`` whose ``position_id`` is ``position_id``, as the
    state holds them now: the stored ones and the batch's own), in any order. The fold's one read that is not by a
    row's key: ``refold_positions`` (``projection_positions``) asks it for a position whose fills arrived out of
    exchange order, once per batch. A store answers it with an indexed query plus the batch's rows in memory, and
    must count the fills it returns as read (the parallel rebuild's ``touched``)."""

    def __call__(self, account: str, position_id: str, /) -> Iterable[FillRow]: ...


class OrderFills(Protocol):
    """The fills of one order (every ``FillRow`` of ``account`` whose ``order_id`` is ``order_id``, as the state
    holds them now: the stored ones and the batch's own), in any order. Asked only when an order learns its trade
    account after fills of it were folded (``projection_fills.learn_order_account``: rare, REST fills before their
    order's events). A store answers it as ``PositionFills``: an indexed query plus the batch's rows, counted as
    read."""

    def __call__(self, account: str, order_id: str, /) -> Iterable[FillRow]: ...


class ProjectionState:
    """All projection state: one table per row type (key → row), the checkpoint and the dirty keys per table.

    ``tables``: the store's own ``StateTable`` per name in ``TABLES`` (all of them); by default empty dicts.
    ``position_fills``, ``order_fills``: the store's ``PositionFills`` and ``OrderFills`` over those tables; by
    default a scan of ``fills`` (which must then be a mapping: an in-memory state).
    """

    __slots__ = (
        "balance_checks",
        "balances",
        "checkpoint",
        "counters",
        "crypto_transactions",
        "dirty",
        "discrepancies",
        "fees_daily",
        "fills",
        "ledger_accounts",
        "ledger_entries",
        "ledger_legs",
        "liquidations",
        "order_fills",
        "order_links",
        "orders",
        "position_fills",
        "positions",
        "self_trades",
        "settlements",
        "streams",
        "withdrawal_requests",
    )

    def __init__(
        self,
        tables: Mapping[str, StateTable[Any, Any]] | None = None,
        position_fills: PositionFills | None = None,
        order_fills: OrderFills | None = None,
    ) -> None:
        if tables is None:
            tables = {name: {} for name in TABLES}
        elif tables.keys() != TABLES.keys():
            raise ValueError(f"tables {sorted(tables)} are not the projection's {sorted(TABLES)}")
        self.checkpoint: int = 0
        self.orders: StateTable[tuple[str, str], OrderRow] = tables["orders"]
        self.order_links: StateTable[tuple[str, str], OrderLinkRow] = tables["order_links"]
        self.fills: StateTable[tuple[str, str], FillRow] = tables["fills"]
        self.fees_daily: StateTable[tuple[str, str, str, str], FeesDailyRow] = tables["fees_daily"]
        self.self_trades: StateTable[tuple[str, str, str, str, int], SelfTradeRow] = tables["self_trades"]
        self.settlements: StateTable[tuple[str, str, str], SettlementRow] = tables["settlements"]
        self.liquidations: StateTable[tuple[str, str, str, int], LiquidationRow] = tables["liquidations"]
        self.positions: StateTable[tuple[str, str], PositionRow] = tables["positions"]
        self.discrepancies: StateTable[tuple[str, str], DiscrepancyRow] = tables["discrepancies"]
        self.streams: StateTable[tuple[str, str, str], StreamRow] = tables["streams"]
        self.counters: StateTable[tuple[str, str], CounterRow] = tables["counters"]
        self.ledger_entries: StateTable[tuple[str, str], LedgerEntryRow] = tables["ledger_entries"]
        self.ledger_legs: StateTable[tuple[str, str, int], LedgerLegRow] = tables["ledger_legs"]
        self.balances: StateTable[tuple[str, str, str], BalanceRow] = tables["balances"]
        self.balance_checks: StateTable[tuple[str, str, int, str], BalanceCheckRow] = tables["balance_checks"]
        self.ledger_accounts: StateTable[tuple[str, str], LedgerAccountRow] = tables["ledger_accounts"]
        self.crypto_transactions: StateTable[tuple[str, int], CryptoTransactionRow] = tables["crypto_transactions"]
        self.withdrawal_requests: StateTable[tuple[str, str, str], WithdrawalRequestRow] = tables["withdrawal_requests"]
        self.dirty: dict[str, set[tuple[Any, ...]]] = {name: set() for name in TABLES}
        self.position_fills: PositionFills = self._scan_position_fills if position_fills is None else position_fills
        self.order_fills: OrderFills = self._scan_order_fills if order_fills is None else order_fills

    def _scan_position_fills(self, account: str, position_id: str) -> list[FillRow]:
        """The default ``PositionFills`` (``_scan_fills``)."""
        return self._scan_fills("position_id", account, position_id)

    def _scan_order_fills(self, account: str, order_id: str) -> list[FillRow]:
        """The default ``OrderFills`` (``_scan_fills``)."""
        return self._scan_fills("order_id", account, order_id)

    def _scan_fills(self, column: str, account: str, value: str) -> list[FillRow]:
        """Every fill of an in-memory state looked at (tests and small folds): those of ``account`` whose ``column``
        is ``value``."""
        return [
            row
            for row in self.rows_of("fills").values()
            if isinstance(row, FillRow) and getattr(row, column) == value and row.account == account
        ]

    def table(self, name: str) -> StateTable[Any, Any]:
        if name not in TABLES:
            raise KeyError(name)
        result: StateTable[Any, Any] = getattr(self, name)
        return result

    def rows_of(self, name: str) -> Mapping[Any, Row]:
        """The table ``name`` as a mapping (an in-memory table; not for the fold, see ``StateTable``)."""
        table = self.table(name)
        if not isinstance(table, Mapping):
            raise TypeError(f"table {name} is a {type(table).__name__}, not a mapping")
        return table

    def to_rows(self) -> dict[str, list[Row]]:
        """Every row of every table, in key order (deterministic)."""
        result: dict[str, list[Row]] = {}
        for name in TABLES:
            table = self.rows_of(name)
            result[name] = [table[key] for key in sorted(table, key=_sort_key)]
        return result

    @classmethod
    def from_rows(cls, rows: Mapping[str, Iterable[Row]], checkpoint: int) -> ProjectionState:
        """Rebuild a state from persisted rows (unknown table names are an error). Nothing is dirty."""
        state = cls()
        state.checkpoint = checkpoint
        for name, items in rows.items():
            table = state.table(name)
            row_type = TABLES[name]
            for row in items:
                if not isinstance(row, row_type):
                    raise TypeError(f"table {name} holds {row_type.__name__}, got {type(row).__name__}")
                table[row_key(row)] = row
        return state

    def changed_rows(self) -> dict[str, list[Row]]:
        """The rows whose keys are dirty, per table (what the persister upserts)."""
        return {
            name: [self.rows_of(name)[key] for key in sorted(keys, key=_sort_key)]
            for name, keys in self.dirty.items()
            if keys
        }

    def clear_dirty(self) -> None:
        for keys in self.dirty.values():
            keys.clear()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProjectionState):
            return NotImplemented
        return self.checkpoint == other.checkpoint and all(self.table(n) == other.table(n) for n in TABLES)

    __hash__ = None  # type: ignore[assignment]


def _sort_key(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


# --- the small writes every folding module makes --------------------------------------------------------------------


def count(state: ProjectionState, account: str, name: str, seq: int) -> None:
    """Count one more ``name`` (a ``CounterRow``: things no table shows)."""
    key = (account, name)
    row = state.counters.get(key)
    state.counters[key] = CounterRow(account, name, 1 if row is None else row.value + 1, seq)
    state.dirty["counters"].add(key)


def open_discrepancy(
    state: ProjectionState,
    account: str,
    discrepancy_id: str,
    kind: str,
    entity: str,
    detail: str,
    seq: int,
    trade_account_id: str | None = None,
) -> None:
    key = (account, discrepancy_id)
    state.discrepancies[key] = DiscrepancyRow(
        account, discrepancy_id, kind, entity, detail, "open", seq, None, None, None, trade_account_id
    )
    state.dirty["discrepancies"].add(key)


def refresh_discrepancy(state: ProjectionState, account: str, discrepancy_id: str, detail: str) -> None:
    """Keep an open (or acknowledged) discrepancy's detail current: the figures of its last check."""
    key = (account, discrepancy_id)
    row = state.discrepancies.get(key)
    if row is None or row.status == "resolved" or row.detail == detail:
        return
    state.discrepancies[key] = DiscrepancyRow(
        account, discrepancy_id, row.kind, row.entity, detail, row.status, row.opened_seq, row.resolved_seq,
        row.acknowledged_seq, row.note, row.trade_account_id,
    )  # fmt: skip
    state.dirty["discrepancies"].add(key)


def acknowledge_discrepancy(state: ProjectionState, account: str, discrepancy_id: str, seq: int, note: str) -> None:
    """An open discrepancy a person acknowledged: it stays in the view, no longer counts as unresolved. A resolved,
    missing or already acknowledged one keeps its state (the acknowledgement stays in the log either way)."""
    key = (account, discrepancy_id)
    row = state.discrepancies.get(key)
    if row is None or row.status != "open":
        return
    state.discrepancies[key] = DiscrepancyRow(
        account, discrepancy_id, row.kind, row.entity, row.detail, "acknowledged", row.opened_seq, None, seq, note,
        row.trade_account_id,
    )  # fmt: skip
    state.dirty["discrepancies"].add(key)


def resolve_discrepancy(state: ProjectionState, account: str, discrepancy_id: str, seq: int, detail: str) -> None:
    """Resolve an open discrepancy (a missing or already resolved one: nothing to do)."""
    key = (account, discrepancy_id)
    row = state.discrepancies.get(key)
    if row is None or row.status == "resolved":
        return
    state.discrepancies[key] = DiscrepancyRow(
        account, discrepancy_id, row.kind, row.entity, detail or row.detail, "resolved", row.opened_seq, seq,
        row.acknowledged_seq, row.note, row.trade_account_id,
    )  # fmt: skip
    state.dirty["discrepancies"].add(key)
