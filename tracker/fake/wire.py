"""Exact number spelling and hand-written JSON for the fake's frames (pure).

Bitstamp sends a float-looking JSON number beside a string twin (``"amount": 0.3, "amount_str": "0.30000000"``) and
writes small floats in exponent form (``1e-08``). ``json.dumps`` cannot emit a chosen number token for a Decimal, so
frames are written by :func:`dumps`, which copies :class:`Num` tokens verbatim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


class Num(str):
    """A JSON number token written verbatim (e.g. ``1e-08``, ``19342``, ``0.28435528``)."""

    __slots__ = ()


def num(value: Decimal) -> Num:
    """The token a float-emitting server writes for ``value``: an integer if integral, else Python's shortest float
    repr (``1e-08``, ``0.3``). The token parses (with ``parse_float=Decimal``) to a number equal to ``value`` for the
    8-decimal amounts and 2-decimal prices the fake uses."""
    if value == value.to_integral_value():
        return Num(str(int(value)))
    return Num(repr(float(value)))


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals (``"0.30000000"``); raises if that would round."""
    q = Decimal(1).scaleb(-places)
    out = value.quantize(q)
    if out != value:
        raise ValueError(f"{value} does not fit {places} decimals")
    return f"{out:f}"


def plain(value: Decimal) -> str:
    """Shortest plain (non-exponent) decimal text: ``Decimal("0.50")`` → ``"0.5"``, ``0`` → ``"0"``."""
    if value == 0:
        return "0"
    text = f"{value.normalize():f}"
    return text


def dumps(obj: Any) -> str:
    """Compact JSON like Bitstamp's (``", "`` / ``": "`` separators are not used by the server either way)."""
    parts: list[str] = []
    _write(obj, parts)
    return "".join(parts)


def _write(obj: Any, out: list[str]) -> None:
    if isinstance(obj, Num):
        out.append(str.__str__(obj))
    elif isinstance(obj, str):
        out.append(_encode_str(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, Decimal):
        out.append(_encode_str(plain(obj)))
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for key, value in obj.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _write(value, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _write(value, out)
        out.append("]")
    elif isinstance(obj, float):
        raise TypeError("floats are not allowed in the fake's frames; use Num")
    else:
        raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def rest_datetime(us: int, *, micro: bool = True) -> str:
    """REST ``datetime``: ``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` in UTC."""
    dt = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f" if micro else "%Y-%m-%d %H:%M:%S")


def iso_utc(us: int) -> str:
    """Ground-truth timestamp: ISO 8601 UTC with microseconds, e.g. ``2026-11-29T14:10:00.123456+00:00``."""
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000).isoformat()


def day_utc(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%d")
