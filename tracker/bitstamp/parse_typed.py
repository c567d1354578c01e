"""The hot ws frames (``my_orders`` order events, ``my_trades`` trades: ~95 % of a log) decoded by type with msgspec.

``parse.parse_entry`` tries this first for those two shapes; anything it cannot read the usual way raises (any of
``TYPED_FAILURES``) and the entry goes to ``parse_ws`` as before (orjson, then the exact decoder), which stays the
reference: what this module returns is exactly what ``parse_ws`` returns for the same entry
(``tests/test_parse_typed.py`` holds it to that over generated frames), and it never returns ``Unknown``.

Why msgspec: its JSON decoder fills the typed ``Struct``s below straight from the text and *skips* every field not
declared, without making an object of it (an order frame's float ``amount``/``price``, its ``datetime``, the frame's
``channel``/``event``); orjson makes a dict and an object of every value, which the parser then reads with a call
per field. One order frame: orjson 2.7 µs, msgspec into these structs 1.2 µs.

How the fields are typed: each is the type it has on the wire in the usual case, and the reading below is
``parse_ws``'s for that type only. Any other type (a float where text belongs, an id given as a string where an int
is declared, a ``*_str`` twin missing where the reading would go on to the number) fails msgspec's validation, or
raises ``Fallback`` here, and the reference reads the entry. Money stays text until ``DECIMALS[text]``
(``decimal_of``'s own memo and reader for a text, the same remembered values, without its call); never a float.

Two things msgspec accepts that Python's ``json`` (the exact decoder) refuses, and so are kept away from it by the
length of the text: an integer of more digits than ``sys.get_int_max_str_digits()`` (``int()`` refuses it), and
nesting about 1,000 deep (``json`` raises ``RecursionError`` at the interpreter's limit, msgspec a little later). A
text longer than ``LONGEST`` (frames are ~400-650 characters) or than the digit limit goes to the reference.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from tracker.bitstamp.parse_fields import DECIMALS, NeedExact, channel_of
from tracker.bitstamp.parse_ws import MARKET_PLACEHOLDER_BUY_PRICE, MARKET_SUBTYPES, ORDER_KINDS
from tracker.domain.events import Fill, OrderEvent, Side
from tracker.domain.log import Parseable

LONGEST: Final = 1500  # characters: nesting at most ~740 deep, integers far below the default 4,300 digits

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


class Fallback(Exception):
    """Not the usual shape: the entry is read by the reference parser (``parse_ws``)."""


# What the typed path may raise, all sending the entry to the reference: msgspec's errors (``DecodeError`` and
# ``ValidationError`` are ``ValueError``s), ``UnicodeEncodeError`` (a lone surrogate in the text, also a
# ``ValueError``), ``RecursionError``, ``Fallback``, ``NeedExact``, and whatever the shared readers raise
# (``Bad``/``BadAmount`` are ``ValueError``s; ``OverflowError`` for a time beyond year 9999).
TYPED_FAILURES: Final = (Fallback, NeedExact, ValueError, TypeError, KeyError, ArithmeticError, RecursionError)


class _OrderData(msgspec.Struct, gc=False):
    """An order frame's ``data``: the fields ``parse_ws.order_event`` reads, as they usually are."""

    microtimestamp: str
    amount_str: str
    price_str: str
    id: int | str | None = None
    id_str: str | None = None
    order_type: int | None = None
    order_subtype: int | None = None
    amount_traded: str | None = None
    amount_at_create: str | None = None
    client_order_id: str | None = None
    orig_order_id: int | str | None = None
    orig_order_id_str: str | None = None
    trade_account_id: int | str | None = None
    is_liquidation: bool | None = None
    reduce_only: bool | None = None
    stop_price: str | None = None


class _OrderFrame(msgspec.Struct, gc=False):
    data: _OrderData
    event_id: str | None = None
    pre_event_id: str | None = None
    order_source: str | None = None
    trade_account_id: int | str | None = None


class _TradeData(msgspec.Struct, gc=False):
    """A trade frame's ``data``: the fields ``parse_ws._fill`` reads, as they usually are."""

    side: str
    id: int | str | None = None
    id_str: str | None = None
    order_id: int | str | None = None
    order_id_str: str | None = None
    amount: str | None = None
    amount_str: str | None = None
    price: str | None = None
    price_str: str | None = None
    fee: str | None = None
    fee_str: str | None = None
    microtimestamp: str | None = None
    position_id: int | str | None = None
    is_liquidation: bool | None = None
    trade_account_id: int | str | None = None
    trade_type: str | None = None
    client_order_id: str | None = None


class _TradeFrame(msgspec.Struct, gc=False):
    data: _TradeData


_decode_order: Final = msgspec.json.Decoder(_OrderFrame).decode
_decode_trade: Final = msgspec.json.Decoder(_TradeFrame).decode
_int_digits: Final = sys.get_int_max_str_digits


# No text of this length or less is too long for either test: the digit limit is 0 (none) or at least the
# threshold (``sys.set_int_max_str_digits`` refuses less), and frames are ~180-630 characters, so the usual one is
# passed without the call and its ``sys`` lookup (18,847 calls over the 20k-event model log).
SHORT: Final = min(LONGEST, sys.int_info.str_digits_check_threshold)


def _short_enough(payload: str) -> bool:
    limit = _int_digits()  # (0: no limit) read each time: a program may change it
    return len(payload) <= LONGEST and (limit == 0 or len(payload) <= limit)


CHANNELS_KEPT: Final = 1024  # as channel_of's cache


class _ChannelNames(dict[str, str]):
    """``channel_of(text).name`` by the channel's text, answered by the dict's own lookup (C) where ``channel_of``
    is a call through its ``lru_cache`` wrapper (which hashes an argument tuple) for every entry. A text it has not
    seen is parsed once (a bad one raises ``ValueError``: the entry goes to the reference); at ``CHANNELS_KEPT``
    texts it forgets them all (channels are few: a log of a handful of markets has a handful)."""

    def __missing__(self, text: str) -> str:
        name = channel_of(text).name
        if len(self) >= CHANNELS_KEPT:
            self.clear()
        self[text] = name
        return name


_channel_names: Final = _ChannelNames()


def _id(text: str | None, token: int | str | None) -> str | None:
    """``parse_fields.id_text`` for an ``*_str`` text (or none) and a token that is an int, a text or none."""
    if text is not None:
        text = text.strip()
        if text:
            return text
    if token is None:
        return None
    if isinstance(token, str):  # wire.id_text of a text token
        token = token.strip()
        return token if token and token != "None" else None
    return str(token)  # an int (msgspec makes no bool of an int field)


def _micro(value: str) -> datetime:
    """``parse_fields.micro``'s usual case (µs digits in a string); anything else goes to the reference."""
    if len(value) < 19 and value.isascii() and value.isdigit():
        return _EPOCH + _ONE_US * int(value)
    raise Fallback


def order_event(entry: Parseable) -> OrderEvent:
    """``parse_ws.order_event`` of a ``my_orders`` entry, or raises (one of ``TYPED_FAILURES``)."""
    kind = ORDER_KINDS[entry.event]  # (KeyError: not an order event)
    payload = entry.payload
    if (len(payload) > SHORT and not _short_enough(payload)) or _channel_names[entry.channel] != "my_orders":
        raise Fallback
    frame = _decode_order(payload)
    d = frame.data
    # ``_id(d.id_str, d.id)`` and the frame's ``trade_account_id`` in their usual cases written out (an ``id_str``
    # text; an int), ``_id`` for the rest: an order event made ~3 ``_id`` calls
    text = d.id_str
    order_id = text.strip() if text is not None else None
    if not order_id:
        order_id = _id(None, d.id)
        if order_id is None:
            raise Fallback  # parse_ws: Bad("missing id"), Unknown
    account_token = frame.trade_account_id
    code = d.order_type
    side: Side | None = "buy" if code == 0 else "sell" if code == 1 else None
    price = DECIMALS[d.price_str]
    placeholder = price == 0 or price == MARKET_PLACEHOLDER_BUY_PRICE
    amount_traded = d.amount_traded
    amount_at_create = d.amount_at_create
    stop_price = d.stop_price
    micro = d.microtimestamp  # _micro's usual case written out (a call an event fewer)
    occurred_at = (
        _EPOCH + _ONE_US * int(micro) if len(micro) < 19 and micro.isascii() and micro.isdigit() else _micro(micro)
    )
    orig_text, orig_token = d.orig_order_id_str, d.orig_order_id  # (usually neither: no _id call)
    # Positional, in field order, as parse_ws makes it.
    return OrderEvent(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        kind,  # kind
        order_id,  # order_id
        entry.market or _channel_market(entry),  # market
        side,  # side
        DECIMALS[d.amount_str],  # amount_remaining
        None if amount_traded is None else DECIMALS[amount_traded],  # amount_traded
        None if amount_at_create is None else DECIMALS[amount_at_create],  # amount_at_create
        None if placeholder else price,  # price
        placeholder,  # price_is_placeholder
        placeholder or d.order_subtype in MARKET_SUBTYPES,  # is_market
        d.client_order_id or None,  # client_order_id
        None if orig_text is None and orig_token is None else _id(orig_text, orig_token),  # orig_order_id
        frame.event_id or None,  # event_id
        frame.pre_event_id or None,  # pre_event_id
        frame.order_source or None,  # order_source
        occurred_at,  # occurred_at
        entry.received_at,  # received_at
        str(account_token)
        if type(account_token) is int
        else _id(None, account_token) or _id(None, d.trade_account_id),  # trade_account_id
        d.is_liquidation,  # is_liquidation
        d.reduce_only,  # reduce_only
        None if stop_price is None else DECIMALS[stop_price],  # stop_price
    )


def fill(entry: Parseable) -> Fill:
    """``parse_ws._fill`` of a ``my_trades`` ``trade`` entry, or raises (one of ``TYPED_FAILURES``)."""
    payload = entry.payload
    if (len(payload) > SHORT and not _short_enough(payload)) or _channel_names[entry.channel] != "my_trades":
        raise Fallback
    d = _decode_trade(payload).data
    text = d.id_str  # _id(d.id_str, d.id), its usual case written out (as in order_event)
    trade_id = text.strip() if text is not None else None
    if not trade_id:
        trade_id = _id(None, d.id)
    side = d.side.strip().lower()
    if trade_id is None or (side != "buy" and side != "sell"):
        raise Fallback  # parse_ws: Bad, Unknown
    amount = d.amount_str if d.amount_str is not None else d.amount
    price = d.price_str if d.price_str is not None else d.price
    fee = d.fee_str if d.fee_str is not None else d.fee
    if amount is None or price is None or fee is None:
        raise Fallback  # parse_ws: Bad("missing ..."), Unknown
    micro = d.microtimestamp
    if micro is None:
        executed_at = entry.received_at
    elif len(micro) < 19 and micro.isascii() and micro.isdigit():  # _micro's usual case written out
        executed_at = _EPOCH + _ONE_US * int(micro)
    else:
        executed_at = _micro(micro)
    # the usual ids without an _id call each: an int order id without its text, an int trade account
    order_text, order_token = d.order_id_str, d.order_id
    order_id = str(order_token) if order_text is None and type(order_token) is int else _id(order_text, order_token)
    account_token = d.trade_account_id
    return Fill(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        trade_id,  # trade_id
        order_id,  # order_id
        entry.market or _channel_market(entry),  # market
        "buy" if side == "buy" else "sell",  # side
        DECIMALS[amount],  # amount
        DECIMALS[price],  # price
        DECIMALS[fee],  # fee
        executed_at,  # executed_at
        _id(None, d.position_id),  # position_id
        d.is_liquidation is True,  # is_liquidation
        str(account_token) if type(account_token) is int else _id(None, account_token),  # trade_account_id
        d.trade_type or None,  # trade_type
        d.client_order_id or None,  # client_order_id
    )


def _channel_market(entry: Parseable) -> str:
    market = channel_of(entry.channel).market
    if market is None:
        raise Fallback  # parse_ws: Bad("no market"), Unknown
    return market
