"""Decimal ↔ text without rounding, for the database and for reports.

``tracker.domain.money.format_decimal`` uses ``Decimal.normalize()``, which rounds to the context's 28 digits
(``12345678901234567890.123456789012345678`` loses its tail). Sums and reports need every digit, so these use a
context wide enough that nothing is ever rounded.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Final

# Enough digits that no sum of stored money is ever rounded (the default context keeps 28).
EXACT: Final = Context(prec=200, Emax=999_999, Emin=-999_999)


def decimal_text(value: Decimal) -> str:
    """Plain text without an exponent, keeping the value's scale (``Decimal('0.50')`` → ``"0.50"``)."""
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return format(value, "f")


def canonical_text(value: Decimal) -> str:
    """Plain text without an exponent or trailing zeros, ``"0"`` for any zero; never rounded."""
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    if value.is_zero():
        return "0"
    return format(value.normalize(EXACT), "f")
