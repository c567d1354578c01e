"""Folding fills and self trades: the ``fills`` rows, the daily fee sums, and what a fill or a self trade changes
in its order (the link row, via ``projection_orders``) and its position (via ``projection_positions``).

Entry points: ``apply_fill``, ``apply_self_trade``, and ``learn_order_account`` (an order's trade account learned
after some of its fills).

A fill's trade account: the one its source names (a ``my_trades`` frame does; REST ``user_transactions/`` and
``trade_history/`` rows do not), else its order's (an order event names it: an order and its fills are in one trade
account), whichever of the two is learned first; a fill folded before its order's trade account was known takes it
when the order learns it (``learn_order_account``), and its fee day moves to that account's row.

The other way too: an order whose events named no trade account (order frames from before Bitstamp added the field
name none: the 2022-2023 captures, docs/bitstamp.md §2.1; its ``my_trades`` frames may) takes the one a fill of it names
(``_teach_order``), and its other fills without one follow. So an order and its fills end in one trade account
whichever names it, and first: the first one learned in log order wins, as everywhere in the fold.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from tracker.domain.events import Fill, SelfTrade
from tracker.domain.money import format_decimal
from tracker.domain.projection_orders import order_link, put_order_link, recompute_order
from tracker.domain.projection_positions import apply_position_fill, learn_position_account
from tracker.domain.projection_state import ZERO, ProjectionState, count, open_discrepancy, unix_us
from tracker.domain.rows import FeesDailyRow, FillRow, OrderLinkRow, SelfTradeRow


def _figures(order_id: str | None, side: str | None, amount: Decimal, price: Decimal, fee: Decimal) -> str:
    return (
        f"order={order_id} side={side} amount={format_decimal(amount)} price={format_decimal(price)}"
        f" fee={format_decimal(fee)}"
    )


def apply_fill(state: ProjectionState, event: Fill) -> None:
    """A new fill: its row, its fee day, its order's link, its position. One seen before: compared.

    - Another order, side, amount or price under the same trade id is not the same fill seen twice: the websocket
      trade id, the ``user_transactions`` id and the perp ``trade_id`` are assumed to be one counter (docs/bitstamp.md
      §5.1: plausible, not documented), and this is the evidence against it. It opens ``fill_identity_mismatch`` and
      is never merged (the first fill stays as it was).
    - The same fill with another fee opens ``fill_source_mismatch``; either way it is enriched with what the first
      source lacked (a position id, a liquidation flag)."""
    account = event.account
    key = (account, event.trade_id)
    old = state.fills.get(key)
    if old is not None:
        seen = f"first {old.source} {_figures(old.order_id, old.side, old.amount, old.price, old.fee)}"
        then = f"then {event.source} {_figures(event.order_id, event.side, event.amount, event.price, event.fee)}"
        other_order = old.order_id is not None and event.order_id is not None and old.order_id != event.order_id
        if other_order or old.side != event.side or old.amount != event.amount or old.price != event.price:
            open_discrepancy(
                state,
                account,
                f"fill_identity_mismatch:{event.trade_id}:{event.seq}",
                "fill_identity_mismatch",
                f"fill:{event.trade_id}",
                f"one trade id, two fills: {seen}; {then}",
                event.seq,
            )
            return
        if old.fee != event.fee:
            open_discrepancy(
                state,
                account,
                f"fill_source_mismatch:{event.trade_id}:{event.seq}",
                "fill_source_mismatch",
                f"fill:{event.trade_id}",
                f"{seen}; {then}",
                event.seq,
            )
        else:
            count(state, account, f"fill_seen_again:{event.source}", event.seq)
        _enrich_fill(state, old, event)
        return
    trade_account_id = event.trade_account_id
    if trade_account_id is None and event.order_id is not None:  # REST rows name none: their order's, if known
        trade_account_id = _order_account(state, account, event.order_id)
    # Positional, in field order: keyword arguments cost ~0.7 µs more a call (a rebuild makes millions).
    state.fills[key] = FillRow(
        account,  # account
        event.trade_id,  # trade_id
        event.order_id,  # order_id
        event.market,  # market
        event.side,  # side
        event.amount,  # amount
        event.price,  # price
        event.fee,  # fee
        event.executed_at,  # executed_at
        event.position_id,  # position_id
        event.is_liquidation,  # is_liquidation
        event.source,  # source
        event.seq,  # seq
        trade_account_id,  # trade_account_id
        event.trade_type,  # trade_type
        event.client_order_id,  # client_order_id
    )
    state.dirty["fills"].add(key)
    # its fee day (written out here: a call a fill fewer)
    day = event.executed_at.date().isoformat()
    _fee_day(state, account, trade_account_id, day, event.market, event.amount, event.price, event.fee, 1)
    if event.order_id is not None:
        _add_order_fill(state, account, event.order_id, event.amount, event.seq)
    if event.position_id is not None:
        apply_position_fill(
            state,
            account,
            event.position_id,
            event.market,
            event.side,
            event.amount,
            event.price,
            event.fee,
            trade_account_id,
            event.trade_id,
        )
    if event.trade_account_id is not None and event.order_id is not None:  # (the test written out: a call a fill fewer)
        order = state.orders.get((account, event.order_id))
        if order is not None and order.trade_account_id is None:
            _teach_order(state, account, event.order_id, event.trade_account_id)


def _order_account(state: ProjectionState, account: str, order_id: str) -> str | None:
    """The trade account an order's events named (``None``: no order row yet, or none named one)."""
    order = state.orders.get((account, order_id))
    return None if order is None else order.trade_account_id


def _teach_order(state: ProjectionState, account: str, order_id: str, trade_account_id: str) -> None:
    """A fill named ``trade_account_id``: its order takes it when the order's events named none (first-learned: an
    order that has one keeps it), and the order's other fills without one follow (``learn_order_account``). No order
    row yet: the order takes it from its fills when its first event comes (``projection_orders.apply_order``)."""
    key = (account, order_id)
    order = state.orders.get(key)
    if order is None or order.trade_account_id is not None:  # the usual case: its events named it
        return
    state.orders[key] = msgspec.structs.replace(order, trade_account_id=trade_account_id)
    state.dirty["orders"].add(key)
    learn_order_account(state, account, order_id, trade_account_id)


def learn_order_account(state: ProjectionState, account: str, order_id: str, trade_account_id: str) -> None:
    """An order learned its trade account after fills of it were folded (REST fills before the order's events): each
    of its fills without one takes it (first-learned: a fill that has one keeps it), its fee day moves to that
    account's row, and a position it opened learns it too when it has none (``learn_position_account``)."""
    fills = sorted(state.order_fills(account, order_id), key=lambda fill: fill.trade_id)  # one order, any order
    for old in fills:
        if old.trade_account_id is not None:
            continue
        key = (old.account, old.trade_id)
        state.fills[key] = msgspec.structs.replace(old, trade_account_id=trade_account_id)
        state.dirty["fills"].add(key)
        _move_fee_day(state, old, trade_account_id)
        if old.position_id is not None:
            learn_position_account(state, old.account, old.position_id, trade_account_id)


def _enrich_fill(state: ProjectionState, old: FillRow, event: Fill) -> None:
    """A fill learned again fills in what the first source lacked (REST ``user_transactions`` has no position id,
    a REST ``datetime`` may lack microseconds); amount, price, fee, side and source stay first-learned."""
    order_id = old.order_id if old.order_id is not None else event.order_id
    position_id = old.position_id if old.position_id is not None else event.position_id
    executed_at = old.executed_at
    if (
        old.executed_at.microsecond == 0
        and event.executed_at.microsecond != 0
        and event.executed_at.replace(microsecond=0) == old.executed_at
    ):
        executed_at = event.executed_at
    is_liquidation = old.is_liquidation or event.is_liquidation
    account_id = old.trade_account_id if old.trade_account_id is not None else event.trade_account_id
    if account_id is None and order_id is not None:
        account_id = _order_account(state, old.account, order_id)
    trade_type = old.trade_type if old.trade_type is not None else event.trade_type
    client_order_id = old.client_order_id if old.client_order_id is not None else event.client_order_id
    if (order_id, position_id, executed_at, is_liquidation, account_id, trade_type, client_order_id) == (
        old.order_id,
        old.position_id,
        old.executed_at,
        old.is_liquidation,
        old.trade_account_id,
        old.trade_type,
        old.client_order_id,
    ):
        return
    key = (old.account, old.trade_id)
    state.fills[key] = FillRow(
        old.account,
        old.trade_id,
        order_id,
        old.market,
        old.side,
        old.amount,
        old.price,
        old.fee,
        executed_at,
        position_id,
        is_liquidation,
        old.source,
        old.seq,
        account_id,
        trade_type,
        client_order_id,
    )
    state.dirty["fills"].add(key)
    if old.trade_account_id is None and account_id is not None:
        _move_fee_day(state, old, account_id)
    if old.order_id is None and order_id is not None:
        _add_order_fill(state, old.account, order_id, old.amount, event.seq)
    if old.position_id is None and position_id is not None:
        apply_position_fill(
            state, old.account, position_id, old.market, old.side, old.amount, old.price, old.fee, account_id,
            old.trade_id,
        )  # fmt: skip
    elif position_id is not None and old.trade_account_id is None and account_id is not None:
        learn_position_account(state, old.account, position_id, account_id)
    if account_id is not None and order_id is not None:  # its account, or its order, learned now
        _teach_order(state, old.account, order_id, account_id)  # (nothing to do when it came from the order)


def _add_order_fill(state: ProjectionState, account: str, order_id: str, amount: Decimal, seq: int) -> None:
    # order_link and put_order_link written out (two calls a fill fewer); a new link is order_link's empty row plus
    # this fill, summed as there (ZERO + amount, not amount: the sum's exponent is the row's, "-0" becomes "0")
    key = (account, order_id)
    link = state.order_links.get(key)
    if link is None:
        link = OrderLinkRow(account, order_id, 1, ZERO + amount, ZERO, None, None)
    else:
        link = OrderLinkRow(
            link.account,
            link.order_id,
            link.fills_count + 1,
            link.fills_sum + amount,
            link.self_trade_offset,
            link.replaced_by,
            link.mismatch_id,
        )
    state.order_links[key] = link
    state.dirty["order_links"].add(key)
    recompute_order(state, account, order_id, seq)


def _move_fee_day(state: ProjectionState, old: FillRow, trade_account_id: str) -> None:
    """A fill's trade account learned after it was counted under "unknown": its figures move to that account's row
    (``v_fees_daily`` stays the exact sum of ``v_fills`` grouped by trade account, day and market)."""
    day = old.executed_at.date().isoformat()
    _fee_day(state, old.account, None, day, old.market, old.amount, old.price, old.fee, -1)
    _fee_day(state, old.account, trade_account_id, day, old.market, old.amount, old.price, old.fee, 1)


def _fee_day(
    state: ProjectionState,
    account: str,
    trade_account_id: str | None,
    day: str,
    market: str | None,
    amount: Decimal,
    price: Decimal,
    fee: Decimal,
    sign: int,
) -> None:
    """Add (``sign`` 1) or take away (-1) one fill from its (trade account, day, market) row."""
    key = (account, trade_account_id or "", day, market or "")
    row = state.fees_daily.get(key)
    quote = amount * price
    if sign < 0:
        quote, amount, fee = -quote, -amount, -fee
    if row is None:
        row = FeesDailyRow(account, key[1], day, key[3], sign, quote, amount, fee)
    else:
        row = FeesDailyRow(
            account, key[1], day, key[3], row.fills + sign, row.volume + quote, row.base_volume + amount, row.fees + fee
        )
    state.fees_daily[key] = row
    state.dirty["fees_daily"].add(key)


# --- self trades ----------------------------------------------------------------------------------------------------


def apply_self_trade(state: ProjectionState, event: SelfTrade) -> None:
    """A self trade (once per key): its row, and its amount offset on both orders (their ``amount_filled``)."""
    occurred_us = unix_us(event.occurred_at)
    key = (event.account, event.market, event.buy_order_id, event.sell_order_id, occurred_us)
    if key in state.self_trades:
        count(state, event.account, "self_trade_seen_again", event.seq)
        return
    state.self_trades[key] = SelfTradeRow(
        event.account,
        event.market,
        event.buy_order_id,
        event.sell_order_id,
        occurred_us,
        event.amount,
        event.price,
        event.occurred_at,
        event.seq,
        event.trade_type,
        event.buyers_trade_account_id,
        event.sellers_trade_account_id,
        event.time_from_receipt,
    )
    state.dirty["self_trades"].add(key)
    for order_id in dict.fromkeys((event.buy_order_id, event.sell_order_id)):
        link = order_link(state, event.account, order_id)
        put_order_link(
            state,
            OrderLinkRow(
                link.account,
                link.order_id,
                link.fills_count,
                link.fills_sum,
                link.self_trade_offset + event.amount,
                link.replaced_by,
                link.mismatch_id,
            ),
        )
        recompute_order(state, event.account, order_id, event.seq)
