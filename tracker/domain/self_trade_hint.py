"""Why an order's fills fall short, when the log can tell: a self trade whose ``self_trade`` frame was never logged.

Self-trade prevention lowers two of the user's orders' remainders without a trade: no fill, no fee. tracker learns
the offset from the ``self_trade`` frame on the private ``live_trades`` channel and takes it off ``amount_filled``
(docs/semantics.md). That frame has no REST replay (docs/bitstamp.md §2.3), so when it is missed (frames withheld
while the connection stayed up, a reconnect's window), ``amount_filled`` (amount - remaining - logged offsets)
exceeds the order's fills by exactly the offset, and the cross-check opens ``order_fills_mismatch`` on both orders.

What the log still holds is the order's own events: the offset shows there as an event whose remainder dropped
while its ``amount_traded`` (per event, docs/bitstamp.md gotcha 4) says nothing was traded. That shape on
``my_orders`` is our reading [I: undocumented; the fake sends it, docs/semantics.md "Self trades"; confidence
medium], and a lost fill reported with ``amount_traded`` 0 would look the same. So this is a hint shown beside the
discrepancy for the person triaging it, never its resolution: the discrepancy stays open until someone checks and
acknowledges it (``tracker discrepancies ack``). It is given only when the drops match the shortfall exactly.

Pure: the order's logged events in, the hint (or ``None``) out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from tracker.domain.events import OrderEvent
from tracker.domain.gaps import EVENT_ID_LENGTH
from tracker.domain.money import format_decimal


@dataclass(frozen=True, slots=True)
class MissedSelfTrade:
    amount: Decimal  # the shortfall the drops explain
    seqs: tuple[int, ...]  # the log entries whose remainder dropped with nothing traded


def untraded_drops(events: Iterable[OrderEvent]) -> tuple[Decimal, tuple[int, ...]] | None:
    """The sum of the remainder's drops in events that traded nothing, and their seqs, over one order's events in
    the exchange's order; ``None`` when that order cannot be known or read safely.

    The exchange's order: a REST replay of events missed live is logged after later live ones, so the log's order
    is not the order's. Event ids of the standard form lead with their time in µs (``_is_stale`` in
    projection_orders.py), so their text order is; with any other id, or none, the log's order is used only if it
    is the only one there is (every event from one source). A repeated event id counts once. A market order is left
    out: its placeholder remainders (a market buy created with amount 0) are not amounts."""
    unique: dict[str, OrderEvent] = {}
    plain: list[OrderEvent] = []
    for event in events:
        if event.is_market:
            return None
        if event.event_id is None:
            plain.append(event)
        else:
            unique.setdefault(event.event_id, event)
    if plain and unique:
        return None  # some with ids, some without: no one order covers them all
    if unique and all(len(event_id) == EVENT_ID_LENGTH for event_id in unique):
        ordered = [unique[event_id] for event_id in sorted(unique)]
    elif len({event.source for event in (*unique.values(), *plain)}) <= 1:
        ordered = sorted((*unique.values(), *plain), key=lambda event: event.seq)
    else:
        return None
    total = Decimal(0)
    seqs: list[int] = []
    previous: Decimal | None = None
    for event in ordered:
        remaining = event.amount_remaining
        if previous is not None and remaining < previous and event.amount_traded == 0:
            total += previous - remaining
            seqs.append(event.seq)
        previous = remaining
    return total, tuple(seqs)


def missed_self_trade(
    events: Iterable[OrderEvent], *, amount_filled: Decimal, fills_sum: Decimal, self_trade_offset: Decimal
) -> MissedSelfTrade | None:
    """The hint for a closed order whose ``amount_filled`` exceeds its fills: given when the drops with nothing
    traded, less the self-trade offsets already logged, are exactly the shortfall."""
    shortfall = amount_filled - fills_sum
    if shortfall <= 0:
        return None
    found = untraded_drops(events)
    if found is None:
        return None
    drops, seqs = found
    if drops - self_trade_offset != shortfall:
        return None
    return MissedSelfTrade(shortfall, seqs)


def describe(hint: MissedSelfTrade) -> str:
    """The hint in a sentence for ``tracker discrepancies``."""
    where = ", ".join(str(seq) for seq in hint.seqs)
    return (
        f"a self trade whose self_trade frame is not in the log: the order's remainder dropped by"
        f" {format_decimal(hint.amount)} with nothing traded (log seq {where}), which is how self-trade prevention"
        " shows on my_orders; self trades have no REST source, so it cannot be filled in. Check it and acknowledge"
        " it (`tracker discrepancies ack ID --note ...`)"
    )
