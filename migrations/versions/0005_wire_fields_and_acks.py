"""Wire fields every view shows, and acknowledged discrepancies (issues 13 and 14).

Revision ID: 0005_wire_fields_and_acks
Revises: 0003_log_layout
Create Date: 2026-12-06

New nullable columns, so existing rows stay valid: ``tracker rebuild`` (or the projector catching up from the log)
fills them in for events already logged, since every payload is kept whole.

- ``proj_orders``: ``trade_account_id``, ``is_liquidation``, ``reduce_only``, ``stop_price``, and the hidden
  ``creation_seen`` (an order whose creation is not in the log was live before tracking: ``fills_before_tracking``);
- ``proj_fills``: ``trade_account_id``, ``trade_type``, ``client_order_id``;
- ``proj_self_trades``: ``trade_type``, ``buyers_trade_account_id``, ``sellers_trade_account_id``,
  ``time_from_receipt`` (the frame carried no time);
- ``proj_liquidations``: ``alert_type``, ``trade_account_id``, ``time_from_receipt``;
- ``proj_discrepancies``: ``acknowledged_seq``, ``note`` (``tracker discrepancies ack``; status ``acknowledged``).

The five views gain the same columns at their end (a view is a contract: columns are added, never renamed or
dropped). ``time_from_receipt`` of rows projected before this migration is NULL until a rebuild (they all carried
their time: an untimed frame was quarantined then).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_wire_fields_and_acks"
down_revision: str | None = "0003_log_layout"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric().with_variant(sa.Text(), "sqlite")

COLUMNS: dict[str, list[sa.Column[object]]] = {
    "proj_orders": [
        sa.Column("trade_account_id", sa.Text(), nullable=True),
        sa.Column("is_liquidation", sa.Boolean(), nullable=True),
        sa.Column("reduce_only", sa.Boolean(), nullable=True),
        sa.Column("stop_price", MONEY, nullable=True),
        sa.Column("creation_seen", sa.Boolean(), nullable=True),
    ],
    "proj_fills": [
        sa.Column("trade_account_id", sa.Text(), nullable=True),
        sa.Column("trade_type", sa.Text(), nullable=True),
        sa.Column("client_order_id", sa.Text(), nullable=True),
    ],
    "proj_self_trades": [
        sa.Column("trade_type", BigInt, nullable=True),
        sa.Column("buyers_trade_account_id", sa.Text(), nullable=True),
        sa.Column("sellers_trade_account_id", sa.Text(), nullable=True),
        sa.Column("time_from_receipt", sa.Boolean(), nullable=True),
    ],
    "proj_liquidations": [
        sa.Column("alert_type", sa.Text(), nullable=True),
        sa.Column("trade_account_id", sa.Text(), nullable=True),
        sa.Column("time_from_receipt", sa.Boolean(), nullable=True),
    ],
    "proj_discrepancies": [
        sa.Column("acknowledged_seq", BigInt, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    ],
}

# The views before and after (static text, as in 0002: the contract is what the migrations say).
OLD_VIEWS: dict[str, str] = {
    "v_orders": (
        "SELECT account, order_id, market, side, status, amount, amount_filled, amount_remaining, price, "
        "client_order_id, created_at, updated_at, order_source FROM proj_orders"
    ),
    "v_fills": (
        "SELECT account, trade_id, order_id, market, side, amount, price, fee, executed_at, source, "
        "position_id, is_liquidation FROM proj_fills"
    ),
    "v_self_trades": (
        "SELECT account, buy_order_id, sell_order_id, market, amount, price, occurred_at FROM proj_self_trades"
    ),
    "v_liquidations": (
        "SELECT account, position_id, event, margin_mode, occurred_at, initial_margin_ratio, "
        "maintenance_margin_ratio FROM proj_liquidations"
    ),
    "v_discrepancies": (
        "SELECT account, discrepancy_id AS id, kind, entity, detail, status, opened_seq, resolved_seq FROM "
        "proj_discrepancies"
    ),
}
NEW_VIEWS: dict[str, str] = {
    "v_orders": (
        "SELECT account, order_id, market, side, status, amount, amount_filled, amount_remaining, price, "
        "client_order_id, created_at, updated_at, order_source, trade_account_id, is_liquidation, reduce_only, "
        "stop_price FROM proj_orders"
    ),
    "v_fills": (
        "SELECT account, trade_id, order_id, market, side, amount, price, fee, executed_at, source, "
        "position_id, is_liquidation, trade_account_id, trade_type, client_order_id FROM proj_fills"
    ),
    "v_self_trades": (
        "SELECT account, buy_order_id, sell_order_id, market, amount, price, occurred_at, trade_type, "
        "buyers_trade_account_id, sellers_trade_account_id, time_from_receipt FROM proj_self_trades"
    ),
    "v_liquidations": (
        "SELECT account, position_id, event, margin_mode, occurred_at, initial_margin_ratio, "
        "maintenance_margin_ratio, alert_type, trade_account_id, time_from_receipt FROM proj_liquidations"
    ),
    "v_discrepancies": (
        "SELECT account, discrepancy_id AS id, kind, entity, detail, status, opened_seq, resolved_seq, "
        "acknowledged_seq, note FROM proj_discrepancies"
    ),
}


def _replace_views(views: dict[str, str]) -> None:
    for name, select in views.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {select}")  # static text above, no user input


def upgrade() -> None:
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for table, columns in COLUMNS.items():
        for column in columns:
            op.add_column(table, column)
    _replace_views(NEW_VIEWS)


def downgrade() -> None:
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
    _replace_views(OLD_VIEWS)
