"""The pure account model: deterministic per seed, covers every docs/bitstamp.md §2 case, and its ground truth equals
an independent recomputation from the frames it emitted (also when those frames travel over a real socket)."""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import httpx
import trio
from fake_helpers import subscribe, token
from trio_websocket import open_websocket_url
from truth_from_frames import normalise, recompute

from tracker.fake.model import AccountModel
from tracker.fake.server import open_fake_exchange

T0 = 1_790_000_000_000_000
MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
BOOKS = ("accounts", "crypto_transactions", "tampered")  # the books come from REST rows, not from frames


def frame_truth(truth: dict[str, object]) -> dict[str, object]:
    """The part of the truth the frames can tell (the books are checked against REST in test_fake_ledger.py)."""
    return {k: v for k, v in truth.items() if k not in BOOKS}


def run(seed: int, steps: int, markets: tuple[str, ...] = MARKETS) -> tuple[AccountModel, list[str]]:
    model = AccountModel(seed, markets)
    texts: list[str] = []
    for i in range(steps):
        texts += [e.text for e in model.step(T0 + i * 250_000)]
    return model, texts


def test_deterministic_per_seed() -> None:
    a_model, a = run(5, 300)
    b_model, b = run(5, 300)
    assert a == b
    assert a_model.truth() == b_model.truth()
    _, c = run(6, 300)
    assert a != c


def test_truth_equals_recomputation_from_frames() -> None:
    for seed in (1, 2, 3):
        model, texts = run(seed, 1500)
        assert normalise(recompute(texts)) == normalise(frame_truth(model.truth()))


def test_covers_every_case() -> None:
    model, texts = run(1, 3000)
    frames = [json.loads(t, parse_float=Decimal) for t in texts]
    events = Counter(f["event"] for f in frames)
    for name in (
        "order_created", "order_changed", "order_deleted", "order_replaced", "stop_active", "stop_inactive",
        "trade", "self_trade", "settlement", "insurance_fund_premium", "im_breach_warning", "mm_breach_warning",
        "im_breach", "liquidation_start", "liquidation_concluded",
    ):  # fmt: skip
        assert events[name] > 0, name
    orders = [f for f in frames if f["channel"].startswith("private-my_orders_")]
    created = [f["data"] for f in orders if f["event"] == "order_created"]
    assert any(d["price_str"].startswith("999999999") and d["amount_at_create"] == "0" for d in created)
    assert any(Decimal(d["price_str"]) == 0 and Decimal(d["amount_str"]) == 0 and d["order_type"] == 1 for d in created)
    assert any('"amount":1e-08,' in t or '"amount":1e-08}' in t for t in texts)  # exponent token, literally
    # event_id strictly increasing and pre_event_id chained per market stream
    last: dict[str, str] = {}
    for f in orders:
        assert f["pre_event_id"] == last.get(f["channel"], "00000000-0000-0000-0000-000000000000")
        assert f["event_id"] > last.get(f["channel"], "")
        last[f["channel"]] = f["event_id"]
    trades = [f["data"] for f in frames if f["event"] == "trade"]
    assert {type(t["order_id"]) for t in trades} == {int, str}
    assert any(int(t["id"]) > 2**53 for t in trades) and any(int(d["id"]) > 2**53 for d in created)
    assert any(t.get("position_id") for t in trades)
    # fill before and after its order event; one-step fills (created -> deleted, no changed); cancels with fills
    per_order: dict[str, list[str]] = {}
    for f in frames:
        if f["event"] == "trade":
            per_order.setdefault(str(f["data"]["order_id"]), []).append("trade")
        elif f["channel"].startswith("private-my_orders_"):
            per_order.setdefault(f["data"]["id_str"], []).append(f["event"])
    assert any(seq[:3] == ["order_created", "trade", "order_deleted"] for seq in per_order.values())
    assert any(seq[:3] == ["order_created", "order_deleted", "trade"] for seq in per_order.values())
    statuses = {o["order_id"]: o for o in model.truth()["orders"]}
    assert any(o["status"] == "cancelled" and Decimal(o["amount_filled"]) > 0 for o in statuses.values())
    assert any(o["status"] == "cancelled" and Decimal(o["amount_filled"]) == 0 for o in statuses.values())
    assert {o["status"] for o in statuses.values()} == {"open", "filled", "cancelled", "replaced"}
    fees = model.truth()["fees_daily"]
    assert fees and all(Decimal(d["fees"]) > 0 for d in fees)


async def test_truth_from_socket_frames() -> None:
    with trio.fail_after(20):
        now = time.time()
        async with open_fake_exchange(seed=9, markets=MARKETS, clock=lambda: now) as fx, httpx.AsyncClient() as c:
            tok = await token(c, fx)
            async with open_websocket_url(fx.ws_url) as ws:
                for ch in fx.private_channels():
                    assert (await subscribe(ws, ch, tok))["event"] == "bts:subscription_succeeded"
                emitted = await fx.generate(400)
                received = [await ws.get_message() for _ in emitted]
                assert received == [e.text for e in emitted]
            assert normalise(recompute(received)) == normalise(frame_truth(fx.truth()))
