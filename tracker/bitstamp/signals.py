"""Reading gap signals from logged entries (pure): which field of which payload the gap watch needs.

Two kinds of log entries can reveal a gap (``tracker.domain.gaps.GapWatch`` folds them):

- an order-stream frame (``private-my_orders_<market>[-<user id>]``) with an ``event_id``: its place in the
  ``pre_event_id`` chain and its ``order_source`` (``orderbook``/``stop_order``, from the frame's data);
- a connection lifecycle entry tracker logged itself (``subscribed``, ``stalled``, ``reconnect_requested``,
  ``closed``), whose JSON payload carries ``data`` with the channels, the silence or the close reason.
"""

from __future__ import annotations

from typing import Final

from tracker.bitstamp.parse_ws import order_source_of
from tracker.domain import tracker_events as te
from tracker.domain.gaps import GapSignal, LifecycleSignal, OrderChainSignal
from tracker.domain.log import LogEntry

ORDER_CHANNEL_PREFIX: Final = "private-my_orders_"


def gap_signal(entry: LogEntry) -> GapSignal | None:
    """The gap signal an entry carries, or None (anything else, e.g. a ws entry of another channel)."""
    if entry.source == "ws":
        if entry.event_id is None or entry.market is None or not entry.channel.startswith(ORDER_CHANNEL_PREFIX):
            return None
        return OrderChainSignal(
            entry.account, entry.market, order_source_of(entry.payload), entry.event_id, entry.pre_event_id, entry.seq
        )
    if entry.source != "tracker":
        return None
    data = te.entry_data(entry.payload)
    channels = data.get("channels")
    silent = data.get("silent_for_s")
    reason = data.get("reason")
    return LifecycleSignal(
        entry.event,
        entry.connection_id or "",
        entry.received_at,
        tuple(str(c) for c in channels) if isinstance(channels, list) else (),
        float(silent) if isinstance(silent, int | float) and not isinstance(silent, bool) else None,
        str(reason) if reason else "",
    )
