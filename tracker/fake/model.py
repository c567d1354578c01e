"""A pure, seeded generator of private account activity that emits exact Bitstamp wire frames (no I/O).

``AccountModel.step(now_us)`` performs one scripted action (place, fill, cancel, replace, stop, self trade, settlement,
liquidation, ...) and returns the frames it produced, in wire order. Everything it does is also recorded in
:class:`tracker.fake.state.AccountState`, which the REST routes serve and ``truth()`` reports. Same seed, same
markets, same ``now_us`` sequence → byte-identical frames.

Modelling choices beyond docs/bitstamp.md (inferred, see docs/semantics.md): a stop order keeps its id when it triggers;
a self trade is followed by ``order_changed`` for both orders with ``amount_traded`` "0"; the ``pre_event_id`` chain
runs per ``private-my_orders_<market>`` stream (both order sources); a fill's ``user_transactions`` id equals its
websocket trade id; ``order_replaced`` gets no ``order_deleted`` for the old order.

Two modes (:mod:`tracker.fake.modes`) change frames, never the story: ``market-wide-chain`` makes the chain run over
other users' events of the market (1 to 3 unseen event ids before each of ours, drawn from a generator of their own so
the account's story stays that of the seed), ``liquidations-untimed`` leaves ``microtimestamp`` out of the alerts.

Beside it: :mod:`tracker.fake.ids` (the event clock and every id), :mod:`tracker.fake.ledger` (balances, REST rows and
ground-truth records an action leaves), :mod:`tracker.fake.state` (where those live), :mod:`tracker.fake.movements`
(deposits, withdrawals, transfers, staking and the rest around each step, on the main account "0" and the
sub-accounts, default ids 1001 and 1002; no websocket frames: Bitstamp has no channel for them).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from tracker.fake import ledger
from tracker.fake.ids import IdSource
from tracker.fake.markets import DEFAULT_MARKETS, Market, resolve_markets
from tracker.fake.modes import Modes
from tracker.fake.movements import Movements
from tracker.fake.state import ZERO, AccountState, Fill, Order, Position
from tracker.fake.wire import Num, dumps, fixed, iso_utc, num

ZERO_EVENT_ID = "00000000-0000-0000-0000-000000000000"
BUY_PLACEHOLDER = Decimal(999999999)
SAT = Decimal("0.00000001")
DEFAULT_SUBACCOUNTS: tuple[int, ...] = (1001, 1002)


@dataclass(frozen=True, slots=True)
class Emission:
    """One server→client frame: its channel and exact text. REST state was updated when it was made."""

    channel: str
    text: str
    event: str


class AccountModel:
    def __init__(
        self,
        seed: int = 0,
        markets: tuple[str, ...] | list[str] = DEFAULT_MARKETS,
        user_id: int = 314159,
        start_us: int = 1_790_000_000_000_000,
        modes: Modes | None = None,
        subaccounts: tuple[int, ...] | list[int] = DEFAULT_SUBACCOUNTS,
    ) -> None:
        self.rng = random.Random(seed)
        self.modes = modes if modes is not None else Modes()
        # Other users' order events (market-wide-chain): their own generator, so ours draws what it always drew.
        self.others = random.Random(seed * 1_000_003 + 7) if self.modes.market_wide_chain else None
        self.markets = resolve_markets(markets)
        self.spot = [m for m in self.markets if not m.perp]
        self.perps = [m for m in self.markets if m.perp]
        self.user_id = user_id
        if any(int(s) <= 0 for s in subaccounts) or len(set(subaccounts)) != len(subaccounts):
            raise ValueError(f"sub-account ids must be distinct integers > 0, not {list(subaccounts)}")
        self.state = AccountState(self.markets, subaccounts=tuple(str(int(s)) for s in subaccounts))
        self.ids = IdSource(self.rng, start_us)
        self.movements = Movements(self.state, self.ids, seed)
        self._last_eid: dict[str, str] = {}
        self._cur_pos: dict[str, str] = {}
        self._open: list[int] = []  # open orderbook orders
        self._stops: list[int] = []  # armed stop orders
        self._out: list[Emission] = []
        self.frames_emitted = 0

    # ---------------------------------------------------------------- public
    def step(self, now_us: int) -> list[Emission]:
        """One action; returns its frames in wire order."""
        self.ids.catch_up(now_us)
        self._out = []
        self.movements.before_step()
        actions: list[tuple[Callable[[], bool], int]] = [
            (self._limit_rest, 18 if len(self._open) < 40 else 2),
            (self._limit_full, 10),
            (self._partial_fill, 16),
            (self._cancel, 8 if len(self._open) < 40 else 30),
            (self._market_buy, 6),
            (self._market_sell, 6),
            (self._replace, 4),
            (self._stop_create, 4 if len(self._stops) < 10 else 0),
            (self._stop_trigger, 3),
            (self._stop_cancel, 2),
            (self._self_trade, 3),
        ]
        if self.perps:
            actions += [(self._settlement, 3), (self._premium, 2), (self._liquidation, 1)]
        fns = [a for a, _ in actions]
        weights = [w for _, w in actions]
        action = self.rng.choices(fns, weights)[0]
        if not action():
            self._limit_rest()
        self.movements.after_step()
        self.frames_emitted += len(self._out)
        return self._out

    def truth(self) -> dict[str, Any]:
        return self.state.truth()

    def channel(self, kind: str, market: Market | None = None) -> str:
        if market is None:
            return f"private-{kind}-{self.user_id}"
        return f"private-{kind}_{market.symbol}-{self.user_id}"

    # ---------------------------------------------------------------- helpers
    def _amount(self, m: Market) -> Decimal:
        q = Decimal(1).scaleb(-m.amount_places)
        r = self.rng.random()
        if r < 0.08:
            units = self.rng.randint(1, 9)  # tiny: exercises 1e-08 style tokens
        elif r < 0.2:
            units = self.rng.randint(1, 10) * 10 ** (m.amount_places - 2)  # round: 0.01..0.1
        else:
            units = self.rng.randint(10**4, 5 * 10 ** (m.amount_places - 1))
        return (q * units).quantize(q)

    def _price(self, m: Market, offset_pct: float) -> Decimal:
        q = Decimal(1).scaleb(-m.price_places)
        bps = Decimal(int(offset_pct * 100) + self.rng.randint(-20, 20))
        return (m.mid * (1 + bps / Decimal(10000))).quantize(q)

    def _zero(self, m: Market) -> str:
        return "0" if self.rng.random() < 0.5 else fixed(ZERO, m.amount_places)

    def _amt(self, m: Market, value: Decimal) -> str:
        return self._zero(m) if value == 0 else fixed(value, m.amount_places)

    def _put(self, channel: str, frame: dict[str, Any], event: str) -> Emission:
        return Emission(channel, dumps(frame), event)

    def _emit(self, *emissions: Emission, shuffle: bool = False) -> None:
        items = list(emissions)
        if shuffle:
            self.rng.shuffle(items)
        self._out.extend(items)

    def _new_order(self, m: Market, side: int, subtype: int, price: Decimal, amount: Decimal) -> Order:
        t = self.ids.tick()
        cid = f"cid-{self.rng.randint(1, 40)}" if self.rng.random() < 0.3 else None
        o = Order(self.ids.order(m), m, side, subtype, price, amount, amount, t, client_order_id=cid)
        self.state.orders[o.id] = o
        return o

    def _order_event(
        self,
        o: Order,
        event: str,
        amount_traded: str,
        *,
        price: Decimal | None = None,
        remaining: Decimal | None = None,
        amount_at_create: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Emission:
        m = o.market
        if self.others is not None:  # market-wide-chain: events of other users we never see
            for _ in range(self.others.randint(1, 3)):
                self._last_eid[m.symbol] = self.ids.event_id()
        eid = self.ids.event_id()
        pre = self._last_eid.get(m.symbol, ZERO_EVENT_ID)
        self._last_eid[m.symbol] = eid
        p = o.price if price is None else price
        rem = o.remaining if remaining is None else remaining
        if p == BUY_PLACEHOLDER:
            price_str = self.rng.choice(("999999999", "999999999.00"))
        elif p == 0:
            price_str = self.rng.choice(("0", fixed(ZERO, m.price_places)))
        else:
            price_str = fixed(p, m.price_places)
        data: dict[str, Any] = {
            "id": o.id,
            "id_str": str(o.id),
            "order_type": o.side,
            "order_subtype": o.subtype,
            "datetime": str((o.created_us + 500_000) // 1_000_000),
            "microtimestamp": str(o.created_us),
            "amount": num(rem),
            "amount_str": self._amt(m, rem),
            "amount_traded": amount_traded,
            "amount_at_create": amount_at_create if amount_at_create is not None else fixed(o.amount, m.amount_places),
            "price": num(p),
            "price_str": price_str,
            "trade_account_id": 0,
            "is_liquidation": o.is_liquidation,
        }
        if o.client_order_id is not None:
            data["client_order_id"] = o.client_order_id
        if o.stop_price is not None:
            data["stop_price"] = fixed(o.stop_price, m.price_places)
        if extra:
            data.update(extra)
        source = o.source
        record: dict[str, Any] = {"event": event, "event_id": eid, "order_source": source, "trade_account_id": 0}
        channel = self.channel("my_orders", m)
        frame = {
            "data": data,
            "channel": channel,
            "event": event,
            "trade_account_id": 0,
            "event_id": eid,
            "pre_event_id": pre,
            "order_source": source,
        }
        if self.modes.orders_without_trade_account:  # no field at all, in the frame, its data and the REST replay
            del data["trade_account_id"], record["trade_account_id"], frame["trade_account_id"]
        self.state.order_events[(m.symbol, source)].append((eid, {**record, "data": data}))
        return self._put(channel, frame, event)

    def _fill(self, o: Order, want: Decimal, price: Decimal, *, maker: bool = True) -> tuple[Decimal, Emission]:
        """Execute up to ``want`` of ``o`` at ``price``; returns the executed amount and the my_trades frame."""
        m = o.market
        side = "buy" if o.side == 0 else "sell"
        t = self.ids.tick()
        position: Position | None = None
        amount = want
        if m.perp:
            position, amount = self._position_for(m, side, want, t)
        tid = self.ids.transaction()
        rate = Decimal("0.0015") if maker else Decimal("0.003")
        fee = (amount * price * rate).quantize(Decimal(1).scaleb(-m.quote_places), ROUND_HALF_UP)
        fill = Fill(tid, o.id, m, side, amount, price, fee, t, position.id if position else None, o.is_liquidation)
        self.state.fills.append(fill)
        o.trade_ids.append(tid)
        o.remaining -= amount
        o.filled += amount
        o.price = price
        o.price_seen = True
        if position is not None:
            signed = amount if side == "buy" else -amount
            if position.net == 0 or (position.net > 0) == (signed > 0):
                position.inc_amount += amount
                position.inc_value += amount * price
            position.net += signed
            position.fees += fee
        ledger.book_fill(self.state, fill, self.rng)
        data: dict[str, Any] = {
            "id": tid,
            "amount": fixed(amount, m.amount_places),
            "price": fixed(price, m.price_places),
            "microtimestamp": str(t),
            "fee": fixed(fee, m.quote_places),
            "order_id": str(o.id) if self.rng.random() < 0.5 else o.id,
            "trade_account_id": 0,
            "side": side,
        }
        if o.client_order_id is not None:
            data["client_order_id"] = o.client_order_id
        if position is not None:
            data["id_str"] = str(tid)
            data["position_id"] = position.id
            data["trade_type"] = "LIQUIDATION" if o.is_liquidation else "ORDERBOOK"
            data["is_liquidation"] = o.is_liquidation
        channel = self.channel("my_trades", m)
        frame = {"data": data, "channel": channel, "event": "trade", "trade_account_id": 0}
        return amount, self._put(channel, frame, "trade")

    def _position_for(self, m: Market, side: str, want: Decimal, t: int) -> tuple[Position, Decimal]:
        pid = self._cur_pos.get(m.symbol)
        p = self.state.positions.get(pid) if pid else None
        if p is None or p.net == 0 or p.phase == "liquidated":
            p = Position(self.ids.position(), m, side, opened_us=t)
            self.state.positions[p.id] = p
            self._cur_pos[m.symbol] = p.id
            return p, want
        signed = want if side == "buy" else -want
        if (p.net > 0) != (signed > 0) and want > abs(p.net):
            return p, abs(p.net)  # never flip a position through zero in one fill
        return p, want

    def _pick_open(self) -> Order | None:
        if not self._open:
            return None
        return self.state.orders[self.rng.choice(self._open)]

    def _close(self, o: Order, status: str) -> None:
        o.status = status
        if o.id in self._open:
            self._open.remove(o.id)

    def _market(self, *, perp_ok: bool = True) -> Market:
        pool = list(self.markets) if perp_ok else self.spot or list(self.markets)
        return self.rng.choice(pool)

    # ---------------------------------------------------------------- actions (return False if not applicable)
    def _limit_rest(self) -> bool:
        m = self._market()
        side = self.rng.randint(0, 1)
        price = self._price(m, -2 if side == 0 else 2)
        o = self._new_order(m, side, self.rng.choice((0, 0, 0, 3, 5, 8)), price, self._amount(m))
        self._open.append(o.id)
        self._emit(self._order_event(o, "order_created", "0"))
        return True

    def _limit_full(self) -> bool:
        """A crossing limit order that fills in one step: order_created → order_deleted, no order_changed."""
        m = self._market()
        side = self.rng.randint(0, 1)
        o = self._new_order(m, side, self.rng.choice((0, 4, 6)), self._price(m, 0), self._amount(m))
        self._open.append(o.id)
        self._emit(self._order_event(o, "order_created", "0"))
        amount, trade = self._fill(o, o.amount, o.price, maker=False)
        if o.remaining == 0:
            self._close(o, "filled")
            ev = self._order_event(o, "order_deleted", fixed(amount, m.amount_places))
        else:
            ev = self._order_event(o, "order_changed", fixed(amount, m.amount_places))
        self._emit(trade, ev, shuffle=True)
        return True

    def _partial_fill(self) -> bool:
        o = self._pick_open()
        if o is None:
            return False
        m = o.market
        for _ in range(self.rng.randint(1, 2)):
            frac = Decimal(self.rng.choice(("0.25", "0.5", "1")))
            want = (o.remaining * frac).quantize(Decimal(1).scaleb(-m.amount_places), ROUND_DOWN)
            if want <= 0:
                want = o.remaining
            amount, trade = self._fill(o, want, o.price)
            if o.remaining == 0:
                self._close(o, "filled")
                ev = self._order_event(o, "order_deleted", fixed(amount, m.amount_places))
            else:
                ev = self._order_event(o, "order_changed", fixed(amount, m.amount_places))
            self._emit(trade, ev, shuffle=True)
            if o.status != "open":
                break
        return True

    def _cancel(self) -> bool:
        o = self._pick_open()
        if o is None:
            return False
        self.ids.tick()
        self._close(o, "cancelled")
        self._emit(self._order_event(o, "order_deleted", "0"))
        return True

    def _market_buy(self) -> bool:
        m = self._market()
        amount = self._amount(m)
        if amount < 10 * SAT:
            amount += 10 * SAT
        o = self._new_order(m, 0, 2, BUY_PLACEHOLDER, amount)
        o.price_seen = False
        if self.rng.random() < 0.7:  # 2023 capture: amount 0 and amount_at_create "0"
            created = self._order_event(o, "order_created", "0", remaining=ZERO, amount_at_create="0")
        else:  # 2026 capture: real amount, placeholder price
            created = self._order_event(o, "order_created", "0")
        self._emit(created)
        self._run_market(o, dust=self.rng.random() < 0.15, last_on_delete=False)
        return True

    def _market_sell(self) -> bool:
        m = self._market()
        amount = self._amount(m)
        if amount < 10 * SAT:
            amount += 10 * SAT
        o = self._new_order(m, 1, 2, ZERO, amount)
        o.price_seen = False
        self._emit(self._order_event(o, "order_created", "0", remaining=ZERO))
        self._run_market(o, dust=self.rng.random() < 0.15, last_on_delete=True)
        return True

    def _run_market(self, o: Order, *, dust: bool, last_on_delete: bool) -> None:
        m = o.market
        target = o.amount - (SAT if dust else ZERO)
        n = self.rng.randint(1, 3)
        for i in range(n):
            left = target - o.filled
            if left <= 0:
                break
            want = left if i == n - 1 else (left / 2).quantize(SAT, ROUND_DOWN) or left
            price = self._price(m, 0.1 * (i + 1) if o.side == 0 else -0.1 * (i + 1))
            amount, trade = self._fill(o, want, price, maker=False)
            traded = fixed(amount, m.amount_places)
            final = i == n - 1 or o.filled >= target or amount < want
            if final and last_on_delete:
                ev = self._order_event(o, "order_deleted", traded)
                self._emit(trade, ev, shuffle=True)
                self._close(o, "filled" if o.remaining == 0 else "cancelled")
                return
            self._emit(trade, self._order_event(o, "order_changed", traded), shuffle=True)
            if final:
                break
        self._close(o, "filled" if o.remaining == 0 else "cancelled")
        self._emit(self._order_event(o, "order_deleted", "0"))

    def _replace(self) -> bool:
        old = self._pick_open()
        if old is None:
            return False
        m = old.market
        self._close(old, "replaced")
        new = self._new_order(m, old.side, old.subtype, self._price(m, -2 if old.side == 0 else 2), self._amount(m))
        new.client_order_id = old.client_order_id
        self._open.append(new.id)
        self._emit(self._order_event(new, "order_replaced", "0", extra={"orig_order_id": old.id}))
        return True

    def _stop_create(self) -> bool:
        m = self._market()
        side = self.rng.randint(0, 1)
        price = self._price(m, 3 if side == 0 else -3)
        o = self._new_order(m, side, self.rng.choice((20, 22)), price, self._amount(m))
        o.source = "stop_order"
        o.stop_price = price
        self._stops.append(o.id)
        self._emit(self._order_event(o, "stop_active", "0"))
        return True

    def _stop_trigger(self) -> bool:
        if not self._stops:
            return False
        o = self.state.orders[self._stops.pop(self.rng.randrange(len(self._stops)))]
        self.ids.tick()
        o.source = "orderbook"
        self._open.append(o.id)
        self._emit(self._order_event(o, "order_created", "0"))
        return True

    def _stop_cancel(self) -> bool:
        if not self._stops:
            return False
        o = self.state.orders[self._stops.pop(self.rng.randrange(len(self._stops)))]
        self.ids.tick()
        o.status = "cancelled"
        self._emit(self._order_event(o, "stop_inactive", "0"))
        return True

    def _self_trade(self) -> bool:
        m = self._market()
        price = self._price(m, 0)
        buy = self._new_order(m, 0, 0, price, self._amount(m) + 4 * SAT)
        sell = self._new_order(m, 1, 0, price, self._amount(m) + 4 * SAT)
        self._open += [buy.id, sell.id]
        self._emit(self._order_event(buy, "order_created", "0"), self._order_event(sell, "order_created", "0"))
        x = (min(buy.remaining, sell.remaining) / 2).quantize(SAT, ROUND_DOWN)
        t = self.ids.tick()
        for o in (buy, sell):
            o.remaining -= x
            o.self_offset += x
        data = {
            "timestamp": Num(str(t // 1_000_000)),
            "amount": num(x),
            "amount_str": fixed(x, m.amount_places),
            "price": num(price),
            "price_str": fixed(price, m.price_places),
            "type": self.rng.randint(0, 1),
            "microtimestamp": str(t),
            "buy_order_id": str(buy.id) if self.rng.random() < 0.5 else buy.id,
            "sell_order_id": str(sell.id) if self.rng.random() < 0.5 else sell.id,
            "sellers_trade_account_id": 0,
            "buyers_trade_account_id": 0,
        }
        channel = self.channel("live_trades", m)
        self.state.self_trades.append(
            {
                "buy_order_id": str(buy.id),
                "sell_order_id": str(sell.id),
                "market": m.symbol,
                "amount": fixed(x, m.amount_places),
                "price": fixed(price, m.price_places),
                "occurred_at": iso_utc(t),
            }
        )
        self._emit(
            self._put(channel, {"data": data, "channel": channel, "event": "self_trade"}, "self_trade"),
            self._order_event(buy, "order_changed", "0"),
            self._order_event(sell, "order_changed", "0"),
        )
        return True

    # ---------------------------------------------------------------- perp-only
    def _signed(self, lo: int, hi: int) -> Decimal:
        return Decimal(self.rng.randint(lo, hi)).scaleb(-2)

    def _settle(self, p: Position, *, closing: bool, alf: Decimal = ZERO) -> None:
        m = p.market
        t = self.ids.tick()
        ap, atf, afu = self._signed(-50000, 50000), -self._signed(0, 2000), self._signed(-3000, 3000)
        tnx = self.ids.transaction()
        price = self._price(m, 0)
        s = ledger.Settlement(p, tnx, t, price, closing, ap=ap, atf=atf, alf=alf, afu=afu, asl=ZERO)
        data = {
            "id": p.id, "tnx_id": str(tnx), "ts": str(s.seconds), "price": fixed(price, m.price_places),
            "ccy": m.quote.upper(), "as": f"{s.amount:f}", "ap": f"{ap:f}", "atf": f"{atf:f}", "alf": f"{alf:f}",
            "afu": f"{afu:f}", "asl": f"{s.asl:f}", "sp": fixed(m.mid, m.price_places), "typ": s.typ,
        }  # fmt: skip
        ledger.book_settlement(self.state, s)
        channel = self.channel("my_settlements")
        self._emit(self._put(channel, {"event": "settlement", "channel": channel, "data": data}, "settlement"))

    def _settlement(self) -> bool:
        if not self.state.positions:
            return False
        p = self.state.positions[self.rng.choice(sorted(self.state.positions))]
        self._settle(p, closing=p.net == 0)
        return True

    def _premium(self) -> bool:
        m = self.rng.choice(self.perps)
        t = self.ids.tick()
        tnx = self.ids.transaction()
        amount = -self._signed(1, 500)
        data: dict[str, Any] = {
            "tnx_id": str(tnx),
            "ts": str(t // 1_000_000),
            "ccy": m.quote.upper(),
            "amount": f"{amount:f}",
        }
        pid = self._cur_pos.get(m.symbol) if self.rng.random() < 0.5 else None
        if pid is not None:
            data = {"id": pid, **data}
        ledger.book_premium(self.state, m, pid, tnx, t, amount)
        channel = self.channel("my_settlements")
        frame = {"event": "insurance_fund_premium", "channel": channel, "data": data}
        self._emit(self._put(channel, frame, "insurance_fund_premium"))
        return True

    def _alert(self, p: Position, event: str) -> None:
        t = self.ids.tick()
        data = {
            "position_id": p.id, "trade_account_id": 0, "microtimestamp": str(t), "alert_type": event,
            "margin_mode": "CROSS", "initial_margin_ratio": "1.2", "maintenance_margin_ratio": "0.9",
        }  # fmt: skip
        if self.modes.liquidations_untimed:
            del data["microtimestamp"]  # the truth keeps the time: the event happened then, unseen or not
        ledger.record_alert(self.state, p, event, t)
        channel = self.channel("my_liquidations")
        self._emit(self._put(channel, {"event": event, "channel": channel, "data": data}, event))

    def _liquidation(self) -> bool:
        live = [
            p
            for p in self.state.positions.values()
            if p.net != 0 and not p.phase and self._cur_pos[p.market.symbol] == p.id
        ]
        if not live:
            return False
        p = self.rng.choice(sorted(live, key=lambda p: p.id))
        m = p.market
        for ev in self.rng.sample(("im_breach_warning", "mm_breach_warning", "im_breach"), self.rng.randint(1, 2)):
            self._alert(p, ev)
        self._alert(p, "liquidation_start")
        p.phase = "liquidating"
        side = 1 if p.net > 0 else 0
        o = self._new_order(m, side, 2, self._price(m, -1 if side else 1), abs(p.net))
        o.client_order_id = None
        o.is_liquidation = True
        self._emit(self._order_event(o, "order_created", "0"))
        amount, trade = self._fill(o, o.amount, o.price, maker=False)
        self._close(o, "filled" if o.remaining == 0 else "cancelled")
        self._emit(trade, self._order_event(o, "order_deleted", fixed(amount, m.amount_places)), shuffle=True)
        self._alert(p, "liquidation_concluded")
        p.phase = "liquidated"
        self._settle(p, closing=True, alf=-self._signed(100, 5000))
        return True
