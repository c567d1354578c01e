"""An order whose events named no trade account takes the one its fills name (order frames from before Bitstamp
added ``trade_account_id`` carry none; ``my_trades`` frames may), and its other fills without one follow.

Revision ID: 0015_order_account_from_fills
Revises: 0014_fill_account_from_order
Create Date: 2026-12-07

The fold now teaches an order without a trade account the one a fill of it names (docs/semantics.md, Fees per day):
the first named in log order, which for such an order is its earliest fill naming one (a fill folded while the
order had a row taught it at once; fills folded before the order's first event are read back by it). This brings
existing rows to the same place:

1. ``proj_orders`` rows without a trade account take the one of their earliest fill (by log seq) that has one.
2. Then exactly what migration 0014 does for an order that has an account: its fills without one take it, their
   figures move from the ``""`` (unknown) row of ``proj_fees_daily`` to the account's row, and a position without a
   trade account takes its earliest such fill's. That step is 0014's own ``upgrade``, run again (a released
   migration does not change, so calling it is calling fixed code; it touches only fills without a trade account
   whose order has one, so after 0014 it moves exactly the fills of the orders step 1 changed).

``tracker rebuild`` gives the same rows, except in a case Bitstamp's data should never have: fills of one order naming
different trade accounts, where the fold's first-learned value depends on when a fill first named its account (a
fill seen first from REST, named by a later replay), not only on its seq. No row of ``event_log`` is touched.
Downgrading leaves the rows as they are (the older fold would just not have moved them).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0015_order_account_from_fills"
down_revision: str | None = "0014_fill_account_from_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The earliest fill (by seq; trade id on a tie, as the fold) naming a trade account, per order without one.
ORDERS = sa.text(
    "SELECT o.account, o.order_id, f.trade_account_id FROM proj_orders o"
    " JOIN proj_fills f ON f.account = o.account AND f.order_id = o.order_id"
    " WHERE o.trade_account_id IS NULL AND f.trade_account_id IS NOT NULL"
    " ORDER BY o.account, o.order_id, f.seq, f.trade_id"
)
SET_ORDER = sa.text(
    "UPDATE proj_orders SET trade_account_id = :tai"
    " WHERE account = :account AND order_id = :order_id AND trade_account_id IS NULL"
)
CHUNK = 1000  # rows per UPDATE round


def _migration_0014() -> object:
    path = Path(__file__).with_name("0014_fill_account_from_order.py")
    spec = importlib.util.spec_from_file_location("tracker_migration_0014", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    bind = op.get_bind()
    learned: dict[tuple[str, str], str] = {}
    for account, order_id, tai in bind.execute(ORDERS):
        learned.setdefault((account, order_id), tai)  # the first row of each order is its earliest fill
    params = [{"tai": tai, "account": account, "order_id": order_id} for (account, order_id), tai in learned.items()]
    for start in range(0, len(params), CHUNK):
        bind.execute(SET_ORDER, params[start : start + CHUNK])
    if params:
        _migration_0014().upgrade()  # type: ignore[attr-defined]


def downgrade() -> None:
    pass  # the rows stay as they are: valid under the older fold too (it would just not have moved them)
