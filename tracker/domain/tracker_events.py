"""Events tracker makes itself (``source='tracker'``): connection lifecycle, gaps, backfills, discrepancies.

They go through the same log as exchange frames, so an auditor can see exactly which windows were covered. The
payload is compact JSON with sorted keys; the dedup key is ``tracker:<uuid>`` (the caller passes the uuid: pure).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Final

from tracker.domain.log import NewEntry

# Connection lifecycle (ingest).
CONNECTED: Final = "connected"
SUBSCRIBED: Final = "subscribed"
SUBSCRIBE_FAILED: Final = "subscribe_failed"
WS_ERROR: Final = "ws_error"
RECONNECT_REQUESTED: Final = "reconnect_requested"
CLOSED: Final = "closed"
STALLED: Final = "stalled"
CHANNEL_REFUSED: Final = "channel_refused"  # a channel set aside after repeated refusals, retried alone
# Gaps and backfill.
GAP_DETECTED: Final = "gap_detected"
BACKFILL_COMPLETED: Final = "backfill_completed"
BACKFILL_PROGRESS: Final = "backfill_progress"  # a long walk's progress (every few thousand facts)
CHAIN_MARKET_WIDE: Final = "chain_market_wide"  # a market's order chain learned to run over other users' events
WALK_FAILED: Final = "walk_failed"  # one REST walk failed; it is retried alone (runtime/walk_health.py)
ENDPOINT_UNAVAILABLE: Final = "endpoint_unavailable"  # a walk the exchange refuses for this account, until restart
# Reconciliation.
DISCREPANCY: Final = "discrepancy"
DISCREPANCY_RESOLVED: Final = "discrepancy_resolved"
DISCREPANCY_ACKNOWLEDGED: Final = "discrepancy_acknowledged"  # by a person: who, why (tracker discrepancies ack)
RECONCILED: Final = "reconciled"
# Another database's log merged into this one (tracker db copy --merge): its rows renumbered and rehashed, the
# source's head anchor recorded in one such entry per account it brought.
LOG_MERGED: Final = "log_merged"
# A row of the user's Bitstamp statement (tracker import-statement; export/statement_match.py makes the entry). Not
# made by ``tracker_entry``: its payload is the row itself (header -> cell), not ``{"event", "channel", "data"}``.
STATEMENT_ROW: Final = "statement_row"

TRACKER_EVENTS: Final = frozenset(
    {
        CONNECTED,
        SUBSCRIBED,
        SUBSCRIBE_FAILED,
        WS_ERROR,
        RECONNECT_REQUESTED,
        CLOSED,
        STALLED,
        CHANNEL_REFUSED,
        GAP_DETECTED,
        BACKFILL_COMPLETED,
        BACKFILL_PROGRESS,
        CHAIN_MARKET_WIDE,
        WALK_FAILED,
        ENDPOINT_UNAVAILABLE,
        DISCREPANCY,
        DISCREPANCY_RESOLVED,
        DISCREPANCY_ACKNOWLEDGED,
        RECONCILED,
        LOG_MERGED,
    }
)


def tracker_entry(
    *,
    account: str,
    event: str,
    data: dict[str, object],
    received_at: datetime,
    uid: str,
    channel: str = "",
    connection_id: str | None = None,
    market: str | None = None,
) -> NewEntry:
    """A tracker-made log entry. ``data`` must be JSON-serialisable (decimals as strings)."""
    if event not in TRACKER_EVENTS:
        raise ValueError(f"unknown tracker event {event!r}")
    payload = json.dumps({"event": event, "channel": channel, "data": data}, sort_keys=True, separators=(",", ":"))
    return NewEntry(
        account=account,
        source="tracker",
        channel=channel,
        event=event,
        payload=payload,
        dedup_key=f"tracker:{uid}",
        received_at=received_at,
        market=market,
        connection_id=connection_id,
    )


def entry_data(payload: str) -> dict[str, object]:
    """The ``data`` object of a tracker-made entry's payload (``tracker_entry``'s format); {} when there is none or
    the payload is not one (a damaged or foreign row is read as empty, never raised)."""
    try:
        data = json.loads(payload).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def reconnect_reason(reason: str) -> str | None:
    """The label of a ``closed`` lifecycle reason (``requested``, ``stalled``, ``dropped``, ``error``); None for a
    close that is not a reconnect (the stop)."""
    text = reason.lower()
    if text == "stopped":
        return None
    if text == "replaced":
        return "requested"
    if "stall" in text:
        return "stalled"
    if "drop" in text or "1006" in text or "closed by the peer" in text:
        return "dropped"
    return "error"
