"""The tracker's own log entries (``source == "tracker"``: connection lifecycle, gaps, backfills, discrepancies) →
domain events. Not wire facts, but they share the log and the parser's contract: one event each, never raising."""

from __future__ import annotations

from typing import Final

from tracker.bitstamp.ledger_channels import split_ledger_channel
from tracker.bitstamp.parse_fields import Bad, id_text, obj_of, opt_text, unknown
from tracker.bitstamp.wire import dumps_canonical, loads_exact
from tracker.domain import tracker_events as te
from tracker.domain.events import (
    BackfillCompleted,
    Discrepancy,
    DiscrepancyAcknowledged,
    DiscrepancyResolved,
    DomainEvent,
    GapDetected,
    Lifecycle,
    StatementRow,
)
from tracker.domain.log import Parseable

LIFECYCLE_EVENTS: Final = frozenset(
    {te.CONNECTED, te.SUBSCRIBED, te.SUBSCRIBE_FAILED, te.WS_ERROR, te.RECONNECT_REQUESTED, te.CLOSED, te.STALLED,
     te.RECONCILED, te.CHANNEL_REFUSED, te.WALK_FAILED, te.ENDPOINT_UNAVAILABLE, te.BACKFILL_PROGRESS,
     te.CHAIN_MARKET_WIDE, te.LOG_MERGED}
)  # fmt: skip


STATEMENT_FORMATS: Final = frozenset({"bitstamp", "bitstamp-legacy"})


def parse_tracker(entry: Parseable) -> DomainEvent:
    """The event of one tracker entry."""
    if entry.event == te.STATEMENT_ROW:
        return statement_row(entry)
    message = obj_of(loads_exact(entry.payload), "tracker payload")
    data = obj_of(message.get("data", {}), "data")
    event = entry.event
    if event in LIFECYCLE_EVENTS:
        return Lifecycle(
            seq=entry.seq,
            account=entry.account,
            kind=event,
            channel=entry.channel,
            connection_id=entry.connection_id,
            received_at=entry.received_at,
        )
    if event in (te.GAP_DETECTED, te.BACKFILL_COMPLETED):
        kind = GapDetected if event == te.GAP_DETECTED else BackfillCompleted
        return kind(
            seq=entry.seq,
            account=entry.account,
            market=entry.market,
            channel=entry.channel,
            detail=dumps_canonical(data),
            received_at=entry.received_at,
        )
    if event == te.DISCREPANCY:
        return Discrepancy(
            seq=entry.seq,
            account=entry.account,
            # a LogRecord (what the projector reads) has no dedup_key: an id from the seq, the same for both
            discrepancy_id=id_text(data, "id") or id_text(data, "discrepancy_id") or f"discrepancy:{entry.seq}",
            kind=opt_text(data, "kind") or "reconciliation",
            entity=opt_text(data, "entity") or "",
            detail=opt_text(data, "detail") or dumps_canonical(data),
        )
    if event == te.DISCREPANCY_RESOLVED:
        discrepancy_id = id_text(data, "id") or id_text(data, "discrepancy_id")
        if discrepancy_id is None:
            raise Bad("discrepancy_resolved without id")
        return DiscrepancyResolved(
            seq=entry.seq,
            account=entry.account,
            discrepancy_id=discrepancy_id,
            detail=opt_text(data, "detail") or "",
        )
    if event == te.DISCREPANCY_ACKNOWLEDGED:
        discrepancy_id = id_text(data, "id")
        if discrepancy_id is None:
            raise Bad("discrepancy_acknowledged without id")
        return DiscrepancyAcknowledged(
            seq=entry.seq,
            account=entry.account,
            discrepancy_id=discrepancy_id,
            note=opt_text(data, "note") or "",
            by=opt_text(data, "by") or "",
        )
    return unknown(entry, f"unknown tracker event {event!r}")


def statement_row(entry: Parseable) -> StatementRow:
    """A statement row (``export/statement_match.fact``): channel ``[subaccount/<id>/]statement/<format>``, payload the
    row as an object of header -> cell. Only its trade account, format and ID are read: it builds no legs."""
    cells = obj_of(loads_exact(entry.payload), "statement row")
    trade_account_id, endpoint = split_ledger_channel(entry.channel)
    statement_format = endpoint.removeprefix("statement/")
    if statement_format == endpoint or statement_format not in STATEMENT_FORMATS:
        raise Bad(f"statement row from an unknown channel {entry.channel!r}")
    return StatementRow(
        seq=entry.seq,
        account=entry.account,
        trade_account_id=trade_account_id,
        statement_format=statement_format,
        row_id=id_text(cells, "ID"),
    )
