"""``parse_fields.DECIMALS`` (the decimal texts remembered) gives exactly what ``parse_decimal`` gives: the same value
and the same spelling (``Decimal("0.50")`` stays ``0.50``), or the same refusal, remembered or not."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.bitstamp import parse_fields
from tracker.bitstamp.parse_fields import DECIMALS, DecimalTexts, NeedExact, decimal_of
from tracker.domain.money import BadAmount, parse_decimal

TEXTS = (
    st.decimals(allow_nan=True, allow_infinity=True).map(str)
    | st.sampled_from(["0", "00", "-0", "0.50", " 1.5 ", "1e-08", "7.74E+4", "1_000", "", " ", "NaN", "-Infinity",
                       "sNaN", "abc", "1.2.3", "\u0663", "\uff11\uff12"])
    | st.text(max_size=6)
)  # fmt: skip


def _outcome(read: Callable[[str], Decimal], text: str) -> tuple[str, object]:
    try:
        value = read(text)
    except BadAmount as exc:
        return "refused", str(exc)
    assert type(value) is Decimal
    return "value", repr(value)


@given(TEXTS)
def test_a_text_reads_as_parse_decimal_reads_it(text: str) -> None:
    expected = _outcome(parse_decimal, text)
    assert _outcome(decimal_of, text) == expected
    assert _outcome(DECIMALS.__getitem__, text) == expected  # again: remembered now, when a value
    assert _outcome(decimal_of, text) == expected


def test_only_finite_values_are_remembered_and_the_memo_starts_again_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = DecimalTexts()
    assert texts["0.50"] is texts["0.50"] and str(texts["0.50"]) == "0.50"
    for bad in ("NaN", "Infinity", "x"):
        with pytest.raises(BadAmount):
            texts[bad]
    assert list(texts) == ["0.50"]
    monkeypatch.setattr(parse_fields, "DECIMALS_KEPT", 2)
    texts["1"]
    assert list(texts) == ["0.50", "1"]
    texts["2"]
    assert list(texts) == ["2"]


def test_other_values() -> None:
    assert decimal_of(Decimal("1.10")) == Decimal("1.10")
    assert decimal_of(7) == Decimal(7)
    with pytest.raises(NeedExact):
        decimal_of(1.5)
    for bad in (Decimal("NaN"), True, None, [1]):
        with pytest.raises(BadAmount):
            decimal_of(bad)
