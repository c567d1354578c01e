"""Small wire helpers shared by frame classification, REST entry building and parsing.

- ``loads_exact``: JSON with floats as ``Decimal`` (ints are exact in Python's json already).
- ``dumps_canonical``: compact, sorted keys, ``Decimal`` written exactly in plain notation; stable text for REST rows.
- ``id_text``: an id as text, preferring the ``*_str`` twin, else the raw JSON token.
- time conversions: µs strings, seconds, perp milliseconds, REST ``datetime`` strings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

# The exact conversions live in the domain (the projection uses them too); re-exported for the wire's callers.
from tracker.domain.timeutil import EPOCH as EPOCH
from tracker.domain.timeutil import datetime_to_us as datetime_to_us
from tracker.domain.timeutil import us_to_datetime as us_to_datetime

_INT_RE: Final = re.compile(r"-?[0-9]+")


# One decoder for all calls: json.loads(..., parse_float=Decimal) builds a new one per call.
_EXACT_DECODER: Final = json.JSONDecoder(parse_float=Decimal)
# The decoder's scanner (set by JSONDecoder.__init__, documented in the json module's source but not in typeshed):
# one call parses a value at an index, without decode()'s whitespace handling.
_SCAN_ONCE: Final[Callable[[str, int], tuple[Any, int]]] = _EXACT_DECODER.scan_once  # type: ignore[attr-defined]


def loads_exact(text: str) -> Any:
    """Parse JSON keeping every number exact: floats become ``Decimal``, ints stay ``int``.

    The usual text (a frame, no surrounding whitespace) goes straight to the decoder's scanner; anything else
    (whitespace around it, extra data, not JSON) through ``JSONDecoder.decode``, which accepts or raises as
    ``json.loads`` does.
    """
    try:
        value, end = _SCAN_ONCE(text, 0)
    except StopIteration:
        return _EXACT_DECODER.decode(text)
    if end != len(text):
        return _EXACT_DECODER.decode(text)
    return value


def _encode(obj: object, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(json.dumps(obj))
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"cannot encode {obj!r} as JSON")
        out.append(format(obj, "f"))
    elif isinstance(obj, dict):
        out.append("{")
        for index, key in enumerate(sorted(obj)):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be text, got {key!r}")
            if index:
                out.append(",")
            out.append(json.dumps(key))
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for index, item in enumerate(obj):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON (floats are refused: inexact)")


def dumps_canonical(obj: object) -> str:
    """Compact JSON, sorted keys, decimals exactly in plain notation (``Decimal("1E-8")`` → ``0.00000001``)."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def id_text(obj: dict[str, Any], key: str, str_key: str | None = None) -> str | None:
    """An id as text: ``obj[str_key]`` if it is a non-empty string, else the raw token of ``obj[key]``.

    Accepts an int token or a string of digits (the same field is seen both ways); anything else gives ``None``.
    """
    if str_key is not None:
        value = obj.get(str_key)
        if isinstance(value, str):
            text = value.strip()
            if text:
                return text
    value = obj.get(key)
    if type(value) is int:  # the usual case first (the rebuild reads millions); bool is not int here
        return str(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text and text != "None":
            return text
    return None


def int_text(value: object) -> int | None:
    """An integer written as a JSON int or a string of digits; else ``None``."""
    if type(value) is int:  # the usual case first; bool is not int here
        return value
    if type(value) is str and len(value) < 19 and value.isascii() and value.isdigit():  # the usual text: no regex
        return int(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        try:
            return int(value.strip())
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            return None
    return None


def int64_or_none(value: int | None) -> int | None:
    """``value`` if it fits a signed 64-bit column (``exchange_ts_us``), else ``None``: a frame's absurd timestamp
    stays in its payload but must not make the append fail."""
    if value is None or not -(2**63) <= value < 2**63:
        return None
    return value


def unix_us_by_magnitude(number: int) -> int:
    """A unix time whose unit is not documented (``settlement_time``: docs/bitstamp.md §5.7; confidence: guess),
    read by its size: at least 10^14 is µs, at least 10^11 ms, else seconds. The thresholds are years 5138 in
    seconds and 1973 in ms, so the three units cannot be confused for any time tracker will see."""
    if abs(number) >= 10**14:
        return number
    if abs(number) >= 10**11:
        return number * 1000
    return number * 1_000_000


def parse_rest_datetime(value: object) -> datetime | None:
    """REST ``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` (UTC) or ISO-8601 with an offset → aware UTC; else ``None``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def display_market_to_symbol(value: str) -> str:
    """``"BTC/USD-PERP"`` → ``"btcusd-perp"``."""
    return value.replace("/", "").lower()
