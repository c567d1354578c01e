"""Exact sums of decimal text on SQLite: ``sum``, ``total`` and ``decimal_sum`` registered on every connection.

SQLite's built-in ``sum()`` converts text to a double, so ``SUM(fee)`` over money stored as decimal text (see
``projection_schema.Money``) would be rounded. Python's sqlite3 lets a connection override a built-in function of the
same name and arity, so tracker's connections get these instead (``engine.py`` registers them on connect):

- ``sum(x)``: NULL for no non-NULL input (like SQLite); an integer when every input is an integer (so counts stay
  integers); a float when any input is a float; otherwise the exact decimal total as canonical text
  (``tracker.domain.money.format_decimal``), which the ``Money`` column type reads back as ``Decimal``.
- ``total(x)``: as ``sum`` but ``0.0`` for no input and a float for all-integer input (SQLite's ``total`` contract).
- ``decimal_sum(x)``: exact decimal text always; the same name as the function built into the ``sqlite3`` shell
  (3.38+), so one query works in both places.

Text that is not a number counts as 0, as in SQLite.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal, InvalidOperation

from tracker.domain.money import EXACT
from tracker.domain.money import format_decimal as canonical_text


class _Sum:
    """State of one exact sum: integers, decimals and floats kept apart until the end."""

    def __init__(self) -> None:
        self.integers = 0
        self.decimals: Decimal | None = None
        self.floats: float | None = None
        self.seen = False

    def step(self, value: object) -> None:
        if value is None:
            return
        self.seen = True
        if isinstance(value, int):
            self.integers += value
        elif isinstance(value, float):
            self.floats = value if self.floats is None else self.floats + value
        else:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                number = Decimal(text.strip())
            except InvalidOperation:
                number = Decimal(0)
            if not number.is_finite():
                number = Decimal(0)
            self.decimals = number if self.decimals is None else EXACT.add(self.decimals, number)

    def inverse(self, value: object) -> None:
        """Remove a value that left the window frame (window-function use: ``sum(x) OVER (...)``)."""
        if value is None:
            return
        if isinstance(value, int):
            self.integers -= value
        elif isinstance(value, float):
            self.floats = (self.floats or 0.0) - value
        else:
            self.step(_negated(value))

    def exact(self) -> int | float | str | None:
        if not self.seen:
            return None
        if self.floats is not None:
            return self.floats + self.integers + float(self.decimals or 0)
        if self.decimals is None:
            return self.integers
        return canonical_text(EXACT.add(self.decimals, Decimal(self.integers)))


def _negated(value: object) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        return format(-Decimal(text.strip()), "f")
    except InvalidOperation:
        return "0"


class ExactSum(_Sum):
    def value(self) -> int | float | str | None:
        return self.exact()

    def finalize(self) -> int | float | str | None:
        return self.exact()


class ExactTotal(_Sum):
    def value(self) -> float | str:
        return self.finalize()

    def finalize(self) -> float | str:
        result = self.exact()
        if result is None:
            return 0.0
        return float(result) if isinstance(result, int) else result


class DecimalSum(_Sum):
    def value(self) -> str | None:
        return self.finalize()

    def finalize(self) -> str | None:
        if not self.seen:
            return None
        total = EXACT.add(self.decimals or Decimal(0), Decimal(self.integers))
        if self.floats is not None:
            total = EXACT.add(total, Decimal(repr(self.floats)))
        return canonical_text(total)


def register_exact_sums(connection: sqlite3.Connection) -> None:
    """Install the exact ``sum``, ``total`` and ``decimal_sum`` on one sqlite3 connection.

    Registered as window functions, which also serve as plain aggregates, so ``sum(x) OVER (...)`` keeps working.
    """
    connection.create_window_function("sum", 1, ExactSum)
    connection.create_window_function("total", 1, ExactTotal)
    connection.create_window_function("decimal_sum", 1, DecimalSum)
