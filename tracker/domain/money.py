"""Exact money: every amount, price and fee is a ``Decimal`` parsed from the wire's text, never a float."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from typing import Final

ZERO = Decimal(0)
# Wide enough that no amount or sum of amounts is ever rounded (the default context keeps only 28 digits).
EXACT: Final = Context(prec=200, Emax=999_999, Emin=-999_999)


class BadAmount(ValueError):
    """A wire value that is not a finite decimal number."""


def parse_decimal(value: object) -> Decimal:
    """Parse a wire amount exactly.

    Accepts decimal strings in any spelling the wire uses (``"0.00000"``, ``"1e-08"``, ``"7.74E+4"``), ints, and
    ``Decimal`` (from ``json.loads(..., parse_float=Decimal)``). Floats are refused: they have already lost exactness.
    """
    if isinstance(value, bool | float):
        raise BadAmount(f"refusing inexact amount {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise BadAmount(f"not a decimal number: {value!r}") from None
    else:
        raise BadAmount(f"not a decimal number: {value!r}")
    if not result.is_finite():
        raise BadAmount(f"not a finite number: {value!r}")
    return result


def format_decimal(value: Decimal) -> str:
    """Canonical plain text for a decimal: no exponent, no trailing zeros, ``"0"`` for any zero; never rounded.

    ``format_decimal(parse_decimal("1e-08")) == "0.00000001"``; ``format_decimal(Decimal("300.00000000")) == "300"``.
    """
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    if value.is_zero():
        return "0"
    return format(value.normalize(EXACT), "f")


def plain_decimal(value: Decimal) -> str:
    """Plain text without an exponent, keeping the value's scale (``Decimal("0.50")`` -> ``"0.50"``)."""
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return format(value, "f")
