"""Every view carries ``trade_account_id`` (issue 15, item 3): ``v_fees_daily``, ``v_positions``, ``v_settlements``
and ``v_self_trades`` gain it as their last column (the other views had it already).

Revision ID: 0007_trade_account_everywhere
Revises: 0006_ledger
Create Date: 2026-12-06

- ``proj_fees_daily`` is grouped by (account, trade_account_id, day, market) now: its primary key changes, so the
  table is recreated and its rows are computed again from ``proj_fills`` (the fold keeps it the exact sum of the
  fills, each under its trade account, ``""`` when unknown), in Python with exact decimals, in log order as the fold
  adds them. ``v_fees_daily`` shows ``""`` as NULL and hides rows whose fills all moved to their trade account
  (``fills`` 0).
- ``proj_positions`` gains ``trade_account_id`` (first-learned from the position's fills and liquidation alerts).
  Existing rows take it from the earliest fill (by log seq) that names one, else the earliest liquidation alert;
  ``tracker rebuild`` gives the exact first-learned value (the same unless two sources disagree).
- ``v_settlements`` shows its position's ``trade_account_id`` (settlement frames and REST settlement rows carry
  none: docs/bitstamp.md §2.5, §5.7); NULL for a settlement without a position (cross-margin insurance premium).
- ``v_self_trades``: ``trade_account_id`` is the account both sides name (``buyers_`` = ``sellers_trade_account_id``),
  NULL when they differ or are unknown; the two columns stay.

The views' SQL is static text, identical on SQLite and PostgreSQL (docs/sql.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007_trade_account_everywhere"
down_revision: str | None = "0006_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric().with_variant(sa.Text(), "sqlite")

_SETTLEMENT_COLUMNS = (
    "account, position_id, transaction_id, ccy, amount, occurred_at, kind, price_component, trading_fee_component, "
    "liquidation_fee_component, funding_component, socialized_loss_component, settlement_price, strike_price, "
    "settlement_type, source"
)
OLD_VIEWS: dict[str, str] = {
    "v_fees_daily": "SELECT account, day, market, fills, volume, fees, base_volume FROM proj_fees_daily",
    "v_settlements": f"SELECT {_SETTLEMENT_COLUMNS} FROM proj_settlements",
    "v_positions": (
        "SELECT account, position_id, market, side, size, status, entry_price, fees, realised_pnl FROM proj_positions"
    ),
    "v_self_trades": (
        "SELECT account, buy_order_id, sell_order_id, market, amount, price, occurred_at, trade_type, "
        "buyers_trade_account_id, sellers_trade_account_id, time_from_receipt FROM proj_self_trades"
    ),
}
NEW_VIEWS: dict[str, str] = {
    "v_fees_daily": (
        "SELECT account, day, market, fills, volume, fees, base_volume, NULLIF(trade_account_id, '') AS "
        "trade_account_id FROM proj_fees_daily WHERE fills > 0"
    ),
    "v_settlements": (
        "SELECT "
        + ", ".join(f"s.{c}" for c in _SETTLEMENT_COLUMNS.split(", "))
        + ", p.trade_account_id FROM proj_settlements s LEFT JOIN proj_positions p "
        "ON p.account = s.account AND p.position_id = s.position_id"
    ),
    "v_positions": (
        "SELECT account, position_id, market, side, size, status, entry_price, fees, realised_pnl, trade_account_id "
        "FROM proj_positions"
    ),
    "v_self_trades": (
        "SELECT account, buy_order_id, sell_order_id, market, amount, price, occurred_at, trade_type, "
        "buyers_trade_account_id, sellers_trade_account_id, time_from_receipt, CASE WHEN buyers_trade_account_id = "
        "sellers_trade_account_id THEN buyers_trade_account_id END AS trade_account_id FROM proj_self_trades"
    ),
}
# Existing positions: the earliest fill naming a trade account, else the earliest liquidation alert.
BACKFILL_POSITIONS = (
    "UPDATE proj_positions SET trade_account_id = coalesce("
    "(SELECT f.trade_account_id FROM proj_fills f WHERE f.account = proj_positions.account "
    "AND f.position_id = proj_positions.position_id AND f.trade_account_id IS NOT NULL ORDER BY f.seq LIMIT 1), "
    "(SELECT l.trade_account_id FROM proj_liquidations l WHERE l.account = proj_positions.account "
    "AND l.position_id = proj_positions.position_id AND l.trade_account_id IS NOT NULL ORDER BY l.seq LIMIT 1))"
)


def _fees_table(with_trade_account: bool) -> list[Any]:
    key = ["account", "trade_account_id", "day", "market"] if with_trade_account else ["account", "day", "market"]
    return [
        sa.Column("account", sa.Text(), nullable=False),
        *([sa.Column("trade_account_id", sa.Text(), nullable=False)] if with_trade_account else []),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("fills", BigInt, nullable=False),
        sa.Column("volume", MONEY, nullable=False),
        sa.Column("base_volume", MONEY, nullable=False),
        sa.Column("fees", MONEY, nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_proj_fees_daily")),
    ]


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


def _write_fees(rows: Iterable[tuple[tuple[str, ...], list[Any]]], columns: Sequence[str], dialect: str) -> None:
    insert = sa.text(
        f"INSERT INTO proj_fees_daily ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    )  # static column names above, values bound
    params = [
        dict(
            zip(
                columns,
                (*key, fills, _money(volume, dialect), _money(base, dialect), _money(fees, dialect)),
                strict=True,
            )
        )
        for key, (fills, volume, base, fees) in rows
    ]
    if params:
        op.get_bind().execute(insert, params)


def _replace_views(views: dict[str, str]) -> None:
    for name, select in views.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {select}")  # static text above, no user input


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.add_column("proj_positions", sa.Column("trade_account_id", sa.Text(), nullable=True))
    op.execute(BACKFILL_POSITIONS)
    # The fees per (account, trade account, day, market), added fill by fill in log order as the fold does.
    sums: dict[tuple[str, ...], list[Any]] = {}
    fills = bind.execute(
        sa.text(
            "SELECT account, trade_account_id, executed_at, market, amount, price, fee FROM proj_fills ORDER BY seq"
        )
    )
    for account, trade_account_id, executed_at, market, amount, price, fee in fills:
        key = (account, trade_account_id or "", _day(executed_at), market or "")
        amount, price, fee = _decimal(amount), _decimal(price), _decimal(fee)
        row = sums.get(key)
        if row is None:
            sums[key] = [1, amount * price, amount, fee]
        else:
            row[0] += 1
            row[1] += amount * price
            row[2] += amount
            row[3] += fee
    op.drop_table("proj_fees_daily")
    op.create_table("proj_fees_daily", *_fees_table(with_trade_account=True))
    columns = ("account", "trade_account_id", "day", "market", "fills", "volume", "base_volume", "fees")
    _write_fees(sums.items(), columns, dialect)
    _replace_views(NEW_VIEWS)


def downgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    sums: dict[tuple[str, ...], list[Any]] = {}
    rows = bind.execute(
        sa.text(
            "SELECT account, day, market, fills, volume, base_volume, fees FROM proj_fees_daily "
            "ORDER BY account, day, market, trade_account_id"
        )
    )
    for account, day, market, fills, volume, base, fees in rows:
        total = sums.setdefault((account, day, market), [0, Decimal(0), Decimal(0), Decimal(0)])
        total[0] += int(fills)
        total[1] += _decimal(volume)
        total[2] += _decimal(base)
        total[3] += _decimal(fees)
    op.drop_table("proj_fees_daily")
    op.create_table("proj_fees_daily", *_fees_table(with_trade_account=False))
    kept = ((key, total) for key, total in sums.items() if total[0] > 0)
    _write_fees(kept, ("account", "day", "market", "fills", "volume", "base_volume", "fees"), dialect)
    with op.batch_alter_table("proj_positions") as batch:
        batch.drop_column("trade_account_id")
    _replace_views(OLD_VIEWS)
