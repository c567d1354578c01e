"""The typed path (``parse_typed``: msgspec into structs, for order events and trades) gives exactly what the
reference gives (``parse_ws`` from the exact decoder), or steps aside (raises one of ``TYPED_FAILURES``).

The frames: the samples' and the fake model's order and trade frames, with one field changed to a value of another
type or shape (or removed), the channel swapped, whitespace around the text; and the texts msgspec accepts but
Python's ``json`` refuses (too many digits, too deep), which must not reach msgspec.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from bitstamp_samples import corpus_dirs, private_frame_texts
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import NOW, to_log

from tracker.bitstamp import parse, parse_typed
from tracker.bitstamp.parse import _parse, parse_entry
from tracker.bitstamp.parse_typed import SHORT, TYPED_FAILURES, fill, order_event
from tracker.bitstamp.parse_ws import ORDER_KINDS
from tracker.bitstamp.wire import loads_exact
from tracker.domain.events import DomainEvent, Fill, OrderEvent
from tracker.domain.log import LogEntry, NewEntry
from tracker.fake.model import AccountModel

MODEL = AccountModel(3, ("btcusd", "ethusd", "btcusd-perp"))
MODEL_TEXTS = [emission.text for step in range(400) for emission in MODEL.step(1_790_000_000_000_000 + step * 250_000)]
ALL_TEXTS = [text for corpus in corpus_dirs() for text in private_frame_texts(corpus)] + MODEL_TEXTS
HOT = [
    json.loads(text)
    for text in ALL_TEXTS
    if json.loads(text).get("event") in (*ORDER_KINDS, "trade") and isinstance(json.loads(text).get("data"), dict)
]


def _entry(
    message: Any, *, payload: str | None = None, channel: str | None = None, market: str | None = None
) -> LogEntry:
    text = json.dumps(message) if payload is None else payload
    return to_log(
        NewEntry(
            account="acc",
            source="ws",
            channel=channel or message["channel"],
            event=message["event"],
            payload=text,
            dedup_key="k",
            received_at=NOW,
            market=market,
        ),
        7,
    )


def _typed(entry: LogEntry) -> DomainEvent | None:
    """The typed path's event, or None when it steps aside."""
    try:
        return fill(entry) if entry.event == "trade" else order_event(entry)
    except TYPED_FAILURES:
        return None


def _check(entry: LogEntry) -> DomainEvent | None:
    reference = _parse(entry, loads_exact)
    typed = _typed(entry)
    if typed is not None:
        assert type(typed) is type(reference)
        assert typed == reference
        # the same value types too (== takes 1 for True, Decimal("1") for 1)
        assert [type(getattr(typed, name)) for name in typed.__struct_fields__] == [
            type(getattr(reference, name)) for name in reference.__struct_fields__
        ]
    assert parse_entry(entry) == reference
    return typed


def test_the_hot_frames_take_the_typed_path() -> None:
    """Every model frame and every sample of the two shapes is read by the typed path (the rebuild's speed rests on
    it), as the reference reads it; the samples' other shapes step aside only where said."""
    assert len(HOT) > 300
    stepped_aside = [message for message in HOT if _check(_entry(message)) is None]
    model_hot = [m for m in map(json.loads, MODEL_TEXTS) if m["event"] in (*ORDER_KINDS, "trade")]
    assert model_hot and not [m for m in stepped_aside if m in model_hot]
    assert len(stepped_aside) <= len(HOT) // 10, stepped_aside


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)
    | st.sampled_from(
        ["", " ", "None", " 12 ", "0", "00", "1e3", "NaN", "Infinity", "buy", " SELL ", "\u0663", "1_000"]
    )
    | st.text(max_size=6)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)
KEYS = st.sampled_from(
    [
        "id", "id_str", "order_id", "order_id_str", "order_type", "order_subtype", "microtimestamp", "datetime",
        "amount", "amount_str", "amount_traded", "amount_at_create", "price", "price_str", "fee", "fee_str",
        "client_order_id", "orig_order_id", "orig_order_id_str", "trade_account_id", "is_liquidation", "reduce_only",
        "stop_price", "side", "position_id", "trade_type", "event_id", "pre_event_id", "order_source", "data",
    ]
)  # fmt: skip
MISSING = object()


def _changed(message: dict[str, Any], key: str, value: Any, top: bool) -> dict[str, Any]:
    copy = dict(message)
    data = copy.get("data")
    target = copy if top or key == "data" or not isinstance(data, dict) else dict(data)
    if value is MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    if target is not copy:
        copy["data"] = target
    return copy


@settings(max_examples=1500)
@given(
    st.integers(min_value=0),
    st.lists(st.tuples(KEYS, VALUES | st.just(MISSING), st.booleans()), min_size=1, max_size=3),
    st.sampled_from([None, "private-live_trades_btcusd-1", "private-my_orders_ethusd-1", "private-my_trades-1"]),
    st.sampled_from([None, "btcusd", ""]),
    st.sampled_from(["", " ", "\n", "\t\r"]),
)
def test_typed_path_equals_the_reference(
    which: int, changes: list[tuple[str, Any, bool]], channel: str | None, market: str | None, space: str
) -> None:
    message = HOT[which % len(HOT)]
    for key, value, top in changes:
        message = _changed(message, key, value, top)
    _check(_entry(message, payload=space + json.dumps(message) + space, channel=channel, market=market))


@given(st.integers(min_value=0), st.sampled_from(["id_str", "amount_str", "price_str", "side", "event_id"]))
def test_duplicate_keys_read_as_json_reads_them(which: int, key: str) -> None:
    """The last of two equal keys wins, in json and in msgspec alike."""
    message = HOT[which % len(HOT)]
    text = json.dumps(message)
    inner = '{"data": {' if key != "event_id" else "{"
    payload = text.replace(inner, f'{inner}"{key}": "7", ', 1)
    _check(_entry(message, payload=payload))


@pytest.mark.parametrize(
    "extra",
    [
        '"x": 1' + "0" * 5000,  # json: more digits than int() converts (ValueError); msgspec skips it
        '"x": ' + "[" * 990 + "]" * 990,  # json: RecursionError near the limit; msgspec a little deeper
        '"x": "\\ud800"',  # a lone surrogate: json reads it, msgspec refuses
        '"x": NaN',  # json's extension, msgspec refuses
    ],
)
def test_texts_msgspec_reads_otherwise_go_to_the_reference(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each steps aside, and ``parse_entry`` reads it as it did without the typed path. (Not always as the exact
    decoder reads it: orjson reads the nesting 990 deep that ``json`` refuses, as before this path.)"""
    for message in (next(m for m in HOT if m["event"] == "trade"), next(m for m in HOT if m["event"] != "trade")):
        payload = json.dumps(message).replace('{"data": {', '{"data": {' + extra + ", ", 1)
        entry = _entry(message, payload=payload)
        assert _typed(entry) is None
        got = parse_entry(entry)
        with monkeypatch.context() as patch:
            patch.setattr(parse, "_TYPED", {})
            assert got == parse_entry(entry)


def test_events_are_the_domain_types() -> None:
    trade = next(m for m in HOT if m["event"] == "trade")
    order = next(m for m in HOT if m["event"] != "trade")
    assert isinstance(_typed(_entry(trade)), Fill)
    assert isinstance(_typed(_entry(order)), OrderEvent)


def test_texts_up_to_short_need_no_digit_limit_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SHORT``: no digit limit a program may set is below it, so a text that long passes without asking; a longer
    one is held to the limit of the moment (the lowest there is: it steps aside)."""
    assert SHORT <= parse_typed.LONGEST and sys.int_info.str_digits_check_threshold >= SHORT
    with pytest.raises(ValueError):
        sys.set_int_max_str_digits(SHORT - 1)  # (not 0, which is "no limit")
    before = sys.get_int_max_str_digits()
    for message in (next(m for m in HOT if m["event"] == "trade"), next(m for m in HOT if m["event"] != "trade")):
        text = json.dumps(message)
        assert len(text) <= SHORT
        sys.set_int_max_str_digits(SHORT)
        try:
            assert _typed(_entry(message)) is not None
            padded = text + " " * (SHORT + 1 - len(text))
            assert _typed(_entry(message, payload=padded)) is None  # longer than the limit: the reference reads it
            sys.set_int_max_str_digits(0)
            assert _typed(_entry(message, payload=padded)) is not None
        finally:
            sys.set_int_max_str_digits(before)


def test_channel_names_are_remembered_and_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_ChannelNames`` answers ``channel_of(text).name``; a bad channel raises (the entry steps aside) and is not
    kept; at ``CHANNELS_KEPT`` texts it starts again."""
    names = parse_typed._ChannelNames()
    assert names["private-my_orders_btcusd-314159"] == "my_orders"
    assert names["private-my_trades_ethusd-perp-1"] == "my_trades"
    with pytest.raises(ValueError):
        names["private-my_orders_btcusd"]  # (no user id)
    assert list(names) == ["private-my_orders_btcusd-314159", "private-my_trades_ethusd-perp-1"]
    monkeypatch.setattr(parse_typed, "CHANNELS_KEPT", 3)
    names["private-my_orders_ethusd-1"]
    assert len(names) == 3
    assert names["private-my_orders_ltcusd-1"] == "my_orders"
    assert list(names) == ["private-my_orders_ltcusd-1"]
