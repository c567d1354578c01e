"""Reading one field of a decoded wire object, exactly: the helpers every ``parse_*`` module shares.

They raise ``Bad`` (becomes ``Unknown`` with the reason) for a value the parser cannot use, and ``NeedExact`` for a
float where a number belongs: the fast decoder (``orjson``) makes every number with a fraction or an exponent a
float, and an integer beyond 64 bits too, so a float here means "parse this entry again with ``loads_exact``", never
a value to use (``parse.parse_entry`` does that). Money is ``Decimal`` from the ``*_str`` twin or the exact token;
times are aware UTC (docs/bitstamp.md §0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from tracker.bitstamp.channels import Channel, parse_channel
from tracker.bitstamp.wire import id_text as _wire_id_text
from tracker.bitstamp.wire import int_text as _wire_int_text
from tracker.bitstamp.wire import parse_rest_datetime, us_to_datetime
from tracker.domain.events import Side, Unknown
from tracker.domain.log import Parseable
from tracker.domain.money import parse_decimal

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


class Bad(ValueError):
    """A payload we cannot read; becomes ``Unknown``."""


class NeedExact(Exception):
    """A number the parser reads came out of the fast decoder as a float: parse the entry again from ``loads_exact``.

    ``orjson`` (the fast path) makes every JSON number with a fraction or an exponent a float, and also an integer
    beyond 64 bits; ``loads_exact`` makes the former ``Decimal`` and the latter ``int``. So a float reaching the
    parser means "this entry needs the exact decoder", never a value to use. Not a ``ValueError``: nothing else may
    catch it."""


@lru_cache(maxsize=1024)
def channel_of(text: str) -> Channel:
    """Channels are few; parsing each once keeps the rebuild fast. Raises ``ValueError`` like ``parse_channel``."""
    return parse_channel(text)


def id_text(obj: dict[str, Any], key: str, str_key: str | None = None) -> str | None:
    """``wire.id_text``; a float where the id should be (an integer beyond 64 bits, from the fast decoder) needs the
    exact decoder (``NeedExact``). The three usual cases (the ``*_str`` twin's text, else an int token, else no value
    at all) are answered here as ``wire.id_text`` answers them, without the call (a rebuild reads millions of ids)."""
    if str_key is not None:
        value = obj.get(str_key)
        if type(value) is str:
            text = value.strip()
            if text:
                return text
    value = obj.get(key)
    if type(value) is int:
        return str(value)
    if value is None:  # absent (an order's orig_order_id, a spot fill's position_id): wire.id_text's None, no call
        return None
    result = _wire_id_text(obj, key, str_key)
    if result is None and type(obj.get(key)) is float:
        raise NeedExact
    return result


def int_text(value: object) -> int | None:
    """``wire.int_text``; a float needs the exact decoder (``NeedExact``). An int token, the usual case (an order's
    ``order_type`` and ``order_subtype``), is answered here as ``wire.int_text`` answers it, without the call."""
    if type(value) is int:
        return value
    result = _wire_int_text(value)
    if result is None and type(value) is float:
        raise NeedExact
    return result


def obj_of(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad(f"{what} is not an object")
    return value


DECIMALS_KEPT: Final = 4096


class DecimalTexts(dict[str, Decimal]):
    """Decimal text -> its finite ``Decimal`` (immutable, so one object may serve every use): ``texts[text]``.

    A remembered text is answered by the dict's own lookup (C), with no Python call; a new one by ``__missing__``:
    ``Decimal()`` (which strips whitespace like ``parse_decimal``), remembered when finite (the memo is emptied
    when ``DECIMALS_KEPT`` texts are), anything else to ``parse_decimal`` for its exact error (``BadAmount``).
    An order's events repeat its amount and price, its fills the price, most steps ``"0"``: 80 % of the amounts in
    the first 100,000 events of bench/rebuild.py's model log were hits, a dict lookup a sixth of ``Decimal()``
    (~0.04 against ~0.24 us)."""

    def __missing__(self, text: str) -> Decimal:
        try:
            result = Decimal(text)
        except ArithmeticError:
            return parse_decimal(text)
        if not result.is_finite():
            return parse_decimal(text)  # (raises: not a finite number)
        if len(self) >= DECIMALS_KEPT:
            self.clear()
        self[text] = result
        return result


DECIMALS: Final = DecimalTexts()  # the one memo: decimal_of's, and parse_typed's money texts


def decimal_of(value: object) -> Decimal:
    """``parse_decimal`` with a fast path for the usual decimal text (the rebuild parses millions): a text through
    ``DECIMALS`` (remembered); a finite ``Decimal`` as it is; a float needs the exact decoder; anything else goes to
    ``parse_decimal`` (an int, or its exact error)."""
    if type(value) is str:
        return DECIMALS[value]
    if type(value) is Decimal and value.is_finite():
        return value
    if type(value) is float:
        raise NeedExact
    return parse_decimal(value)


def dec(d: dict[str, Any], key: str, str_key: str | None = None) -> Decimal:
    """The money at ``str_key`` (the ``*_str`` twin) when present, else at ``key``; missing is ``Bad``."""
    if str_key is not None:
        value = d.get(str_key)
        if value is not None:
            return decimal_of(value)
    value = d.get(key)
    if value is None:
        raise Bad(f"missing {key!r}")
    return decimal_of(value)


def opt_dec(d: dict[str, Any], key: str, str_key: str | None = None) -> Decimal | None:
    """Like ``dec``, but missing is ``None``."""
    if str_key is not None:
        value = d.get(str_key)
        if value is not None:
            return decimal_of(value)
    value = d.get(key)
    return None if value is None else decimal_of(value)


def req_id(d: dict[str, Any], key: str, str_key: str | None = None) -> str:
    value = id_text(d, key, str_key)
    if value is None:
        raise Bad(f"missing id {key!r}")
    return value


def opt_text(d: dict[str, Any], key: str) -> str | None:
    """A non-empty string at ``key``, else ``None``."""
    value = d.get(key)
    return value if isinstance(value, str) and value else None


def micro(d: dict[str, Any]) -> datetime | None:
    """``microtimestamp`` (µs, usually digits in a string) as aware UTC."""
    value = d.get("microtimestamp")
    if type(value) is str and len(value) < 19 and value.isascii() and value.isdigit():  # the usual: µs digits
        # us_to_datetime's value: a µs times an int is the exact integer timedelta, and ~1,450 of ~5,000 machine
        # instructions fewer than timedelta(0, 0, n) (which parses its arguments and sums three products)
        return _EPOCH + _ONE_US * int(value)
    us = int_text(value)
    return None if us is None else us_to_datetime(us)


def seconds(value: object) -> datetime | None:
    """Unix seconds (a string or an integer) as aware UTC."""
    number = int_text(value)
    return None if number is None else us_to_datetime(number * 1_000_000)


def flex_time(value: object) -> datetime | None:
    """REST datetime text, or a unix number whose unit is guessed from its size (s, ms or µs)."""
    parsed = parse_rest_datetime(value)
    if parsed is not None:
        return parsed
    number = int_text(value)
    if number is None:
        return None
    if abs(number) >= 10**14:
        return us_to_datetime(number)
    if abs(number) >= 10**11:
        return us_to_datetime(number * 1000)
    return us_to_datetime(number * 1_000_000)


def side_code(value: object) -> Side | None:
    """WS ``order_type`` and REST ``type``: 0 is buy, 1 is sell (an integer or its text)."""
    code = int_text(value)
    if code == 0:
        return "buy"
    if code == 1:
        return "sell"
    return None


def side_word(value: object) -> Side:
    """my_trades and trade_history ``side``: ``"buy"``/``"sell"`` in any case."""
    word = value.strip().lower() if isinstance(value, str) else None
    if word == "buy":
        return "buy"
    if word == "sell":
        return "sell"
    raise Bad(f"bad side {value!r}")


def market_of(entry: Parseable) -> str:
    """The entry's market, else the one its channel names; none is ``Bad``."""
    if entry.market:
        return entry.market
    market = channel_of(entry.channel).market
    if market is None:
        raise Bad("no market")
    return market


def unknown(entry: Parseable, reason: str) -> Unknown:
    return Unknown(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        channel=entry.channel,
        event=entry.event,
        reason=reason,
    )
