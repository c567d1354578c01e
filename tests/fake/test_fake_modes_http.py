"""The fake's REST modes (tracker/fake/modes.py) over a real socket, seen by a plain httpx client with an independent
signer: derivatives refused or flaky, answers without signature, order errors with HTTP 200, the bare-query signing
form, settlement times in milliseconds; and ``position_settlement_transactions/`` paging, which holds in every mode.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation (a manual clock)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from fake_helpers import ManualClock, call

from tracker.bitstamp.signing import QUERY_BARE
from tracker.exchange.rest import BitstampClient
from tracker.fake.modes import Modes
from tracker.fake.server import FakeExchange, open_fake_exchange

PERP = "btcusd-perp"
DERIVATIVES_GETS = (
    f"trade_history/{PERP}/",
    "trade_history/",
    "position_settlement_transactions/",
    "open_positions/",
    "position_history/",
)
SIG = "x-server-auth-signature"


@asynccontextmanager
async def fake(clock: ManualClock, modes: Iterable[str] | Modes = (), seed: int = 21) -> AsyncIterator[FakeExchange]:
    async with open_fake_exchange(seed=seed, clock=clock, modes=modes) as fx:
        yield fx


def test_parse_modes() -> None:
    assert not Modes() and Modes.parse([]) == Modes()
    assert Modes.parse(["unsigned,error-200", "refuse-channel=my_trades_btcusd"]) == Modes(
        unsigned=True, error_200=True, refuse_channels=frozenset({"my_trades_btcusd"})
    )
    everything = Modes.parse(["all"])
    assert everything.names()[:2] == ["derivatives-refused", "derivatives-flaky"]
    assert everything.refuse_channels == {"my_token_settlements"} and Modes.parse(everything.names()) == everything
    for bad in ("nope", "refuse-channel", "refuse-channel=", "unsigned=1"):
        with pytest.raises(ValueError):
            Modes.parse([bad])
    refused = Modes(refuse_channels=frozenset({"my_trades_btcusd-perp", "live_trades_ethusd"}))
    assert refused.refuses("private-my_trades_btcusd-perp-314159") and refused.refuses("live_trades_ethusd")
    assert not refused.refuses("private-my_trades_btcusd-314159") and not refused.refuses("live_trades_btcusd")


async def test_derivatives_refused(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        async with fake(clock, ["derivatives-refused"]) as fx:
            await fx.generate(200)
            for route in DERIVATIVES_GETS:
                r = await call(client, fx, "GET", route, query="limit=5")
                assert r.status_code == 400, (route, r.text)
                assert r.json() == {"code": "API5506", "message": "Trade account does not support derivatives."}
                assert SIG not in r.headers  # an error is never signed
            r = await call(client, fx, "POST", "user_transactions/", body="limit=1000")
            assert r.status_code == 200 and SIG in r.headers
            perp_rows = [row for row in r.json() if "margin_mode" in row]
            assert perp_rows  # the perp activity still happened (websocket and user_transactions show it)


async def test_derivatives_flaky_every_third_call(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        async with fake(clock, ["derivatives-flaky"]) as fx:
            await fx.generate(100)
            answers = []
            for i in range(9):
                route = DERIVATIVES_GETS[i % 3]
                answers.append(await call(client, fx, "GET", route, query="limit=5"))
                r = await call(client, fx, "POST", "account_balances/")  # other endpoints do not count, never fail
                assert r.status_code == 200
            flaky = [i + 1 for i, r in enumerate(answers) if r.status_code != 200]
            assert flaky == [3, 6, 9]
            for i in flaky:
                assert answers[i - 1].status_code == 400
                assert answers[i - 1].json() == {"code": "API5502", "message": "Something went wrong, try again later."}
            assert all(isinstance(r.json(), list) and SIG in r.headers for r in answers if r.status_code == 200)


async def test_unsigned(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        async with fake(clock, ["unsigned"]) as fx:
            await fx.generate(50)
            for method, route, body, query in (
                ("POST", "websockets_token/", "", ""),
                ("POST", "user_transactions/", "limit=2", ""),
                ("POST", "order_status/", f"id={fx.truth()['orders'][0]['order_id']}", ""),
                ("GET", f"trade_history/{PERP}/", "", "limit=2"),
            ):
                r = await call(client, fx, method, route, body=body, query=query)
                assert r.status_code == 200, r.text
                assert SIG not in r.headers, route
        async with fake(clock) as fx:  # the default fake signs the same answers
            r = await call(client, fx, "POST", "websockets_token/")
            assert r.status_code == 200 and SIG in r.headers


async def test_error_200_order_endpoints(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        async with fake(clock, ["error-200"]) as fx:
            await fx.generate(50)
            r = await call(client, fx, "POST", "order_status/", body="id=1")
            assert r.status_code == 200 and SIG not in r.headers
            assert r.json() == {"status": "error", "reason": {"__all__": ["Order not found"]}, "code": "404.002"}
            r = await call(client, fx, "POST", "order_status/", body="omit_transactions=true")
            assert r.status_code == 200 and r.json()["code"] == "400.001" and r.json()["status"] == "error"
            r = await call(client, fx, "POST", "open_orders/nosuchmarket/")
            assert r.status_code == 200 and r.json()["code"] == "404.003"
            known = fx.truth()["orders"][0]["order_id"]
            r = await call(client, fx, "POST", "order_status/", body=f"id={known}")
            assert r.status_code == 200 and r.json()["id"] == known and SIG in r.headers  # success: signed
            r = await call(client, fx, "POST", "account_order_data/")  # not an order endpoint: a plain 400
            assert r.status_code == 400 and r.json()["response_code"] == "400.078"


async def test_get_query_bare(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        route, query = f"trade_history/{PERP}/", "limit=3&sort=asc"
        async with fake(clock, ["get-query-bare"]) as fx:
            await fx.generate(100)
            r = await call(client, fx, "GET", route, query=query)
            assert r.status_code == 403 and r.json()["code"] == "API0005"
            r = await call(client, fx, "GET", route, query=query, bare_query=True)
            assert r.status_code == 200 and len(r.json()) == 3
            assert (await call(client, fx, "POST", "user_transactions/", body="limit=1")).status_code == 200
            assert (await call(client, fx, "GET", "my_markets/")).status_code == 200  # no query: one form only
        async with fake(clock) as fx:  # the default fake: the other way round
            await fx.generate(100)
            r = await call(client, fx, "GET", route, query=query, bare_query=True)
            assert r.status_code == 403 and r.json()["code"] == "API0005"
            assert (await call(client, fx, "GET", route, query=query)).status_code == 200


async def test_tracker_client_switches_to_the_bare_query(clock: ManualClock) -> None:
    """tracker's own client against the mode: its first signed GET with a query is refused, the retry in the other
    form passes, and the form is kept."""
    with trio.fail_after(10):
        async with fake(clock, ["get-query-bare"]) as fx:
            await fx.generate(100)
            refused: list[str] = []
            async with BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as api:
                fx.http.faults.on_request.append(lambda method, path: refused.append(f"{method} {path}"))
                await api.account_balances()
                rows = await api.trade_history(PERP, limit=2, sort="asc")
                assert len(rows) == 2 and api.auth.query_form == QUERY_BARE and api.query_form_settled
                await api.position_settlement_transactions(limit=1, sort="asc")
            gets = [r for r in refused if r.startswith("GET")]
            assert gets == [f"GET /api/v2/trade_history/{PERP}/"] * 2 + [
                "GET /api/v2/position_settlement_transactions/"
            ]


def settlement_frames(emitted: Iterable[Any]) -> list[dict[str, Any]]:
    return [json.loads(e.text)["data"] for e in emitted if e.event == "settlement"]


async def get_rows(client: httpx.AsyncClient, fx: FakeExchange, query: str) -> httpx.Response:
    return await call(client, fx, "GET", "position_settlement_transactions/", query=query)


async def test_settlement_paging_in_every_mode(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """sort (default desc), limit (default 100, at most 1000), offset (at most 200000), since/until in seconds, and
    a since_timestamp more than 30 days old refused."""
    with trio.fail_after(20):
        async with fake(clock, seed=5) as fx:
            frames = settlement_frames(await fx.generate(3000))
            assert len(frames) > 110
            ids = [f["tnx_id"] for f in frames]
            r = await get_rows(client, fx, "")
            assert [row["transaction_id"] for row in r.json()] == ids[::-1][:100]  # newest first, 100
            r = await get_rows(client, fx, "sort=asc&limit=1000")
            assert [row["transaction_id"] for row in r.json()] == ids
            r = await get_rows(client, fx, "sort=asc&limit=7&offset=5")
            assert [row["transaction_id"] for row in r.json()] == ids[5:12]
            assert all(isinstance(row["settlement_time"], int) for row in r.json())
            assert [row["settlement_time"] for row in r.json()] == [int(f["ts"]) for f in frames[5:12]]  # seconds
            since, until = int(frames[20]["ts"]), int(frames[-20]["ts"])
            r = await get_rows(client, fx, f"sort=asc&limit=1000&since_timestamp={since}&until_timestamp={until}")
            assert [row["transaction_id"] for row in r.json()] == [
                f["tnx_id"] for f in frames if since <= int(f["ts"]) < until
            ]
            for bad in ("limit=1001", "limit=0", "offset=200001", "sort=up", "offset=-1"):
                r = await get_rows(client, fx, bad)
                assert r.status_code == 400 and r.json()["code"].startswith("400."), bad
            assert (await get_rows(client, fx, "offset=200000")).json() == []
            month_ago = int(clock.now) - 30 * 86_400
            r = await get_rows(client, fx, f"since_timestamp={month_ago - 1}")
            assert r.status_code == 400 and r.json()["code"] == "400.001" and SIG not in r.headers
            assert (await get_rows(client, fx, f"since_timestamp={month_ago + 3600}")).status_code == 200


async def test_settlement_ms(client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(20):
        async with fake(clock, ["settlement-ms"], seed=5) as fx:
            frames = settlement_frames(await fx.generate(1500))
            assert len(frames) > 20
            r = await get_rows(client, fx, "sort=asc&limit=10&offset=3")
            rows = r.json()
            assert [row["transaction_id"] for row in rows] == [f["tnx_id"] for f in frames[3:13]]
            assert [row["settlement_time"] for row in rows] == [int(f["ts"]) * 1000 for f in frames[3:13]]
            since = int(frames[10]["ts"])  # the parameters stay in seconds
            r = await get_rows(client, fx, f"sort=asc&limit=1000&since_timestamp={since}")
            assert [row["transaction_id"] for row in r.json()] == [f["tnx_id"] for f in frames if int(f["ts"]) >= since]
            one = await call(client, fx, "GET", f"position_settlement_transactions/{frames[0]['tnx_id']}/")
            assert one.json()["settlement_time"] == int(frames[0]["ts"]) * 1000


async def test_modes_leave_the_truth_alone(clock: ManualClock) -> None:
    """Every mode at once: the same seed tells the same story (orders, fills, settlements, liquidations)."""
    with trio.fail_after(20):
        truths = []
        for modes in ((), ["all"]):
            clock.now = 1_790_000_000.0
            async with fake(clock, modes, seed=9) as fx:
                await fx.generate(800)
                truths.append(fx.truth())
        assert truths[0] == truths[1] and truths[0]["liquidations"] and truths[0]["settlements"]


def test_signature_helper_is_independent() -> None:
    """The helper the tests sign with is plain hmac (guards against it drifting to tracker's signing code)."""
    import fake_helpers

    headers = fake_helpers.signed_headers(
        "GET", "http://h:1/p/?a=1", key="k", secret="s", nonce="n", timestamp_ms=5, bare_query=True
    )
    expected = hmac.new(b"s", b"BITSTAMP kGETh:1/p/a=1n5v2", hashlib.sha256).hexdigest()
    assert headers["X-Auth-Signature"] == expected
