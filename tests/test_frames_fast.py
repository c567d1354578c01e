"""The fast decoding of frames (orjson first, ``loads_exact`` when it must) builds the entries the exact one builds.

``frames.classify`` decodes a frame with orjson, and ``entry_from_data`` decodes it again with ``loads_exact`` when
a float stands where an id or a time is read (an integer beyond 64 bits); text orjson refuses goes to ``loads_exact``
directly. The reference is the exact decoding alone (``classify(text, exact=True)``), which is what every frame got
before. Random frames put every kind of JSON number (64-bit edges and beyond, fractions, exponents, NaN, Infinity,
1e400) and text in every field the entry reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bitstamp_samples import PRIVATE_SAMPLE_FILES, frame_texts
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tracker.bitstamp.frames import (
    Data,
    Ignored,
    Malformed,
    classify,
    entry_from_data,
    entry_from_frame,
)
from tracker.domain.log import NewEntry, QuarantineItem

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
USER = 4848701

Result = NewEntry | QuarantineItem | Ignored


def fast(text: str) -> Result:
    return entry_from_frame(text, account="acc", received_at=NOW, connection_id="c1")


def exact(text: str) -> Result:
    """The reference: the exact decoder only."""
    frame = classify(text, exact=True)
    if isinstance(frame, Data):
        return entry_from_data(frame, account="acc", received_at=NOW, connection_id="c1")
    if isinstance(frame, Malformed):
        return QuarantineItem(
            kind="malformed",
            reason=frame.reason,
            raw=text,
            received_at=NOW,
            account="acc",
            source="ws",
            connection_id="c1",
        )
    return Ignored(reason=f"control frame {frame.event}")


CHANNELS = {
    f"private-my_orders_btcusd-{USER}": ["order_created", "order_deleted", "order_changed", "surprise"],
    f"private-my_trades_btcusd-perp-{USER}": ["trade", "surprise"],
    f"private-live_trades_ethusd-{USER}": ["self_trade"],
    f"private-my_settlements-{USER}": ["settlement", "insurance_fund_premium"],
    f"private-my_liquidations-{USER}": ["im_breach_warning", "liquidation_start"],
    f"private-my_token_settlements-{USER}": ["token_ready"],
    "live_trades_btcusd": ["trade"],
    "private-nonsense": ["order_created"],
}
READ_KEYS = (
    "id",
    "id_str",
    "order_id",
    "order_id_str",
    "position_id",
    "buy_order_id",
    "buy_order_id_str",
    "sell_order_id",
    "sell_order_id_str",
    "microtimestamp",
    "timestamp",
    "tnx_id",
    "ts",
    "amount",
)

_EDGES = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**19)]
# JSON number tokens (and the literals json accepts) as text: what orjson and loads_exact may read differently.
number_token = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(_EDGES).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(lambda d: format(d, "f")),
    st.sampled_from(["1e3", "1.5E-7", "-0", "-0.0", "1e400", "NaN", "Infinity", "-Infinity", "0.1"]),
)
text_token = st.one_of(
    st.text(max_size=8).map(json.dumps),
    st.integers(0, 2**70).map(lambda n: json.dumps(str(n))),
    st.just('"\\ud800"'),  # a lone surrogate escape: json reads it, orjson refuses it
)
value_token = st.one_of(number_token, text_token, st.sampled_from(["null", "true", "false", "[]", "{}"]))


@st.composite
def frames(draw: st.DrawFn) -> str:
    channel = draw(st.sampled_from(sorted(CHANNELS)))
    event = draw(st.sampled_from(CHANNELS[channel]))
    keys = draw(st.lists(st.sampled_from(READ_KEYS), unique=True, max_size=len(READ_KEYS)))
    data = ",".join(f"{json.dumps(key)}:{draw(value_token)}" for key in keys)
    top = [f'"event":{json.dumps(event)}', f'"channel":{json.dumps(channel)}', f'"data":{{{data}}}']
    for key in ("event_id", "pre_event_id"):
        if draw(st.booleans()):
            top.append(f'"{key}":{draw(value_token)}')
    order = draw(st.permutations(top))
    return "{" + ",".join(order) + "}"


@settings(max_examples=500, deadline=None)
@given(frames())
@example('{"event":"trade","channel":"private-my_trades_btcusd-4848701","data":{"id":18446744073709551616}}')
@example('{"event":"order_created","channel":"private-my_orders_btcusd-4848701","data":{"id":NaN}}')
@example('{"event":"bts:error","channel":"","data":{"code":18446744073709551616,"message":"x"}}')
def test_fast_decoding_builds_the_exact_entries(text: str) -> None:
    assert fast(text) == exact(text)


def test_samples_take_the_fast_path_and_build_the_exact_entries() -> None:
    """Every recorded private frame decodes fast (else this module tests nothing) to the exact entry."""
    for name in PRIVATE_SAMPLE_FILES:
        for text in frame_texts(name):
            frame = classify(text)
            assert isinstance(frame, Data), name
            assert not frame.exact, name
            assert fast(text) == exact(text), name


def test_an_id_beyond_64_bits_is_read_exactly() -> None:
    big = 2**64 + 1  # orjson makes it a float; the entry must carry its digits
    text = json.dumps({"event": "trade", "channel": f"private-my_trades_btcusd-{USER}", "data": {"id": big}})
    assert isinstance(classify(text), Data)
    result = fast(text)
    assert isinstance(result, NewEntry)
    assert result.trade_id == str(big)
    assert result.dedup_key.endswith(f":trade:{big}")


def test_text_orjson_refuses_is_decoded_exactly() -> None:
    text = '{"event":"trade","channel":"private-my_trades_btcusd-4848701","data":{"id":7,"amount":NaN}}'
    frame = classify(text)
    assert isinstance(frame, Data)
    assert frame.exact  # orjson refused NaN; loads_exact read it, as json.loads does
    result = fast(text)
    assert isinstance(result, NewEntry)
    assert result.trade_id == "7"
