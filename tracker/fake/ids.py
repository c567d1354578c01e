"""The fake account's clock and identifiers (pure): event time, order ids, transaction ids, position ids, event ids.

Each id has the shape the real exchange gives it (docs/bitstamp.md): spot order ids that cross 2^53 after a few orders,
19-digit perp order ids, ascending transaction ids with gaps, and UUID-shaped ``event_id`` strings that sort in
emission order (``account_order_data``'s ``since_id``/``until_id`` compare them as text). All draws come from the
model's one seeded ``random.Random``, in a fixed order, so a seed still yields byte-identical frames.
"""

from __future__ import annotations

import random

from tracker.fake.markets import Market


class IdSource:
    """Time and id counters of one account. ``now_us`` only moves forward."""

    def __init__(self, rng: random.Random, start_us: int) -> None:
        self.rng = rng
        self.now_us = start_us
        self._eid_seq = 0
        self._spot_oid = 9_007_199_254_730_000 + rng.randint(0, 9999)  # crosses 2^53 after a few orders
        self._perp_oid = 2_001_939_623_936_270_000 + rng.randint(0, 9999)  # 19 digits
        self._tx_id = 9_007_199_254_740_000 + rng.randint(0, 900)
        self._pos_seq = 1_234_567_000 + rng.randint(0, 999)

    def catch_up(self, now_us: int) -> None:
        """Never behind the wall clock (it runs ahead of it when the model is stepped faster than real time)."""
        self.now_us = max(self.now_us, now_us)

    def tick(self, rng: random.Random | None = None) -> int:
        """The time of the next event: 20 to 400 µs after the previous one. ``rng`` draws the step instead of the
        model's generator (the account movements draw from their own, so the trading story stays that of the
        seed)."""
        self.now_us += 20 + int((rng or self.rng).random() * 381)
        return self.now_us

    def event_id(self) -> str:
        """A UUID-shaped id that sorts (as text) in emission order: the event time, then a sequence number."""
        self._eid_seq += 1
        h = f"{(self.now_us << 64) | self._eid_seq:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def transaction(self, rng: random.Random | None = None) -> int:
        """A ``user_transactions`` id (a fill's is also its websocket trade id), ascending over every trade account
        of the user. ``rng`` as for :meth:`tick`."""
        self._tx_id += 1 + int((rng or self.rng).random() * 40)
        return self._tx_id

    def order(self, m: Market) -> int:
        if m.perp:
            self._perp_oid += 1 + int(self.rng.random() * 5000)
            return self._perp_oid
        self._spot_oid += 1 + int(self.rng.random() * 2000)
        return self._spot_oid

    def position(self) -> str:
        self._pos_seq += self.rng.randint(1, 99)
        return str(self._pos_seq)

    def continue_after(self, *, spot_order: int, perp_order: int, transaction: int, position_offset: int) -> None:
        """Move the counters past ids an earlier run already used (the demo continuing its database): every id
        made from now on is greater than the ones given. Position ids are small counters, so they move by a
        run-unique ``position_offset`` instead."""
        self._spot_oid = max(self._spot_oid, spot_order)
        self._perp_oid = max(self._perp_oid, perp_order)
        self._tx_id = max(self._tx_id, transaction)
        self._pos_seq += position_offset
