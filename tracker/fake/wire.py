"""Exact number spelling and JSON writing for the fake's frames (pure).

Bitstamp sends a float-looking JSON number beside a string twin (``"amount": 0.3, "amount_str": "0.30000000"``) and
writes small floats in exponent form (``1e-08``). ``json.dumps`` cannot emit a chosen number token for a Decimal, so
frames are written by :func:`dumps`, which writes :class:`Num` tokens verbatim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


class Num(str):
    """A JSON number token written verbatim (e.g. ``1e-08``, ``19342``, ``0.28435528``).

    Stored with a ``\\x01`` marker so the C JSON encoder can do the work: :func:`dumps` then strips the quotes
    around marked values. ``Num("1e-08").token`` is the bare token."""

    __slots__ = ()

    def __new__(cls, token: str) -> Num:
        return super().__new__(cls, _MARK + token)

    @property
    def token(self) -> str:
        return str.__str__(self)[1:]


def num(value: Decimal) -> Num:
    """The token a float-emitting server writes for ``value``: an integer if integral, else Python's shortest float
    repr (``1e-08``, ``0.3``). The token parses (with ``parse_float=Decimal``) to a number equal to ``value`` for the
    8-decimal amounts and 2-decimal prices the fake uses."""
    if value == value.to_integral_value():
        return Num(str(int(value)))
    return Num(repr(float(value)))


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals (``"0.30000000"``); raises if that would round."""
    out = value.quantize(_QUANTA[places])
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
    """Compact JSON (``,`` and ``:`` separators, ASCII) with :class:`Num` tokens unquoted and Decimals as plain
    strings. (The model never builds binary floats: every number token is a :class:`Num`.)"""
    parts = _encoder.encode(obj).split('"\\u0001')
    if len(parts) == 1:
        return parts[0]
    return parts[0] + "".join(p.replace('"', "", 1) for p in parts[1:])


def json_ready(obj: Any) -> Any:
    """``obj`` as plain JSON data the way a client reads what :func:`dumps` wrote, except that every non-integer
    number comes back as its exact token text (``0.0`` → ``"0.0"``): no binary float ever appears."""
    return json.loads(dumps(obj), parse_float=str)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return plain(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


_MARK = "\x01"
_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(19)}
_encoder = json.JSONEncoder(separators=(",", ":"), default=_default)


def rest_datetime(us: int, *, micro: bool = True) -> str:
    """REST ``datetime``: ``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` in UTC."""
    dt = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f" if micro else "%Y-%m-%d %H:%M:%S")


def iso_utc(us: int) -> str:
    """Ground-truth timestamp: ISO 8601 UTC with microseconds, e.g. ``2026-11-29T14:10:00.123456+00:00``."""
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000).isoformat()


def day_utc(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%d")
