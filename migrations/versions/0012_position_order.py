"""A position's entry price follows the exchange's order of its fills, not the order tracker learned them in.

Revision ID: 0012_position_order
Revises: 0011_accounts_down
Create Date: 2026-12-07

- ``proj_positions`` gains ``last_trade_id`` (hidden): the newest fill folded into the position, in exchange order
  (trade id ascending, numerically: ``tracker/domain/projection_positions.py`` says why). A fill older than it is
  learned late, and the position's fills are folded again in exchange order (docs/semantics.md, Positions).
- ``proj_fills`` gains an index on (account, position_id): that fold reads a position's fills by it.
- Existing positions are folded again here, in exchange order, from their ``proj_fills`` (in Python, exact
  decimals, as the fold does it): ``first_side``, ``entry_cost``, ``entry_qty``, ``entry_price``, ``side`` and
  ``last_trade_id`` become what ``tracker rebuild`` gives. Sizes, fees and realised PnL do not depend on the order
  and stay. No row of ``event_log`` is touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012_position_order"
down_revision: str | None = "0011_accounts_down"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_proj_fills_account_position_id"
ZERO = Decimal(0)
CHUNK = 1000  # positions per UPDATE round


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(str(value))  # SQLite keeps money as plain decimal text


def _money(value: Decimal | None, dialect: str) -> object:
    return format(value, "f") if dialect == "sqlite" and value is not None else value


def _positions(rows: Any) -> Iterator[tuple[str, str, list[tuple[str, str, Decimal, Decimal]]]]:
    """(account, position_id, fills) per position, from rows sorted by account and position."""
    current: tuple[str, str] | None = None
    fills: list[tuple[str, str, Decimal, Decimal]] = []
    for account, position_id, trade_id, side, amount, price in rows:
        if (account, position_id) != current:
            if current is not None:
                yield (*current, fills)
            current, fills = (account, position_id), []
        fills.append((str(trade_id), side, _decimal(amount), _decimal(price)))
    if current is not None:
        yield (*current, fills)


def _refold(fills: list[tuple[str, str, Decimal, Decimal]], dialect: str) -> dict[str, object]:
    """``refold_positions`` of tracker/domain/projection_positions.py as of this revision, written out."""
    fills.sort(key=lambda fill: (len(fill[0]), fill[0]))
    net, cost, qty = ZERO, ZERO, ZERO
    for _, side, amount, price in fills:
        signed = amount if side == "buy" else -amount
        same_way = net == 0 or (net > 0) == (signed > 0)
        increase = amount if same_way else max(ZERO, amount - abs(net))
        cost, qty = cost + increase * price, qty + increase
        net += signed
    first_side = "long" if fills[0][1] == "buy" else "short"
    return {
        "side": "long" if net > 0 else "short" if net < 0 else first_side,
        "first_side": first_side,
        "entry_cost": _money(cost, dialect),
        "entry_qty": _money(qty, dialect),
        "entry_price": _money(cost / qty if qty != 0 else None, dialect),
        "last_trade_id": fills[-1][0],
    }


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    op.add_column("proj_positions", sa.Column("last_trade_id", sa.Text(), nullable=True))
    op.create_index(op.f(INDEX), "proj_fills", ["account", "position_id"])
    update = sa.text(
        "UPDATE proj_positions SET side = :side, first_side = :first_side, entry_cost = :entry_cost, "
        "entry_qty = :entry_qty, entry_price = :entry_price, last_trade_id = :last_trade_id "
        "WHERE account = :account AND position_id = :position_id"
    )
    rows = bind.execute(
        sa.text(
            "SELECT account, position_id, trade_id, side, amount, price FROM proj_fills "
            "WHERE position_id IS NOT NULL ORDER BY account, position_id"
        )
    ).all()  # (read before the updates: one connection; four short columns a fill)
    params: list[dict[str, object]] = []
    for account, position_id, fills in _positions(rows):
        params.append({"account": account, "position_id": position_id, **_refold(fills, dialect)})
        if len(params) >= CHUNK:
            bind.execute(update, params)
            params = []
    if params:
        bind.execute(update, params)


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="proj_fills")
    # Not batch mode: SQLite's copy-and-rename would break the views on proj_positions; SQLite 3.35+ and PostgreSQL
    # drop a column no view names in place.
    op.execute("ALTER TABLE proj_positions DROP COLUMN last_trade_id")
