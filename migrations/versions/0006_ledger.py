"""The account ledger (issue 15): legs, balances, balance checks, crypto transactions, withdrawal requests, and the
views ``v_ledger``, ``v_balances``, ``v_balance_checks``, ``v_transfers``; ``v_discrepancies`` gains
``trade_account_id``.

Revision ID: 0006_ledger
Revises: 0005_wire_fields_and_acks
Create Date: 2026-12-06

New tables only (and one nullable column on ``proj_discrepancies``): the projector fills them from the log as it
catches up (the ledger's log entries are new too), ``tracker rebuild`` does the same from scratch. The SQL of the
views is static text here, identical on SQLite and PostgreSQL (docs/sql.md, "Ledger and balances"):

- ``v_balances`` and ``v_balance_checks`` read one table each: the fold maintains the balance per trade account and
  currency leg by leg and computes each check's difference exactly, so nothing is summed at query time;
- ``v_transfers`` joins the deposit and withdrawal legs with the latest state of their withdrawal request
  (``request.txid = entry_id``) and the crypto row (``request.transaction_id = crypto.txid``, else the same
  currency and absolute amount within 24 hours, nearest first), plus the requests that never reached the ledger.
  Amounts are compared by ``abs_amount`` (the canonical decimal text on SQLite, ``NUMERIC`` on PostgreSQL: exact on
  both), times by ``occurred_us`` (integers on both);
- ``v_ledger`` is the legs with the on-chain ``txid`` that ``v_transfers`` found for their entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_ledger"
down_revision: str | None = "0005_wire_fields_and_acks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric().with_variant(sa.Text(), "sqlite")

TABLES = (
    "proj_ledger_entries",
    "proj_ledger_legs",
    "proj_balances",
    "proj_balance_checks",
    "proj_ledger_accounts",
    "proj_crypto_transactions",
    "proj_withdrawal_requests",
)
INDEXES = (
    ("ix_proj_ledger_legs_type_code_account", "proj_ledger_legs", ["type_code", "account"]),
    (
        "ix_proj_ledger_legs_account_trade_account_id_currency_seq",
        "proj_ledger_legs",
        ["account", "trade_account_id", "currency", "seq"],
    ),
    (
        "ix_proj_crypto_transactions_account_list_name_txid",
        "proj_crypto_transactions",
        ["account", "list_name", "txid"],
    ),
    ("ix_proj_withdrawal_requests_account_txid", "proj_withdrawal_requests", ["account", "txid"]),
)

OLD_DISCREPANCIES = (
    "SELECT account, discrepancy_id AS id, kind, entity, detail, status, opened_seq, resolved_seq, "
    "acknowledged_seq, note FROM proj_discrepancies"
)
NEW_DISCREPANCIES = (
    "SELECT account, discrepancy_id AS id, kind, entity, detail, status, opened_seq, resolved_seq, "
    "acknowledged_seq, note, trade_account_id FROM proj_discrepancies"
)

# Crypto rows: one per (list, txid), the latest logged (a row the exchange re-renders is a second log entry).
_CRYPTO = (
    "SELECT c.* FROM proj_crypto_transactions c WHERE c.txid IS NULL OR c.seq = (SELECT max(c2.seq) FROM "
    "proj_crypto_transactions c2 WHERE c2.account = c.account AND c2.list_name = c.list_name AND c2.txid = c.txid)"
)
_MOVES = (
    "SELECT l.account, l.trade_account_id, l.entry_id, l.seq, l.type_code, l.currency, l.amount, l.abs_amount, "
    "l.occurred_at, l.occurred_us, e.fee FROM proj_ledger_legs l JOIN proj_ledger_entries e "
    "ON e.account = l.account AND e.entry_id = l.entry_id WHERE l.type_code IN ('0', '1') AND l.leg = 'amount'"
)
# The nearest crypto row of the same list, currency and absolute amount within 24 h of each movement.
_NEAR = (
    "SELECT m.account, m.entry_id, m.currency, c.seq AS crypto_seq, row_number() OVER (PARTITION BY m.account, "
    "m.entry_id, m.currency ORDER BY abs(c.occurred_us - m.occurred_us), c.seq) AS n FROM moves m JOIN crypto c "
    "ON c.account = m.account AND c.list_name = CASE m.type_code WHEN '0' THEN 'deposits' ELSE 'withdrawals' END "
    "AND c.currency = m.currency AND c.abs_amount = m.abs_amount AND abs(c.occurred_us - m.occurred_us) <= 86400000000"
)
V_TRANSFERS = (
    f"WITH crypto AS ({_CRYPTO}), moves AS ({_MOVES}), near AS ({_NEAR}) "
    "SELECT m.account, m.trade_account_id, "
    "CASE m.type_code WHEN '0' THEN 'deposit' ELSE 'withdrawal' END AS direction, "
    "m.currency, m.amount, m.fee, m.occurred_at, m.entry_id, m.seq AS entry_seq, "
    "r.request_id, r.status AS request_status, r.status_name AS request_status_name, r.seq AS request_seq, "
    "coalesce(c1.txid, c2.txid, r.transaction_id) AS txid, coalesce(c1.address, c2.address, r.address) AS address, "
    "coalesce(c1.network, c2.network, r.network) AS network, coalesce(c1.seq, c2.seq) AS crypto_seq, "
    "CASE WHEN c1.seq IS NOT NULL THEN 'request.transaction_id=txid' "
    "WHEN c2.seq IS NOT NULL THEN 'currency+amount+time' "
    "WHEN r.request_id IS NOT NULL THEN 'request.txid=entry_id' END AS matched_by "
    "FROM moves m "
    "LEFT JOIN proj_withdrawal_requests r ON m.type_code = '1' AND r.account = m.account "
    "AND r.trade_account_id = m.trade_account_id AND r.txid = m.entry_id "
    "LEFT JOIN crypto c1 ON c1.account = m.account AND c1.list_name = 'withdrawals' AND c1.txid = r.transaction_id "
    "LEFT JOIN near n ON c1.seq IS NULL AND n.account = m.account AND n.entry_id = m.entry_id "
    "AND n.currency = m.currency AND n.n = 1 "
    "LEFT JOIN crypto c2 ON c2.account = n.account AND c2.seq = n.crypto_seq "
    "UNION ALL "
    "SELECT r.account, r.trade_account_id, 'withdrawal' AS direction, r.currency, r.signed_amount AS amount, "
    "NULL AS fee, r.occurred_at, NULL AS entry_id, NULL AS entry_seq, r.request_id, r.status AS request_status, "
    "r.status_name AS request_status_name, r.seq AS request_seq, coalesce(c1.txid, r.transaction_id) AS txid, "
    "coalesce(c1.address, r.address) AS address, coalesce(c1.network, r.network) AS network, "
    "c1.seq AS crypto_seq, CASE WHEN c1.seq IS NOT NULL THEN 'request.transaction_id=txid' END AS matched_by "
    "FROM proj_withdrawal_requests r "
    "LEFT JOIN crypto c1 ON c1.account = r.account AND c1.list_name = 'withdrawals' AND c1.txid = r.transaction_id "
    "WHERE NOT EXISTS (SELECT 1 FROM proj_ledger_legs l WHERE l.account = r.account "
    "AND l.trade_account_id = r.trade_account_id AND l.entry_id = r.txid AND l.type_code = '1' AND l.leg = 'amount')"
)
V_LEDGER = (
    "SELECT l.account, l.trade_account_id, l.entry_id, l.leg, l.occurred_at, l.type, l.type_code, l.subtype, "
    "l.currency, l.amount, l.fee, l.market, l.rate, l.order_id, l.trade_id, t.txid, l.source, l.seq, "
    "l.balance_after FROM proj_ledger_legs l LEFT JOIN (SELECT account, entry_id, min(txid) AS txid FROM v_transfers "
    "WHERE entry_id IS NOT NULL AND txid IS NOT NULL GROUP BY account, entry_id) t "
    "ON l.type_code IN ('0', '1') AND t.account = l.account AND t.entry_id = l.entry_id"
)
VIEWS: dict[str, str] = {  # in creation order (v_ledger reads v_transfers)
    "v_balances": (
        "SELECT account, trade_account_id, currency, balance, as_of, last_entry_id, entries, last_seq "
        "FROM proj_balances WHERE entries > 0"
    ),
    "v_balance_checks": (
        "SELECT account, trade_account_id, currency, snapshot_at, snapshot_seq, exchange_total, exchange_available, "
        "exchange_reserved, computed_total, difference, status, first_entry_id FROM proj_balance_checks"
    ),
    "v_transfers": V_TRANSFERS,
    "v_ledger": V_LEDGER,
}


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_discrepancies")
    op.add_column("proj_discrepancies", sa.Column("trade_account_id", sa.Text(), nullable=True))
    op.execute(f"CREATE VIEW v_discrepancies AS {NEW_DISCREPANCIES}")  # static text above, no user input
    op.create_table(
        "proj_ledger_entries",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("type_code", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("subtype", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fee", MONEY, nullable=True),
        sa.Column("legs", BigInt, nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "entry_id", name=op.f("pk_proj_ledger_entries")),
    )
    op.create_table(
        "proj_ledger_legs",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=False),
        sa.Column("leg_no", BigInt, nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("leg", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("type_code", sa.Text(), nullable=False),
        sa.Column("subtype", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("fee", MONEY, nullable=True),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("rate", MONEY, nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("trade_id", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("balance_after", MONEY, nullable=True),
        sa.Column("occurred_us", BigInt, nullable=True),
        sa.Column("abs_amount", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("account", "entry_id", "leg_no", name=op.f("pk_proj_ledger_legs")),
    )
    op.create_table(
        "proj_balances",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("balance", MONEY, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_entry_id", sa.Text(), nullable=True),
        sa.Column("entries", BigInt, nullable=False),
        sa.Column("last_seq", BigInt, nullable=True),
        sa.Column("negative_id", sa.Text(), nullable=True),
        sa.Column("mismatch_id", sa.Text(), nullable=True),
        sa.Column("first_entry_since_check", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account", "trade_account_id", "currency", name=op.f("pk_proj_balances")),
    )
    op.create_table(
        "proj_balance_checks",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_seq", BigInt, nullable=False),
        sa.Column("exchange_total", MONEY, nullable=True),
        sa.Column("exchange_available", MONEY, nullable=True),
        sa.Column("exchange_reserved", MONEY, nullable=True),
        sa.Column("computed_total", MONEY, nullable=False),
        sa.Column("difference", MONEY, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("first_entry_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            "account", "trade_account_id", "currency", "snapshot_seq", name=op.f("pk_proj_balance_checks")
        ),
    )
    op.create_table(
        "proj_ledger_accounts",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("currencies", sa.Text(), nullable=False),
        sa.Column("snapshots", BigInt, nullable=False),
        sa.Column("last_snapshot_seq", BigInt, nullable=True),
        sa.PrimaryKeyConstraint("account", "trade_account_id", name=op.f("pk_proj_ledger_accounts")),
    )
    op.create_table(
        "proj_crypto_transactions",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("list_name", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("network", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("txid", sa.Text(), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("occurred_us", BigInt, nullable=True),
        sa.Column("abs_amount", MONEY, nullable=False),
        sa.PrimaryKeyConstraint("account", "seq", name=op.f("pk_proj_crypto_transactions")),
    )
    op.create_table(
        "proj_withdrawal_requests",
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("trade_account_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("method", BigInt, nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("network", sa.Text(), nullable=True),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("signed_amount", MONEY, nullable=True),
        sa.Column("status", BigInt, nullable=True),
        sa.Column("status_name", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.Text(), nullable=True),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("first_seq", BigInt, nullable=False),
        sa.Column("states", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("account", "trade_account_id", "request_id", name=op.f("pk_proj_withdrawal_requests")),
    )
    for name, table, columns in INDEXES:
        op.create_index(op.f(name), table, columns)
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")  # static text above, no user input


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, table, _columns in INDEXES:
        op.drop_index(op.f(name), table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
    op.execute("DROP VIEW IF EXISTS v_discrepancies")
    with op.batch_alter_table("proj_discrepancies") as batch:
        batch.drop_column("trade_account_id")
    op.execute(f"CREATE VIEW v_discrepancies AS {OLD_DISCREPANCIES}")  # static text above, no user input
