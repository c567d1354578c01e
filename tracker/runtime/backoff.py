"""Capped exponential backoff with jitter (pure; the random source is injected, time is the caller's)."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``base * factor**n`` capped at ``cap``, each drawn uniformly from [d/2, d] ("equal jitter") so that
    many clients do not retry in lockstep. ``reset()`` after a healthy period."""

    def __init__(
        self, *, base: float = 0.5, cap: float = 30.0, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError("need 0 < base <= cap and factor >= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * self.factor**self.failures)
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
