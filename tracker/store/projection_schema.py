"""Tables of the projection (``proj_<name>``, one per row type in ``tracker.domain.rows.TABLES``), the projector's
checkpoint, and typed descriptions of the public views ``v_*`` (docs/sql.md) for reading them with Core.

The ``proj_*`` columns are the row structs' fields, in order, with these types:

- money (``Decimal``) is ``Money``: ``NUMERIC`` (unconstrained) on PostgreSQL; on SQLite plain decimal ``TEXT``
  (no exponent, e.g. ``0.00000001``), which SQLite keeps byte for byte, so every digit survives. Sums are exact too:
  tracker registers an exact ``sum``/``decimal_sum`` on every SQLite connection (``engine.py``), and the daily
  aggregates are maintained exactly by the fold (``proj_fees_daily``). See docs/sql.md, "Exact money".
- times are ``UtcDateTime`` (``timestamptz`` / ISO text in UTC, see ``schema.py``); ints are ``BigInteger``;
  ``bool`` is ``Boolean``; text is ``Text``.

The key columns (``KEY`` of each row type) form the primary key. Nothing is ever deleted except by ``tracker
rebuild``, which swaps all rows at once (``tracker/store/rebuild.py``).

The view descriptions (``VIEWS``) live on their own ``MetaData``: they are not tables, the migration creates them as
views, and autogenerate must not see them.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
from sqlalchemy import Boolean, Column, Dialect, Index, MetaData, Numeric, String, Table, Text
from sqlalchemy.types import TypeDecorator, TypeEngine

from tracker.domain import rows as row_types
from tracker.domain.money import plain_decimal as decimal_text
from tracker.domain.rows import TABLES
from tracker.store.schema import BigInt, UtcDateTime, metadata

PREFIX: Final = "proj_"
CHECKPOINT_NAME: Final = "projector"


class Money(TypeDecorator[Decimal]):
    """Exact decimal: ``NUMERIC`` on PostgreSQL, plain decimal ``TEXT`` on SQLite (see the module docstring)."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, got {type(value).__name__} {value!r}")
        if dialect.name == "sqlite":
            return decimal_text(value)
        if not value.is_finite():
            raise ValueError(f"not a finite decimal: {value!r}")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            raise TypeError(f"inexact money value {value!r} (a float) read from the database")
        return Decimal(str(value))


def _column_type(hint: Any) -> tuple[TypeEngine[Any], bool]:
    """SQL type and nullability for a row field's type hint."""
    nullable = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        nullable = len(args) != len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"unsupported column type {hint!r}")
        hint = args[0]
    if typing.get_origin(hint) is typing.Literal:
        return Text(), nullable
    if hint is Decimal:
        return Money(), nullable
    if hint is datetime:
        return UtcDateTime(), nullable
    if hint is bool:
        return Boolean(create_constraint=False), nullable
    if hint is int:
        return BigInt, nullable
    if hint is str:
        return Text(), nullable
    raise TypeError(f"unsupported column type {hint!r}")


def row_columns(row_type: type) -> list[Column[Any]]:
    """Columns for a row struct, in field order; ``KEY`` is the primary key."""
    hints = typing.get_type_hints(row_type, vars(row_types))
    key = row_type.KEY  # type: ignore[attr-defined]
    columns: list[Column[Any]] = []
    for field in msgspec.structs.fields(row_type):
        sql_type, nullable = _column_type(hints[field.name])
        columns.append(Column(field.name, sql_type, primary_key=field.name in key, nullable=nullable))
    return columns


def _projection_tables(target: MetaData, prefix: str) -> dict[str, Table]:
    tables = {name: Table(prefix + name, target, *row_columns(row_type)) for name, row_type in TABLES.items()}
    # The fills of one position, for the fold's ``PositionFills`` (a position's fills folded again in exchange order
    # when one arrives late: ``projection_prefetch.FillsReader``), on the shadow tables of a rebuild too.
    fills = tables["fills"]
    Index(f"ix_{prefix}fills_account_position_id", fills.c.account, fills.c.position_id)
    if prefix != PREFIX:
        # The fills of one order, for the fold's ``OrderFills`` (an order that learns its trade account after its
        # fills: ``projection_fills.learn_order_account``). The live tables have this index already (below:
        # ix_proj_fills_account_order_id, migration 0002); the swap keeps it and transfers the shadow's
        # (``rebuild._refill``).
        Index(f"ix_{prefix}fills_account_order_id", fills.c.account, fills.c.order_id)
    return tables


PROJECTION_TABLES: Final[dict[str, Table]] = _projection_tables(metadata, PREFIX)

projector_checkpoint = Table(
    "projector_checkpoint",
    metadata,
    Column("name", String(64), primary_key=True, comment="the projection's name ('projector')"),
    Column("seq", BigInt, nullable=False, comment="the last event_log seq folded into the proj_* tables"),
    Column("updated_at", UtcDateTime, nullable=False),
)


def shadow_tables(prefix: str) -> tuple[MetaData, dict[str, Table]]:
    """Fresh tables of the same shape under another prefix (``tracker rebuild`` builds into these)."""
    target = MetaData()
    return target, _projection_tables(target, prefix)


# --- the public views (docs/sql.md): name → (source table, [(view column, source column)]) ------------------------

VIEW_COLUMNS: Final[dict[str, tuple[str, tuple[tuple[str, str], ...]]]] = {
    "v_orders": (
        "orders",
        tuple(
            (c, c)
            for c in (
                "account", "order_id", "market", "side", "status", "amount", "amount_filled", "amount_remaining",
                "price", "client_order_id", "created_at", "updated_at", "order_source",
                "trade_account_id", "is_liquidation", "reduce_only", "stop_price",
            )
        ),
    ),
    "v_fills": (
        "fills",
        tuple(
            (c, c)
            for c in (
                "account", "trade_id", "order_id", "market", "side", "amount", "price", "fee", "executed_at",
                "source", "position_id", "is_liquidation", "trade_account_id", "trade_type", "client_order_id",
            )
        ),
    ),
    "v_fees_daily": (
        "fees_daily",
        tuple(
            (c, c) for c in ("account", "day", "market", "fills", "volume", "fees", "base_volume", "trade_account_id")
        ),
    ),
    "v_self_trades": (
        "self_trades",
        (
            *(
                (c, c)
                for c in (
                    "account", "buy_order_id", "sell_order_id", "market", "amount", "price", "occurred_at",
                    "trade_type", "buyers_trade_account_id", "sellers_trade_account_id", "time_from_receipt",
                )
            ),
            ("trade_account_id", "buyers_trade_account_id"),  # both sides' account when they agree (0007)
        ),
    ),
    "v_liquidations": (
        "liquidations",
        tuple(
            (c, c)
            for c in (
                "account", "position_id", "event", "margin_mode", "occurred_at", "initial_margin_ratio",
                "maintenance_margin_ratio", "alert_type", "trade_account_id", "time_from_receipt",
            )
        ),
    ),
    "v_positions": (
        "positions",
        tuple(
            (c, c)
            for c in (
                "account", "position_id", "market", "side", "size", "status", "entry_price", "fees", "realised_pnl",
                "trade_account_id",
            )
        ),
    ),
    "v_discrepancies": (
        "discrepancies",
        (
            ("account", "account"),
            ("id", "discrepancy_id"),
            ("kind", "kind"),
            ("entity", "entity"),
            ("detail", "detail"),
            ("status", "status"),
            ("opened_seq", "opened_seq"),
            ("resolved_seq", "resolved_seq"),
            ("acknowledged_seq", "acknowledged_seq"),
            ("note", "note"),
            ("trade_account_id", "trade_account_id"),
        ),
    ),
    "v_balances": (
        "balances",
        tuple(
            (c, c)
            for c in (
                "account", "trade_account_id", "currency", "balance", "as_of", "last_entry_id", "entries", "last_seq",
            )
        ),
    ),
    "v_balance_checks": (
        "balance_checks",
        tuple(
            (c, c)
            for c in (
                "account", "trade_account_id", "currency", "snapshot_at", "snapshot_seq", "exchange_total",
                "exchange_available", "exchange_reserved", "computed_total", "difference", "status", "first_entry_id",
            )
        ),
    ),
}  # fmt: skip

# The views that join several tables (their SQL is in migrations/versions/0006_ledger.py and 0007): view column →
# (table, column) for its type. ``txid`` of v_ledger comes from v_transfers (crypto or request text);
# ``trade_account_id`` of v_settlements is its position's (v_positions).
JOINED_VIEW_COLUMNS: Final[dict[str, tuple[tuple[str, str, str], ...]]] = {
    "v_settlements": tuple(
        (c, "positions" if c == "trade_account_id" else "settlements", c)
        for c in (
            "account", "position_id", "transaction_id", "ccy", "amount", "occurred_at", "kind",
            "price_component", "trading_fee_component", "liquidation_fee_component", "funding_component",
            "socialized_loss_component", "settlement_price", "strike_price", "settlement_type", "source",
            "trade_account_id",
        )
    ),
    "v_ledger": tuple(
        (c, "crypto_transactions" if c == "txid" else "ledger_legs", c)
        for c in (
            "account", "trade_account_id", "entry_id", "leg", "occurred_at", "type", "type_code", "subtype",
            "currency", "amount", "fee", "market", "rate", "order_id", "trade_id", "txid", "source", "seq",
            "balance_after",
        )
    ),
    "v_transfers": (
        ("account", "ledger_legs", "account"),
        ("trade_account_id", "ledger_legs", "trade_account_id"),
        ("direction", "ledger_legs", "type"),
        ("currency", "ledger_legs", "currency"),
        ("amount", "ledger_legs", "amount"),
        ("fee", "ledger_entries", "fee"),
        ("occurred_at", "ledger_legs", "occurred_at"),
        ("entry_id", "ledger_legs", "entry_id"),
        ("entry_seq", "ledger_legs", "seq"),
        ("request_id", "withdrawal_requests", "request_id"),
        ("request_status", "withdrawal_requests", "status"),
        ("request_status_name", "withdrawal_requests", "status_name"),
        ("request_seq", "withdrawal_requests", "seq"),
        ("txid", "crypto_transactions", "txid"),
        ("address", "crypto_transactions", "address"),
        ("network", "crypto_transactions", "network"),
        ("crypto_seq", "crypto_transactions", "seq"),
        ("matched_by", "ledger_legs", "type"),
    ),
}  # fmt: skip

view_metadata = MetaData()


def _view_table(name: str) -> Table:
    source, columns = VIEW_COLUMNS[name]
    table = PROJECTION_TABLES[source]
    return Table(name, view_metadata, *(Column(view, table.c[src].type) for view, src in columns))


def _joined_view_table(name: str) -> Table:
    columns = JOINED_VIEW_COLUMNS[name]
    return Table(name, view_metadata, *(Column(view, PROJECTION_TABLES[t].c[c].type) for view, t, c in columns))


VIEWS: Final[dict[str, Table]] = {
    **{name: _view_table(name) for name in VIEW_COLUMNS},
    **{name: _joined_view_table(name) for name in JOINED_VIEW_COLUMNS},
}

# Indexes for the reports and the views' usual filters (the primary keys cover lookups by id).
Index(None, PROJECTION_TABLES["fills"].c.account, PROJECTION_TABLES["fills"].c.executed_at)
Index(None, PROJECTION_TABLES["fills"].c.account, PROJECTION_TABLES["fills"].c.order_id)
Index(None, PROJECTION_TABLES["orders"].c.account, PROJECTION_TABLES["orders"].c.created_at)
# The ledger (migration 0006): a trade account's currency history, v_transfers' scans and joins.
_legs, _crypto = PROJECTION_TABLES["ledger_legs"], PROJECTION_TABLES["crypto_transactions"]
Index(None, _legs.c.account, _legs.c.trade_account_id, _legs.c.currency, _legs.c.seq)
Index(None, _legs.c.type_code, _legs.c.account)
Index(None, _crypto.c.account, _crypto.c.list_name, _crypto.c.txid)
Index(None, PROJECTION_TABLES["withdrawal_requests"].c.account, PROJECTION_TABLES["withdrawal_requests"].c.txid)
