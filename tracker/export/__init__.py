"""Ledger exports and Bitstamp statements: pure text in, text out (no database, no I/O).

- ``ledger``: the ``v_ledger`` legs (docs/sql.md) grouped into entries (a trade is one entry: its sent and received
  legs and its fee), and the neutral category of each entry (deposit, withdrawal, trade, ...).
- ``bitstamp_csv``: Bitstamp's own CSV statement, new (``ID,Account,Type,...``) and legacy (``Type,Datetime,...``).
- ``tax_csv``: the import formats of Koinly, CoinTracking, BittyTax and rotki.
- ``formats``: the registry ``tracker export --format`` chooses from.
- ``statement``: reading a user's Bitstamp CSV statement (either format) into typed rows.
- ``statement_match``: matching statement rows to the ledger, and the log entries ``tracker import-statement``
  appends (the rows as facts, the discrepancies it finds).

docs/export.md names the source of every column and says where a source is unsure.
"""
