"""Folding order events: the ``orders`` rows, the ``order_links`` they share with fills and self trades, the
fills cross-check and the ``pre_event_id`` chain (``streams``).

Entry points: ``apply_order`` (an ``OrderEvent``) and, for the fills and self trades that change an order's link
row, ``order_link`` / ``put_order_link`` / ``recompute_order``. Reads follow the read rule (``projection.py``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, assert_never

from tracker.domain.events import OrderEvent, OrderStatusSnapshot
from tracker.domain.money import format_decimal
from tracker.domain.projection_state import (
    ZERO,
    ProjectionState,
    count,
    open_discrepancy,
    refresh_discrepancy,
    resolve_discrepancy,
)
from tracker.domain.rows import OrderLinkRow, OrderRow, OrderStatus, StreamRow

CLOSED: Final = frozenset({"filled", "cancelled", "replaced"})
CREATION_EVENTS: Final = frozenset({"created", "stop_active", "replaced"})  # an order's first event when seen whole
ALL_SOURCES: Final = "*"  # the market-wide chain row's order_source
EVENT_ID_LENGTH: Final = 36


def order_link(state: ProjectionState, account: str, order_id: str) -> OrderLinkRow:
    """The order's link row, or an empty one (stored only when put)."""
    row = state.order_links.get((account, order_id))
    if row is None:
        return OrderLinkRow(account, order_id, 0, ZERO, ZERO, None, None)
    return row


def put_order_link(state: ProjectionState, row: OrderLinkRow) -> None:
    """Store a link row (a new object: rows are frozen) and mark it dirty."""
    key = (row.account, row.order_id)
    state.order_links[key] = row
    state.dirty["order_links"].add(key)


def recompute_order(state: ProjectionState, account: str, order_id: str, seq: int) -> None:
    """Refresh an order's derived columns from its hidden state and its link row, then re-run the cross-check."""
    key = (account, order_id)
    order = state.orders.get(key)
    if order is None:
        return
    link = state.order_links.get(key)
    offset = ZERO if link is None else link.self_trade_offset
    remaining = order.amount if order.remaining_is_placeholder else order.last_remaining
    filled = order.amount - remaining - offset
    status = order.status
    if link is not None and link.replaced_by is not None:
        status = "replaced"
    if filled != order.amount_filled or remaining != order.amount_remaining or status != order.status:
        order = OrderRow(
            order.account,
            order.order_id,
            order.market,
            order.side,
            order.amount,
            remaining,
            filled,
            status,
            order.price,
            order.client_order_id,
            order.created_at,
            order.updated_at,
            order.order_source,
            order.last_remaining,
            order.event_count,
            order.remaining_is_placeholder,
            order.seen_event_ids,
            order.first_seq,
            order.last_seq,
            order.trade_account_id,
            order.is_liquidation,
            order.reduce_only,
            order.stop_price,
            order.creation_seen,
        )
        state.orders[key] = order
        state.dirty["orders"].add(key)
    if order.status in CLOSED:  # (_cross_check's own first test, without the call for an open order)
        _cross_check(state, order, link, seq)


def _cross_check(state: ProjectionState, order: OrderRow, link: OrderLinkRow | None, seq: int) -> None:
    if order.status not in CLOSED:
        return
    fills_sum = ZERO if link is None else link.fills_sum
    open_id = None if link is None else link.mismatch_id
    if order.amount_filled == fills_sum and open_id is None:
        return  # the usual case: nothing to open, refresh or resolve (so no text to make)
    figures = (
        f"status={order.status} amount_filled={format_decimal(order.amount_filled)}"
        f" fills_sum={format_decimal(fills_sum)} fills={0 if link is None else link.fills_count}"
    )
    if order.amount_filled == fills_sum:
        if open_id is not None and link is not None:
            resolve_discrepancy(state, order.account, open_id, seq, figures)
            put_order_link(state, _with_mismatch(link, None))
        return
    if open_id is not None:
        refresh_discrepancy(state, order.account, open_id, _detail(order, open_id, figures))
        return
    kind = "order_fills_mismatch"
    if not order.creation_seen and order.amount_filled > fills_sum:
        # More filled than its fills, on an order live before tracking began: the difference can only be self-trade
        # offsets from before (no REST endpoint reports them). Its own kind, so it is not mistaken for a lost fill.
        kind = "fills_before_tracking"
    discrepancy_id = f"{kind}:{order.order_id}:{seq}"
    open_discrepancy(
        state,
        order.account,
        discrepancy_id,
        kind,
        f"order:{order.order_id}",
        _detail(order, discrepancy_id, figures),
        seq,
    )
    put_order_link(state, _with_mismatch(link or order_link(state, order.account, order.order_id), discrepancy_id))


def _detail(order: OrderRow, discrepancy_id: str, figures: str) -> str:
    if not discrepancy_id.startswith("fills_before_tracking:"):
        return figures
    return (
        f"{figures}; the order was live before tracking began (its creation is not in the log), so self-trade"
        " offsets from before cannot be learned (no REST source): order_status/ confirming its remaining amount"
        " resolves it"
    )


def confirm_by_order_status(state: ProjectionState, event: OrderStatusSnapshot) -> None:
    """``order_status/`` on a closed order whose fills fall short only because of self trades before tracking: when the
    exchange's remaining amount equals ours, the exchange confirms how much the order filled, and the difference is
    explained (resolved, saying so)."""
    key = (event.account, event.order_id)
    link = state.order_links.get(key)
    order = state.orders.get(key)
    if link is None or order is None or link.mismatch_id is None:
        return
    if not link.mismatch_id.startswith("fills_before_tracking:") or order.status not in CLOSED:
        return
    if event.amount_remaining is None or event.amount_remaining != order.amount_remaining:
        return
    detail = (
        f"order_status/ confirms amount_remaining={format_decimal(event.amount_remaining)} ({event.status}): the"
        f" {format_decimal(order.amount_filled - link.fills_sum)} not in its fills are self trades before tracking"
    )
    resolve_discrepancy(state, event.account, link.mismatch_id, event.seq, detail)
    put_order_link(state, _with_mismatch(link, None))


def _with_mismatch(link: OrderLinkRow, mismatch_id: str | None) -> OrderLinkRow:
    return OrderLinkRow(
        link.account,
        link.order_id,
        link.fills_count,
        link.fills_sum,
        link.self_trade_offset,
        link.replaced_by,
        mismatch_id,
    )


# --- order events ---------------------------------------------------------------------------------------------------

# _status_of's answer for the kinds that need no more than the kind (all but "deleted"), one lookup instead of a call
# for each order event
_STATUS_OF_KIND: Final[dict[str, OrderStatus]] = {
    "created": "open",
    "changed": "open",
    "stop_active": "open",
    "replaced": "open",
    "stop_inactive": "cancelled",
}


def _status_of(event: OrderEvent) -> OrderStatus:
    match event.kind:
        case "created" | "changed" | "stop_active" | "replaced":
            return "open"
        case "deleted":
            return "filled" if event.amount_remaining == 0 else "cancelled"
        case "stop_inactive":
            return "cancelled"
        case _:
            assert_never(event.kind)


def apply_order(state: ProjectionState, event: OrderEvent) -> str | None:
    """Fold one order event into its ``orders`` row (and the chain, the link of a replaced order, the cross-check).
    Returns the trade account the order learned from this event when fills of it were folded before (the caller
    hands it to them: ``projection_fills.learn_order_account``), else ``None``.

    One piece on purpose (~95 lines): the first event of an order and a later one each set the same eleven values
    that the one ``OrderRow`` below is made of; split, they would travel as an eleven-field tuple through a call per
    order event, the fold's most frequent event, to save no reader any lines.
    """
    account = event.account
    key = (account, event.order_id)
    old = state.orders.get(key)
    event_id = event.event_id
    if (
        event_id is not None
        and old is not None
        and event_id in old.seen_event_ids  # cheap: not even a substring, so not a token (the usual case)
        and f" {event_id} " in f" {old.seen_event_ids} "
    ):
        count(state, account, "order_event_replayed", event.seq)
        return None
    if event.source == "ws" and event_id is not None:
        _follow_chain(state, event, event_id)
    if old is not None and event_id is not None and _is_stale(event_id, old.seen_event_ids):
        learned = _apply_stale_order_event(state, old, event, event_id)
        # e.g. a restart heard the replacement's later events live before the backfill brought its order_replaced
        _link_replacement(state, event)
        return learned
    at_create = event.amount_at_create
    link = state.order_links.get(key)
    if old is None:
        placeholder = event.kind == "created" and event.is_market and event.amount_remaining == 0
        amount = ZERO
        if at_create is not None and at_create != 0:
            amount = at_create
        elif at_create is None and event.kind in ("created", "stop_active", "replaced") and not placeholder:
            amount = event.amount_remaining  # old frames without amount_at_create: remaining at creation
        market = event.market
        side = event.side
        price = event.price
        client_order_id = event.client_order_id
        created_at = event.occurred_at or event.received_at
        order_source = event.order_source
        event_count = 1
        seen = event_id or ""
        first_seq = event.seq
        trade_account_id = event.trade_account_id
        is_liquidation = event.is_liquidation
        reduce_only = event.reduce_only
        stop_price = event.stop_price
        creation_seen = event.kind in CREATION_EVENTS
    else:
        placeholder = False
        amount = old.amount
        if amount == 0 and at_create is not None and at_create != 0:
            amount = at_create
        market = old.market
        side = old.side if event.side is None else event.side
        price = old.price if event.price is None else event.price
        client_order_id = event.client_order_id or old.client_order_id
        created_at = old.created_at
        order_source = event.order_source or old.order_source
        event_count = old.event_count + 1
        seen = old.seen_event_ids
        if event_id is not None:
            seen = event_id if not seen else f"{seen} {event_id}"
        first_seq = old.first_seq
        # first-learned (as _wire_fields, written out: the fold's most frequent event)
        trade_account_id = old.trade_account_id if old.trade_account_id is not None else event.trade_account_id
        is_liquidation = old.is_liquidation if old.is_liquidation is not None else event.is_liquidation
        reduce_only = old.reduce_only if old.reduce_only is not None else event.reduce_only
        stop_price = old.stop_price if old.stop_price is not None else event.stop_price
        creation_seen = event.kind in CREATION_EVENTS or bool(old.creation_seen)  # order-independent: an OR
    if trade_account_id is None and old is None and link is not None and link.fills_count:
        # Old frames name none; fills of it folded before may (a later one teaches the order itself: projection_fills)
        trade_account_id = _account_of_fills(state, account, event.order_id)
    remaining = amount if placeholder else event.amount_remaining
    offset = ZERO if link is None else link.self_trade_offset
    status: OrderStatus = (
        "replaced"
        if link is not None and link.replaced_by is not None
        else _STATUS_OF_KIND.get(event.kind) or _status_of(event)
    )
    order = OrderRow(
        account,
        event.order_id,
        market,
        side,
        amount,
        remaining,
        amount - remaining - offset,
        status,
        price,
        client_order_id,
        created_at,
        event.received_at,
        order_source,
        event.amount_remaining,
        event_count,
        placeholder,
        seen,
        first_seq,
        event.seq,
        trade_account_id,
        is_liquidation,
        reduce_only,
        stop_price,
        creation_seen,
    )
    state.orders[key] = order
    state.dirty["orders"].add(key)
    if event.kind == "replaced":
        _link_replacement(state, event)
    if status in CLOSED:
        _cross_check(state, order, link, event.seq)
    return _learned_account(old, order, link)


def _account_of_fills(state: ProjectionState, account: str, order_id: str) -> str | None:
    """For an order's first event, which names no trade account: the one its earliest fill (by log seq) named,
    ``None`` when none of its fills names one. Asked once per order: a fill folded while the order has a row teaches
    it at once (``projection_fills``), so an order without one never has a fill that names one (migration 0015 made
    rows from before so)."""
    named = [fill for fill in state.order_fills(account, order_id) if fill.trade_account_id is not None]
    return min(named, key=lambda fill: (fill.seq, fill.trade_id)).trade_account_id if named else None


def _learned_account(old: OrderRow | None, new: OrderRow, link: OrderLinkRow | None) -> str | None:
    """``new``'s trade account when this event taught it and fills of the order were folded before (``link``
    counts them), else ``None`` (the usual case: the order's first event names its account, before any fill)."""
    if new.trade_account_id is None or link is None or link.fills_count == 0:
        return None
    return new.trade_account_id if old is None or old.trade_account_id is None else None


def _wire_fields(
    old: OrderRow | None, event: OrderEvent
) -> tuple[str | None, bool | None, bool | None, Decimal | None]:
    """trade_account_id, is_liquidation, reduce_only, stop_price: first-learned, a later event filling a gap."""
    if old is None:
        return event.trade_account_id, event.is_liquidation, event.reduce_only, event.stop_price
    return (
        old.trade_account_id if old.trade_account_id is not None else event.trade_account_id,
        old.is_liquidation if old.is_liquidation is not None else event.is_liquidation,
        old.reduce_only if old.reduce_only is not None else event.reduce_only,
        old.stop_price if old.stop_price is not None else event.stop_price,
    )


def _link_replacement(state: ProjectionState, event: OrderEvent) -> None:
    """An ``order_replaced`` marks its ``orig_order_id`` replaced, also when it arrives late (stale)."""
    if event.kind == "replaced" and event.orig_order_id is not None and event.orig_order_id != event.order_id:
        orig = order_link(state, event.account, event.orig_order_id)
        put_order_link(
            state,
            OrderLinkRow(
                orig.account,
                orig.order_id,
                orig.fills_count,
                orig.fills_sum,
                orig.self_trade_offset,
                event.order_id,
                orig.mismatch_id,
            ),
        )
        recompute_order(state, event.account, event.orig_order_id, event.seq)


def _is_stale(event_id: str, seen_event_ids: str) -> bool:
    """An event older than one already applied to the order (a REST replay of an event missed live).

    MarketEventIDs are fixed-width lowercase hex whose leading digits are the event time in µs (the 2026 captures:
    ``00065b81-0d69-fe98-…`` is µs ``1789459694223000``), so text order is time order. Ids not in that form (some
    were seen short or invalid) are never called stale. Fast path: stale ids are put at the front of
    ``seen_event_ids`` and fresh ones at the end, so a full-length last token is the newest id.
    """
    if len(event_id) != EVENT_ID_LENGTH:
        return False
    n = len(seen_event_ids)
    if n >= EVENT_ID_LENGTH and (n == EVENT_ID_LENGTH or seen_event_ids[n - EVENT_ID_LENGTH - 1] == " "):
        tail = seen_event_ids[n - EVENT_ID_LENGTH :]
        if " " not in tail:
            return tail > event_id
    return any(len(seen) == EVENT_ID_LENGTH and seen > event_id for seen in seen_event_ids.split(" "))


def _apply_stale_order_event(state: ProjectionState, old: OrderRow, event: OrderEvent, event_id: str) -> str | None:
    """A late-arriving older event fills in what is still unknown (amount, price, client id, side, trade account) but
    does not move the order's status or remaining amount back. Returns as ``apply_order`` does."""
    amount = old.amount
    if amount == 0 and event.amount_at_create is not None and event.amount_at_create != 0:
        amount = event.amount_at_create
    link = state.order_links.get((old.account, old.order_id))
    offset = ZERO if link is None else link.self_trade_offset
    remaining = old.amount_remaining
    order = OrderRow(
        old.account,
        old.order_id,
        old.market,
        old.side or event.side,
        amount,
        remaining,
        amount - remaining - offset,
        old.status,
        old.price if old.price is not None else event.price,
        old.client_order_id or event.client_order_id,
        old.created_at,
        old.updated_at,
        old.order_source or event.order_source,
        old.last_remaining,
        old.event_count + 1,
        old.remaining_is_placeholder,
        f"{event_id} {old.seen_event_ids}" if old.seen_event_ids else event_id,  # stale ids go first
        old.first_seq,
        event.seq,
        *_wire_fields(old, event),
        event.kind in CREATION_EVENTS or bool(old.creation_seen),
    )
    key = (old.account, old.order_id)
    state.orders[key] = order
    state.dirty["orders"].add(key)
    count(state, old.account, "order_event_stale", event.seq)
    _cross_check(state, order, link, event.seq)
    return _learned_account(old, order, link)


def _follow_chain(state: ProjectionState, event: OrderEvent, event_id: str) -> None:
    """Follow the ``pre_event_id`` chain. Its scope is undocumented (docs/bitstamp.md §2.1): per market stream or per
    (market, order_source). Both are tracked (the market-wide row has ``order_source`` ``"*"``) and a break is
    counted only when ``pre_event_id`` matches neither last ``event_id``: right under either reading."""
    account, market, seq = event.account, event.market, event.seq
    source = event.order_source or ""
    source_key = (account, market, source)
    market_key = (account, market, ALL_SOURCES)
    source_row = state.streams.get(source_key)
    market_row = state.streams.get(market_key)
    pre = event.pre_event_id
    broken = (
        pre is not None
        and (source_row is not None or market_row is not None)
        and (source_row is None or source_row.last_event_id != pre)
        and (market_row is None or market_row.last_event_id != pre)
    )
    # Both rows written out (no loop over (key, row) pairs): every ws order event comes through here.
    source_break: int | None
    market_break: int | None
    break_seq: int | None
    if broken:
        breaks, break_seq = 1, seq
        source_break = market_break = seq
    else:
        breaks, break_seq = 0, None
        source_break = None if source_row is None else source_row.last_break_seq
        market_break = None if market_row is None else market_row.last_break_seq
    if source_row is None:
        state.streams[source_key] = StreamRow(account, market, source, event_id, 1, breaks, break_seq)
    else:
        state.streams[source_key] = StreamRow(
            account, market, source, event_id, source_row.events + 1, source_row.chain_breaks + breaks, source_break
        )
    if market_row is None:
        state.streams[market_key] = StreamRow(account, market, ALL_SOURCES, event_id, 1, breaks, break_seq)
    else:
        state.streams[market_key] = StreamRow(
            account,
            market,
            ALL_SOURCES,
            event_id,
            market_row.events + 1,
            market_row.chain_breaks + breaks,
            market_break,
        )
    dirty = state.dirty["streams"]
    dirty.add(source_key)
    dirty.add(market_key)
