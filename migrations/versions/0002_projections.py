"""Projection tables (``proj_*``), the projector checkpoint and the public views (``v_*``, docs/sql.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Written by hand (tests/test_migrations.py checks it against tracker/store/projection_schema.py). Money is
``NUMERIC`` on PostgreSQL and plain decimal ``TEXT`` on SQLite (docs/sql.md, "Exact money"). The views are plain
column lists over the tables: the same SQL on both backends, kept here as static text so the view contract is what
this migration says even when the tables' module changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric().with_variant(sa.Text(), "sqlite")

# The public contract: same names, same columns, same SQL on SQLite and PostgreSQL. `account` is always first.
VIEWS: dict[str, str] = {
    "v_orders": (
        "SELECT account, order_id, market, side, status, amount, amount_filled, amount_remaining, price, "
        "client_order_id, created_at, updated_at, order_source FROM proj_orders"
    ),
    "v_fills": (
        "SELECT account, trade_id, order_id, market, side, amount, price, fee, executed_at, source, "
        "position_id, is_liquidation FROM proj_fills"
    ),
    "v_fees_daily": ("SELECT account, day, market, fills, volume, fees, base_volume FROM proj_fees_daily"),
    "v_self_trades": (
        "SELECT account, buy_order_id, sell_order_id, market, amount, price, occurred_at FROM proj_self_trades"
    ),
    "v_settlements": (
        "SELECT account, position_id, transaction_id, ccy, amount, occurred_at, kind, price_component, "
        "trading_fee_component, liquidation_fee_component, funding_component, socialized_loss_component, "
        "settlement_price, strike_price, settlement_type, source FROM proj_settlements"
    ),
    "v_liquidations": (
        "SELECT account, position_id, event, margin_mode, occurred_at, initial_margin_ratio, "
        "maintenance_margin_ratio FROM proj_liquidations"
    ),
    "v_positions": (
        "SELECT account, position_id, market, side, size, status, entry_price, fees, realised_pnl FROM proj_positions"
    ),
    "v_discrepancies": (
        "SELECT account, discrepancy_id AS id, kind, entity, detail, status, opened_seq, resolved_seq FROM "
        "proj_discrepancies"
    ),
}
INDEXES = (
    ("ix_proj_fills_account_executed_at", "proj_fills", ["account", "executed_at"]),
    ("ix_proj_fills_account_order_id", "proj_fills", ["account", "order_id"]),
    ("ix_proj_orders_account_created_at", "proj_orders", ["account", "created_at"]),
)


def upgrade() -> None:
    op.create_table(
        "proj_orders",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("amount_remaining", MONEY, nullable=False),
        sa.Column("amount_filled", MONEY, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("client_order_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("order_source", sa.Text(), nullable=True),
        sa.Column("last_remaining", MONEY, nullable=False),
        sa.Column("event_count", BigInt, nullable=False),
        sa.Column("remaining_is_placeholder", sa.Boolean(), nullable=False),
        sa.Column("seen_event_ids", sa.Text(), nullable=False),
        sa.Column("first_seq", BigInt, nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "order_id", name=op.f("pk_proj_orders")),
    )
    op.create_table(
        "proj_order_links",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("fills_count", BigInt, nullable=False),
        sa.Column("fills_sum", MONEY, nullable=False),
        sa.Column("self_trade_offset", MONEY, nullable=False),
        sa.Column("replaced_by", sa.Text(), nullable=True),
        sa.Column("mismatch_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account", "order_id", name=op.f("pk_proj_order_links")),
    )
    op.create_table(
        "proj_fills",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("fee", MONEY, nullable=False),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position_id", sa.Text(), nullable=True),
        sa.Column("is_liquidation", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "trade_id", name=op.f("pk_proj_fills")),
    )
    op.create_table(
        "proj_fees_daily",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("fills", BigInt, nullable=False),
        sa.Column("volume", MONEY, nullable=False),
        sa.Column("base_volume", MONEY, nullable=False),
        sa.Column("fees", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("account", "day", "market", name=op.f("pk_proj_fees_daily")),
    )
    op.create_table(
        "proj_self_trades",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("buy_order_id", sa.Text(), nullable=False),
        sa.Column("sell_order_id", sa.Text(), nullable=False),
        sa.Column("occurred_us", BigInt, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint(
            "account", "market", "buy_order_id", "sell_order_id", "occurred_us", name=op.f("pk_proj_self_trades")
        ),
    )
    op.create_table(
        "proj_settlements",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("position_id", sa.Text(), nullable=True),
        sa.Column("ccy", sa.Text(), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("price_component", MONEY, nullable=True),
        sa.Column("trading_fee_component", MONEY, nullable=True),
        sa.Column("liquidation_fee_component", MONEY, nullable=True),
        sa.Column("funding_component", MONEY, nullable=True),
        sa.Column("socialized_loss_component", MONEY, nullable=True),
        sa.Column("settlement_price", MONEY, nullable=True),
        sa.Column("strike_price", MONEY, nullable=True),
        sa.Column("settlement_type", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "kind", "transaction_id", name=op.f("pk_proj_settlements")),
    )
    op.create_table(
        "proj_liquidations",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("position_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("occurred_us", BigInt, nullable=False),
        sa.Column("margin_mode", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("initial_margin_ratio", MONEY, nullable=True),
        sa.Column("maintenance_margin_ratio", MONEY, nullable=True),
        sa.Column("seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "position_id", "event", "occurred_us", name=op.f("pk_proj_liquidations")),
    )
    op.create_table(
        "proj_positions",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("position_id", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("side", sa.Text(), nullable=True),
        sa.Column("size", MONEY, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("entry_price", MONEY, nullable=True),
        sa.Column("fees", MONEY, nullable=False),
        sa.Column("realised_pnl", MONEY, nullable=False),
        sa.Column("net_size", MONEY, nullable=False),
        sa.Column("first_side", sa.Text(), nullable=True),
        sa.Column("entry_cost", MONEY, nullable=False),
        sa.Column("entry_qty", MONEY, nullable=False),
        sa.Column("liquidation_state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("account", "position_id", name=op.f("pk_proj_positions")),
    )
    op.create_table(
        "proj_discrepancies",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("discrepancy_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("opened_seq", BigInt, nullable=False),
        sa.Column("resolved_seq", BigInt, nullable=True),
        sa.PrimaryKeyConstraint("account", "discrepancy_id", name=op.f("pk_proj_discrepancies")),
    )
    op.create_table(
        "proj_streams",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("order_source", sa.Text(), nullable=False),
        sa.Column("last_event_id", sa.Text(), nullable=False),
        sa.Column("events", BigInt, nullable=False),
        sa.Column("chain_breaks", BigInt, nullable=False),
        sa.Column("last_break_seq", BigInt, nullable=True),
        sa.PrimaryKeyConstraint("account", "market", "order_source", name=op.f("pk_proj_streams")),
    )
    op.create_table(
        "proj_counters",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", BigInt, nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "name", name=op.f("pk_proj_counters")),
    )
    op.create_table(
        "projector_checkpoint",
        sa.Column("name", sa.String(64), nullable=False, comment="the projection's name ('projector')"),
        sa.Column("seq", BigInt, nullable=False, comment="the last event_log seq folded into the proj_* tables"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_projector_checkpoint")),
    )
    for name, table, columns in INDEXES:
        op.create_index(op.f(name), table, columns)
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")  # static text from VIEWS above, no user input


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, table, _columns in INDEXES:
        op.drop_index(op.f(name), table_name=table)
    op.drop_table("projector_checkpoint")
    for table in TABLES:
        op.drop_table(table)


TABLES = (
    "proj_orders",
    "proj_order_links",
    "proj_fills",
    "proj_fees_daily",
    "proj_self_trades",
    "proj_settlements",
    "proj_liquidations",
    "proj_positions",
    "proj_discrepancies",
    "proj_streams",
    "proj_counters",
)
