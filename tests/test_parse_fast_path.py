"""The parser's fast JSON path (``orjson``) gives exactly what the exact decoder (``loads_exact``) gives.

orjson turns every number with a fraction or exponent into a float, and an integer beyond 64 bits too; the parser
must then parse the entry again from ``loads_exact`` (Decimals, ints), never use the float.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from bitstamp_samples import corpus_dirs, private_frame_texts
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import NOW, Log, to_log

from tracker.bitstamp.parse import _parse, parse_entry
from tracker.bitstamp.parse_fields import NeedExact, micro
from tracker.bitstamp.parse_fields import id_text as fields_id_text
from tracker.bitstamp.parse_fields import int_text as fields_int_text
from tracker.bitstamp.wire import id_text as wire_id_text
from tracker.bitstamp.wire import int_text, loads_exact, us_to_datetime
from tracker.domain.events import Fill, OrderEvent, Unknown
from tracker.domain.log import NewEntry

TRADE = '{{"event":"trade","channel":"private-my_trades_btcusd-1","data":{data}}}'


def test_float_only_money_is_exact() -> None:
    """No ``*_str`` twin: the number token itself, exactly (a float would be 0.1000000000000000055...)."""
    fill = Log().ws(TRADE.format(data='{"id":1,"order_id":2,"side":"buy","amount":0.1,"price":3.3,"fee":1e-8}'))
    assert isinstance(fill, Fill)
    assert (fill.amount, fill.price, fill.fee) == (Decimal("0.1"), Decimal("3.3"), Decimal("1e-8"))


def test_ids_beyond_64_bits_are_exact() -> None:
    """orjson reads 2**64 as a float (1.8446744073709552e+19): the id must still be its exact digits."""
    big = 2**64 + 7
    fill = Log().ws(
        TRADE.format(data=f'{{"id":{big},"order_id":{big + 1},"side":"sell","amount":"1","price":"2","fee":"0"}}')
    )
    assert isinstance(fill, Fill)
    assert (fill.trade_id, fill.order_id) == (str(big), str(big + 1))


def test_nan_literal_is_unknown_not_a_crash() -> None:
    event = Log().ws(TRADE.format(data='{"id":1,"side":"buy","amount":NaN,"price":"1","fee":"0"}'))
    assert isinstance(event, Unknown)
    assert "NaN" in event.reason


def test_unknown_reasons_are_the_exact_decoders() -> None:
    """A float where text belongs (here the side) makes the entry Unknown; its reason names the value as the exact
    decoder read it (Decimal('0.0')), whichever decoder read it first (found by the property test below)."""
    event = Log().ws(TRADE.format(data='{"id":1,"side":0.0,"amount":"1","price":"1","fee":"0"}'))
    assert isinstance(event, Unknown)
    assert event.reason == "bad side Decimal('0.0')"


def test_order_event_with_float_price_token() -> None:
    text = (
        '{"event":"order_created","channel":"private-my_orders_btcusd-1","data":{"id":5,"order_type":0,'
        '"amount":"1","amount_at_create":"1","price":61200.10,"microtimestamp":"1700000000000000"}}'
    )
    event = Log().ws(text)
    assert isinstance(event, OrderEvent)
    assert event.price == Decimal("61200.10")
    assert str(event.price) == "61200.10"  # the token's own scale, as loads_exact keeps it


numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)
    | st.none()
    | st.booleans()
    | st.text(max_size=4)
)
# tests/data always; the shared samples too when present (see bitstamp_samples)
SAMPLES = [json.loads(text) for corpus in corpus_dirs() for text in private_frame_texts(corpus)]


def _with(message: Any, key_choice: int, value: Any) -> Any:
    """The sample with one field of its ``data`` (or of the frame) set to ``value``."""
    copy = dict(message)
    target = dict(copy["data"]) if isinstance(copy.get("data"), dict) else copy
    keys = sorted(target)
    target[keys[key_choice % len(keys)]] = value
    if target is not copy:
        copy["data"] = target
    return copy


@settings(max_examples=1000)
@given(st.integers(min_value=0), st.integers(min_value=0), numbers, st.booleans())
def test_fast_path_equals_exact_decoder(which: int, key_choice: int, value: Any, nan: bool) -> None:
    message = _with(SAMPLES[which % len(SAMPLES)], key_choice, value)
    payload = json.dumps(message)
    if nan:
        payload = payload.replace("null", "NaN", 1)  # json's extension literal, which orjson refuses
    entry = to_log(
        NewEntry(
            account="acc",
            source="ws",
            channel=message["channel"],
            event=message["event"],
            payload=payload,
            dedup_key="k",
            received_at=NOW,
        ),
        7,
    )
    assert parse_entry(entry) == _parse(entry, loads_exact)


@given(
    st.one_of(
        st.text(alphabet="0123456789", max_size=25),
        st.text(alphabet="0123456789-+ _\t\n٣²x.e", max_size=25),
        st.text(max_size=8),
        st.integers().map(str),
    )
)
def test_int_text_reads_text_as_its_definition(value: str) -> None:
    """``wire.int_text``'s quick path for the usual text (ASCII digits, no regex) answers as the definition: an
    optional minus and ASCII digits, around spaces, else None (``int()`` alone would take "+1", "1_000", "٣")."""
    stripped = value.strip()
    expected = int(stripped) if re.fullmatch(r"-?[0-9]+", stripped) else None
    assert int_text(value) == expected


ID_VALUES = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.sampled_from([" 12 ", "None"])
)


@given(st.dictionaries(st.sampled_from(["id", "id_str", "other"]), ID_VALUES), st.booleans())
def test_id_text_answers_as_wire_id_text(obj: dict[str, Any], with_str_key: bool) -> None:
    """``parse_fields.id_text``'s quick paths (the ``*_str`` text, an int token, no value at all) answer as
    ``wire.id_text``; a float where the id belongs asks for the exact decoder instead."""
    str_key = "id_str" if with_str_key else None
    expected = wire_id_text(obj, "id", str_key)
    if expected is None and type(obj.get("id")) is float:
        with pytest.raises(NeedExact):
            fields_id_text(obj, "id", str_key)
    else:
        assert fields_id_text(obj, "id", str_key) == expected


@given(st.integers(min_value=0, max_value=10**18 - 1) | st.integers(min_value=0, max_value=2 * 10**15))
def test_micro_is_us_to_datetime(us: int) -> None:
    """``micro``'s quick path (µs digits: the epoch plus ``us`` one-µs steps) is ``us_to_datetime``'s value, or the
    same error beyond year 9999."""
    try:
        expected = us_to_datetime(us)
    except OverflowError:
        with pytest.raises(OverflowError):
            micro({"microtimestamp": str(us)})
        return
    got = micro({"microtimestamp": str(us)})
    assert got == expected
    assert got is not None and got.tzinfo is UTC and got.utcoffset() == expected.utcoffset()


@given(ID_VALUES | st.integers(min_value=-(2**70), max_value=2**70))
def test_fields_int_text_answers_as_wire_int_text(value: Any) -> None:
    """``parse_fields.int_text``'s quick path (an int token) answers as ``wire.int_text``; a float asks for the exact
    decoder instead."""
    expected = int_text(value)
    if expected is None and type(value) is float:
        with pytest.raises(NeedExact):
            fields_int_text(value)
    else:
        assert fields_int_text(value) == expected
        assert type(fields_int_text(value)) is type(expected)
