"""The fake's perp REST filters (``trade_history/``, ``position_settlement_transactions/``), checked against the
frames the model emitted (an independent source: the rows are never compared with the state they are read from).

These filters compare integers (trade ids, µs times) with the request's parameters. The state used to declare its
rows as plain dicts while holding tuples, so the type checker read every id as a string and could check none of
those comparisons; the entries are typed now (``TradeHistoryEntry``, ``SettlementEntry``) and these tests pin what
the comparisons do. Pure: no sockets, no clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tracker.fake.auth import TokenStore
from tracker.fake.model import AccountModel
from tracker.fake.rest import RestApi

T0 = 1_790_000_000_000_000
MARKET = "btcusd-perp"


@pytest.fixture(scope="module")
def fake() -> tuple[RestApi, list[dict[str, Any]], list[dict[str, Any]]]:
    """The REST routes over a model stepped 600 times, the my_trades frames of one perp market and the settlement
    frames (their ``data``)."""
    model = AccountModel(3, ("btcusd", MARKET, "ethusd-perp"))
    trades: list[dict[str, Any]] = []
    settlements: list[dict[str, Any]] = []
    for i in range(600):
        for e in model.step(T0 + i * 1_500_000):
            if e.event == "trade" and e.channel == model.channel("my_trades", model.markets[1]):
                trades.append(json.loads(e.text)["data"])
            elif e.event == "settlement":
                settlements.append(json.loads(e.text)["data"])
    assert len(trades) > 40 and len(settlements) > 10
    return RestApi(model.state, TokenStore(lambda: 0.0), model.user_id, lambda: 0.0), trades, settlements


def get(api: RestApi, route: str, **params: object) -> Any:
    return json.loads(api.handle("GET", route, {k: str(v) for k, v in params.items()}))


def test_trade_history_after_id_is_exclusive(fake: tuple[RestApi, list[dict[str, Any]], Any]) -> None:
    api, trades, _ = fake
    ids = [int(t["id"]) for t in trades]
    middle = ids[len(ids) // 2]
    rows = get(api, f"trade_history/{MARKET}/", sort="asc", after_id=middle, limit=1000)
    assert [int(r["trade_id"]) for r in rows] == [i for i in ids if i > middle]
    newest = get(api, f"trade_history/{MARKET}/", after_id=middle, limit=3)  # sort defaults to desc
    assert [int(r["trade_id"]) for r in newest] == ids[::-1][:3]


def test_trade_history_time_window(fake: tuple[RestApi, list[dict[str, Any]], Any]) -> None:
    api, trades, _ = fake
    seconds = {int(t["id"]): int(t["microtimestamp"]) // 1_000_000 for t in trades}
    ids = list(seconds)
    since, until = seconds[ids[10]], seconds[ids[-10]]
    rows = get(api, f"trade_history/{MARKET}/", sort="asc", limit=1000, since_timestamp=since, until_timestamp=until)
    expected = [i for i in ids if since <= seconds[i] < until]
    assert [int(r["trade_id"]) for r in rows] == expected
    assert 0 < len(expected) < len(ids)


def test_trade_history_by_order_id(fake: tuple[RestApi, list[dict[str, Any]], Any]) -> None:
    api, trades, _ = fake
    order_id = str(trades[len(trades) // 3]["order_id"])  # the frame spells it as a number or as text
    rows = get(api, f"trade_history/{MARKET}/", order_id=order_id, limit=1000)
    assert {r["trade_id"] for r in rows} == {str(t["id"]) for t in trades if str(t["order_id"]) == order_id}
    assert rows


def test_settlement_transactions_window_and_lookup(fake: tuple[RestApi, Any, list[dict[str, Any]]]) -> None:
    api, _, settlements = fake
    since = int(settlements[len(settlements) // 2]["ts"])
    rows = get(api, "position_settlement_transactions/", since_timestamp=since, sort="asc")  # default: desc
    assert [r["transaction_id"] for r in rows] == [s["tnx_id"] for s in settlements if int(s["ts"]) >= since]
    rows = get(api, "position_settlement_transactions/", until_timestamp=since, sort="asc")
    assert [r["transaction_id"] for r in rows] == [s["tnx_id"] for s in settlements if int(s["ts"]) < since]
    one = settlements[3]
    row = get(api, f"position_settlement_transactions/{one['tnx_id']}/")
    assert (row["settlement_time"], row["pnl_settled"]) == (int(one["ts"]), one["as"])
