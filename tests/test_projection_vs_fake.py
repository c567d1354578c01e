"""The whole pure pipeline (frame → log entry → domain event → fold) against the fake exchange's ground truth.

The fake (tracker/fake) and the projector were written separately from docs/semantics.md; agreeing row for row on
thousands of generated frames is the check that both read the contract the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from msgspec.structs import asdict
from pipeline import NOW, Log

from tracker.bitstamp.frames import (
    entry_from_account_order_event,
    entry_from_perp_trade,
    entry_from_position_settlement,
    entry_from_user_transaction,
)
from tracker.bitstamp.wire import loads_exact
from tracker.domain.events import Unknown
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.domain.money import format_decimal
from tracker.domain.projection import ProjectionState, fold
from tracker.domain.rows import FeesDailyRow
from tracker.fake.model import AccountModel
from tracker.fake.wire import dumps

T0 = 1_790_000_000_000_000
MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")


def _d(value: Decimal | str | None) -> str | None:
    return None if value is None else format_decimal(Decimal(value))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _norm(rows: list[dict[str, Any]], decimals: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{k: (_d(v) if k in decimals else v) for k, v in row.items()} for row in rows]


def _project(seed: int, steps: int) -> tuple[ProjectionState, dict[str, Any], Log]:
    model = AccountModel(seed, MARKETS)
    log = Log("acc")
    for i in range(steps):
        for emission in model.step(T0 + i * 250_000):
            log.ws(emission.text)
    return fold(log.events()), model.truth(), log


@pytest.mark.parametrize("seed", [1, 7])
def test_projection_equals_fake_truth(seed: int) -> None:
    state, truth, log = _project(seed, 1500)
    assert not [e for e in log.events() if isinstance(e, Unknown)]
    order_cols = ("amount", "amount_filled", "amount_remaining", "price")
    mine_orders = sorted(
        (
            {"order_id": o.order_id, "market": o.market, "side": o.side, "status": o.status, "amount": _d(o.amount),
             "amount_filled": _d(o.amount_filled), "amount_remaining": _d(o.amount_remaining), "price": _d(o.price),
             "client_order_id": o.client_order_id, "created_at": _iso(o.created_at)}
            for o in state.orders.values()
        ),
        key=lambda r: int(r["order_id"]),
    )  # fmt: skip
    assert mine_orders == sorted(_norm(truth["orders"], order_cols), key=lambda r: int(r["order_id"]))
    mine_fills = sorted(
        (
            {"trade_id": f.trade_id, "order_id": f.order_id, "market": f.market, "side": f.side, "amount": _d(f.amount),
             "price": _d(f.price), "fee": _d(f.fee), "executed_at": _iso(f.executed_at)}
            for f in state.fills.values()
        ),
        key=lambda r: int(r["trade_id"]),
    )  # fmt: skip
    assert mine_fills == sorted(_norm(truth["fills"], ("amount", "price", "fee")), key=lambda r: int(r["trade_id"]))
    mine_days = sorted(
        (
            {"day": r.day, "market": r.market, "fills": r.fills, "volume": _d(r.volume), "fees": _d(r.fees),
             "base_volume": _d(r.base_volume)}
            for r in state.fees_daily.values()
        ),
        key=lambda r: (r["day"], r["market"]),
    )  # fmt: skip
    assert mine_days == _norm(truth["fees_daily"], ("volume", "fees", "base_volume"))
    mine_positions = sorted(
        (
            {"position_id": p.position_id, "market": p.market, "side": p.side, "size": _d(p.size), "status": p.status,
             "entry_price": _d(p.entry_price), "fees": _d(p.fees), "realised_pnl": _d(p.realised_pnl)}
            for p in state.positions.values()
        ),
        key=lambda r: r["position_id"],
    )  # fmt: skip
    truth_positions = sorted(
        _norm(truth["positions"], ("size", "entry_price", "fees", "realised_pnl")), key=lambda r: r["position_id"]
    )
    assert mine_positions == truth_positions
    assert len(state.self_trades) == len(truth["self_trades"])
    assert len(state.settlements) == len(truth["settlements"])
    assert len(state.liquidations) == len(truth["liquidations"])
    assert not [d for d in state.discrepancies.values() if d.status == "open"]
    assert all(s.chain_breaks == 0 for s in state.streams.values())


def _rest_entries(model: AccountModel) -> list[NewEntry | QuarantineItem]:
    st = model.state
    pairs = {f"{m.base}_{m.quote}": m.symbol for m in model.markets if not m.perp}
    out: list[NewEntry | QuarantineItem] = []
    for _tid, sym, row in st.transactions:
        out.append(
            entry_from_user_transaction(
                loads_exact(dumps(row)), account="acc", received_at=NOW, markets_by_pair=pairs, market=sym
            )
        )
    for (sym, _source), items in st.order_events.items():
        for _eid, record in items:
            out.append(
                entry_from_account_order_event(loads_exact(dumps(record)), account="acc", market=sym, received_at=NOW)
            )
    for _tid, _sym, _us, row in st.trade_history:
        out.append(entry_from_perp_trade(loads_exact(dumps(row)), account="acc", received_at=NOW))
    for _us, row in st.settlement_rows:
        out.append(entry_from_position_settlement(loads_exact(dumps(row)), account="acc", received_at=NOW))
    return out


IGNORED = {"seq", "first_seq", "last_seq", "source", "seen_event_ids", "opened_seq", "resolved_seq", "mismatch_id"}
TABLES_COMPARED = ("orders", "fills", "fees_daily", "positions", "settlements", "self_trades", "liquidations")


def _comparable(state: ProjectionState, table: str) -> dict[Any, dict[str, Any]]:
    """The table's rows as v_* shows them: a fees_daily row whose fills all moved to their trade account (a REST fill
    enriched by its websocket frame) is hidden by v_fees_daily."""
    rows = state.rows_of(table).items()
    return {
        k: {f: v for f, v in asdict(r).items() if f not in IGNORED}
        for k, r in rows
        if not (isinstance(r, FeesDailyRow) and r.fills == 0)
    }


@pytest.mark.parametrize("rest_first", [False, True], ids=["ws_first", "rest_first"])
def test_rest_and_ws_agree(rest_first: bool) -> None:
    """Every REST mirror of the fake's activity (user_transactions, account_order_data per source, trade_history,
    settlements) appended before or after the frames changes no projected value and opens no discrepancy."""
    model = AccountModel(3, MARKETS)
    texts = [e.text for i in range(800) for e in model.step(T0 + i * 250_000)]
    ws_only = Log("acc")
    for text in texts:
        ws_only.ws(text)
    expected = fold(ws_only.events())
    rest = _rest_entries(model)
    assert all(isinstance(e, NewEntry) for e in rest)
    both = Log("acc")
    if rest_first:
        for entry in rest:
            both.append(entry)
    for text in texts:
        both.ws(text)
    if not rest_first:
        for entry in rest:
            both.append(entry)
    events = both.events()
    assert not [e for e in events if isinstance(e, Unknown)]
    state = fold(events)
    for table in TABLES_COMPARED:
        assert _comparable(state, table) == _comparable(expected, table), table
    assert not [d for d in state.discrepancies.values() if d.status == "open"]
