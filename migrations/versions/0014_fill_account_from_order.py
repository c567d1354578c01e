"""A fill whose source names no trade account takes its order's (REST fills: ``user_transactions/`` and
``trade_history/`` rows carry none, the order's events do).

Revision ID: 0014_fill_account_from_order
Revises: 0013_task_failures
Create Date: 2026-12-07

The fold now gives such a fill its order's ``trade_account_id`` (docs/semantics.md, Fees per day): when the order
named one before the fill was folded, and otherwise when the order names it later. This brings existing rows to
the same place, in Python with exact decimals, as the fold does it:

- ``proj_fills`` rows without a trade account whose order (``proj_orders``, same account and order id) has one
  take it;
- their figures move from the ``""`` (unknown) row of ``proj_fees_daily`` to their trade account's row, fill by
  fill as the fold's move does: the unknown row keeps its key with the figures taken away (``v_fees_daily`` hides it
  once its ``fills`` is 0), the account's row is made when it is missing;
- a position without a trade account takes the one of its earliest such fill (by log seq).

``tracker rebuild`` gives the same rows, except that an unknown row the fold never made (the order's account was
known before its fills came) stays here with ``fills`` 0, hidden by the view. No row of ``event_log`` is touched.
Downgrading leaves the rows as they are (the older fold would just not have moved them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0014_fill_account_from_order"
down_revision: str | None = "0013_task_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000  # rows per UPDATE round

FILLS = sa.text(
    "SELECT f.account, f.trade_id, f.executed_at, f.market, f.amount, f.price, f.fee, f.position_id,"
    " o.trade_account_id FROM proj_fills f JOIN proj_orders o ON o.account = f.account AND o.order_id = f.order_id"
    " WHERE f.trade_account_id IS NULL AND o.trade_account_id IS NOT NULL ORDER BY f.seq"
)
SET_FILL = sa.text("UPDATE proj_fills SET trade_account_id = :tai WHERE account = :account AND trade_id = :trade_id")
SET_POSITION = sa.text(
    "UPDATE proj_positions SET trade_account_id = :tai"
    " WHERE account = :account AND position_id = :position_id AND trade_account_id IS NULL"
)
FEE_ROW = sa.text(
    "SELECT fills, volume, base_volume, fees FROM proj_fees_daily"
    " WHERE account = :account AND trade_account_id = :tai AND day = :day AND market = :market"
)
UPDATE_FEES = sa.text(
    "UPDATE proj_fees_daily SET fills = :fills, volume = :volume, base_volume = :base_volume, fees = :fees"
    " WHERE account = :account AND trade_account_id = :tai AND day = :day AND market = :market"
)
INSERT_FEES = sa.text(
    "INSERT INTO proj_fees_daily (account, trade_account_id, day, market, fills, volume, base_volume, fees)"
    " VALUES (:account, :tai, :day, :market, :fills, :volume, :base_volume, :fees)"
)


# _decimal, _day and _money as 0007 has them: a migration keeps its own helpers, so that it never changes when
# another one does.
def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(str(value))  # SQLite keeps money as plain decimal text


def _day(value: object) -> str:
    """The UTC day of a stored time: aware ``datetime`` on PostgreSQL, ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text (or a
    naive UTC ``datetime``) on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return (value.astimezone(UTC) if value.tzinfo is not None else value).date().isoformat()


def _money(value: Decimal, dialect: str) -> object:
    return format(value, "f") if dialect == "sqlite" else value


Key = tuple[str, str, str, str]  # (account, trade account or "", day, market)
Figures = tuple[int, Decimal, Decimal, Decimal]  # fills, volume, base volume, fees


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    moved = bind.execute(FILLS).all()
    rows: dict[Key, Figures] = {}  # the fee rows the moves touch, as they become
    made: set[Key] = set()  # the ones that did not exist

    def figures(key: Key) -> Figures:
        if key not in rows:
            account, tai, day, market = key
            found = bind.execute(FEE_ROW, {"account": account, "tai": tai, "day": day, "market": market}).first()
            if found is None:
                made.add(key)
                rows[key] = (0, Decimal(0), Decimal(0), Decimal(0))
            else:
                rows[key] = (int(found[0]), _decimal(found[1]), _decimal(found[2]), _decimal(found[3]))
        return rows[key]

    positions: dict[tuple[str, str], str] = {}
    for account, _, executed_at, market, amount, price, fee, position_id, tai in moved:
        day, market = _day(executed_at), market or ""
        amount, price, fee = _decimal(amount), _decimal(price), _decimal(fee)
        quote = amount * price
        count, volume, base, fees = figures((account, "", day, market))  # taken away, as the fold's _fee_day(-1)
        rows[account, "", day, market] = (count - 1, volume + -quote, base + -amount, fees + -fee)
        count, volume, base, fees = figures((account, tai, day, market))
        rows[account, tai, day, market] = (count + 1, volume + quote, base + amount, fees + fee)
        if position_id is not None:
            positions.setdefault((account, position_id), tai)  # the earliest fill's (ORDER BY seq)
    fills = [{"tai": tai, "account": account, "trade_id": trade_id} for account, trade_id, *_, tai in moved]
    for start in range(0, len(fills), CHUNK):
        bind.execute(SET_FILL, fills[start : start + CHUNK])
    for key, (count, volume, base, fees) in rows.items():
        account, tai, day, market = key
        params = {
            "account": account, "tai": tai, "day": day, "market": market, "fills": count,
            "volume": _money(volume, dialect), "base_volume": _money(base, dialect), "fees": _money(fees, dialect),
        }  # fmt: skip
        bind.execute(INSERT_FEES if key in made else UPDATE_FEES, params)
    learned = [{"tai": tai, "account": account, "position_id": p} for (account, p), tai in positions.items()]
    for start in range(0, len(learned), CHUNK):
        bind.execute(SET_POSITION, learned[start : start + CHUNK])


def downgrade() -> None:
    pass  # the rows stay as they are: valid under the older fold too (it would just not have moved them)
