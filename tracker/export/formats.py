"""The registry of ``tracker export --format``: a name → entries in, CSV text out (pure)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Final

from tracker.export import bitstamp_csv
from tracker.export.ledger import LedgerEntry
from tracker.export.tax_csv import TAX_FORMATS, Table

FORMATS: Final = ("bitstamp", "bitstamp-legacy", "koinly", "cointracking", "bittytax", "rotki", "rotki-trades")


def table(fmt: str, entries: Sequence[LedgerEntry], *, plain: bool = False) -> Table:
    """The header and rows of ``entries`` in format ``fmt`` (one of ``FORMATS``). ``plain`` leaves tracker's own
    columns out of the Bitstamp formats (the exact header Bitstamp writes)."""
    if fmt in ("bitstamp", "bitstamp-legacy"):
        legacy = fmt == "bitstamp-legacy"
        header = bitstamp_csv.header(legacy=legacy, plain=plain)
        return Table(header, bitstamp_csv.rows(entries, legacy=legacy, plain=plain))
    if fmt not in TAX_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    return TAX_FORMATS[fmt](entries)


def render(result: Table) -> str:
    """CSV text (RFC 4180 quoting, ``\\n`` line ends) of a table."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(result.header)
    out.writerows(result.rows)
    return buffer.getvalue()
