"""Exact money helpers: parsing every wire spelling, canonical text without rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tracker.domain.money import BadAmount, format_decimal, parse_decimal, plain_decimal


@pytest.mark.parametrize(
    ("wire", "text"),
    [("1e-08", "0.00000001"), ("7.74E+4", "77400"), ("0.00000", "0"), ("300.00000000", "300"), ("-1.50", "-1.5")],
)
def test_wire_spellings_parse_exactly(wire: str, text: str) -> None:
    assert format_decimal(parse_decimal(wire)) == text


def test_more_digits_than_the_default_context_are_never_rounded() -> None:
    value = Decimal("12345678901234567890.123456789012345678")
    assert format_decimal(value) == "12345678901234567890.123456789012345678"
    assert plain_decimal(Decimal("0.50")) == "0.50"


@pytest.mark.parametrize("bad", [0.1, True, "abc", "NaN", "Infinity", None])
def test_inexact_or_non_numbers_are_refused(bad: object) -> None:
    with pytest.raises(BadAmount):
        parse_decimal(bad)
