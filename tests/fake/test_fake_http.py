"""The fake's HTTP API v2 over a real socket: signatures checked by an independent signer, each auth error code,
response signatures, pagination rules and the open_orders cache.

Rules: loopback only, port 0, an absolute timeout on every test, no sleep as synchronisation (a manual clock)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from fake_helpers import FORM, ManualClock, call, signed_headers

from tracker.fake.server import FakeExchange, open_fake_exchange


@pytest.fixture
async def fx(clock: ManualClock) -> AsyncIterator[FakeExchange]:
    async with open_fake_exchange(seed=7, clock=clock) as fx:
        yield fx


def ts_ms(clock: ManualClock) -> int:
    return int(clock.now * 1000)


async def test_independent_signature_accepted_and_response_signed(
    fx: FakeExchange, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    with trio.fail_after(10):
        nonce = str(uuid.uuid4())
        r = await call(client, fx, "POST", "websockets_token/", nonce=nonce, timestamp_ms=ts_ms(clock))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["token"]) == 32 and body["valid_sec"] == 60 and body["user_id"] == fx.user_id
        expected = hmac.new(
            fx.api_secret.encode(),
            (nonce + str(ts_ms(clock)) + r.headers["content-type"]).encode() + r.content,
            hashlib.sha256,
        ).hexdigest()
        assert r.headers["x-server-auth-signature"] == expected


async def test_signed_body_and_signed_query(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        await fx.generate(50)
        r = await call(client, fx, "POST", "user_transactions/", body="limit=5&sort=asc")
        assert r.status_code == 200, r.text
        assert len(r.json()) == 5
        r = await call(client, fx, "GET", "trade_history/btcusd-perp/", query="limit=3&sort=asc")
        assert r.status_code == 200, r.text
        assert len(r.json()) <= 3


async def test_markets_is_public(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        r = await client.get(fx.api_url + "markets/")
        assert r.status_code == 200
        assert {row["market_symbol"] for row in r.json()} == set(fx.markets)


async def expect_code(r: httpx.Response, code: str, status: int = 403) -> None:
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text


async def test_auth_errors(fx: FakeExchange, client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(10):
        url = fx.api_url + "websockets_token/"
        good = signed_headers("POST", url, key=fx.api_key, secret=fx.api_secret, timestamp_ms=ts_ms(clock))
        # unknown key
        h = signed_headers("POST", url, key="nokey", secret=fx.api_secret, timestamp_ms=ts_ms(clock))
        await expect_code(await client.post(url, headers=h), "API0001")
        # bad signature
        h = dict(good, **{"X-Auth-Signature": "0" * 64})
        await expect_code(await client.post(url, headers=h), "API0005")
        # wrong secret is a bad signature too
        h = signed_headers("POST", url, key=fx.api_key, secret="wrong", timestamp_ms=ts_ms(clock))
        await expect_code(await client.post(url, headers=h), "API0005")
        # timestamp outside the 150 s window
        h = signed_headers("POST", url, key=fx.api_key, secret=fx.api_secret, timestamp_ms=ts_ms(clock) - 151_000)
        await expect_code(await client.post(url, headers=h), "API0017")
        # Content-Type with an empty body
        h = dict(good, **{"Content-Type": FORM})
        await expect_code(await client.post(url, headers=h), "API0020")
        # missing headers
        for name, code in (
            ("X-Auth", "API0012"),
            ("X-Auth-Signature", "API0013"),
            ("X-Auth-Nonce", "API0014"),
            ("X-Auth-Timestamp", "API0015"),
            ("X-Auth-Version", "API0016"),
        ):
            h = {k: v for k, v in good.items() if k != name}
            await expect_code(await client.post(url, headers=h), code)
        # the good request passes once, then its nonce is spent
        assert (await client.post(url, headers=good)).status_code == 200
        await expect_code(await client.post(url, headers=good), "API0004")


async def test_query_must_be_signed_with_question_mark(
    fx: FakeExchange, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    with trio.fail_after(10):
        url = fx.api_url + "trade_history/?limit=2"
        h = signed_headers("GET", fx.api_url + "trade_history/", key=fx.api_key, secret=fx.api_secret)
        await expect_code(await client.get(url, headers=h), "API0005")


async def test_rate_limit_fault(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        fx.reject_next_requests(1)
        r = await call(client, fx, "POST", "account_balances/")
        assert r.status_code == 429 and r.json()["response_code"] == "400.002"
        assert (await call(client, fx, "POST", "account_balances/")).status_code == 200


async def test_user_transactions_pagination(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        await fx.generate(400)
        total = len(fx.model.state.transactions)
        assert total > 150
        r = await call(client, fx, "POST", "user_transactions/", body="limit=1000&sort=asc")
        rows = r.json()
        ids = [row["id"] for row in rows]
        assert ids == sorted(ids) and len(ids) == min(total, 1000)
        assert any(i > 2**53 for i in ids)  # big ids survive JSON exactly
        # default: desc, limit 100
        r = await call(client, fx, "POST", "user_transactions/")
        assert [row["id"] for row in r.json()] == sorted(ids, reverse=True)[:100]
        # since_id is inclusive and forces limit 1000
        mid = ids[40]
        r = await call(client, fx, "POST", "user_transactions/", body=f"since_id={mid}&limit=5&sort=asc")
        page = [row["id"] for row in r.json()]
        assert page[0] == mid and len(page) == min(1000, len(ids) - 40)
        # offset
        r = await call(client, fx, "POST", "user_transactions/", body="offset=10&limit=5&sort=asc")
        assert [row["id"] for row in r.json()] == ids[10:15]
        # limit above 1000 is refused
        r = await call(client, fx, "POST", "user_transactions/", body="limit=1001")
        assert r.status_code == 400
        # per market: dynamic currency keys and the pair-rate key
        r = await call(client, fx, "POST", "user_transactions/btcusd/", body="limit=1000")
        fills = [row for row in r.json() if row["type"] == "2"]
        assert fills and all("btc_usd" in row and "btc" in row and "usd" in row for row in fills)
        fill_ids = {str(f["trade_id"]) for f in fx.truth()["fills"] if f["market"] == "btcusd"}
        assert {str(row["id"]) for row in fills} == fill_ids  # REST id == websocket trade id


async def test_account_order_data_cursor(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        await fx.generate(200)
        r = await call(client, fx, "POST", "account_order_data/", body="market=BTC%2FUSD")
        assert r.status_code == 400  # order_source required
        r = await call(client, fx, "POST", "account_order_data/", body="order_source=orderbook&market=BTC%2FUSD")
        events = r.json()
        eids = [e["event_id"] for e in events]
        assert eids == sorted(eids) and len(set(eids)) == len(eids) and len(eids) > 10
        a, b = eids[3], eids[9]
        body = f"order_source=orderbook&market=BTC%2FUSD&since_id={a}&until_id={b}"
        r = await call(client, fx, "POST", "account_order_data/", body=body)
        assert [e["event_id"] for e in r.json()] == eids[3:9]  # since inclusive, until exclusive
        body = f"order_source=orderbook&market=BTC%2FUSD&since_id={eids[-1]}&until_id={eids[-1]}"
        r = await call(client, fx, "POST", "account_order_data/", body=body)
        assert r.status_code == 404 and r.json()["response_code"] == "404.008"
        r = await call(client, fx, "POST", "account_order_data/", body="order_source=orderbook&since_id=nope")
        assert r.status_code == 400


async def test_open_orders_cached_for_10s(fx: FakeExchange, client: httpx.AsyncClient, clock: ManualClock) -> None:
    with trio.fail_after(20):
        await fx.generate(20)
        first = (await call(client, fx, "POST", "open_orders/all/", timestamp_ms=ts_ms(clock))).json()
        before = {o["order_id"] for o in fx.truth()["orders"] if o["status"] == "open"}
        assert {row["id"] for row in first} == before
        await fx.generate(40)
        clock.now += 9.9
        again = (await call(client, fx, "POST", "open_orders/all/", timestamp_ms=ts_ms(clock))).json()
        assert again == first
        clock.now += 0.2
        fresh = (await call(client, fx, "POST", "open_orders/all/", timestamp_ms=ts_ms(clock))).json()
        assert {row["id"] for row in fresh} == {o["order_id"] for o in fx.truth()["orders"] if o["status"] == "open"}


async def test_order_status_and_balances(fx: FakeExchange, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        await fx.generate(100)
        truth = fx.truth()
        rest_status = {"open": "Open", "filled": "Finished", "cancelled": "Canceled", "replaced": "Canceled"}
        for o in truth["orders"][:20]:
            r = await call(client, fx, "POST", "order_status/", body=f"id={o['order_id']}")
            body = r.json()
            assert body["status"] == rest_status[o["status"]]
            assert len(body["transactions"]) == sum(1 for f in truth["fills"] if f["order_id"] == o["order_id"])
        r = await call(client, fx, "POST", "order_status/", body="id=1")
        assert r.status_code == 404 and r.json()["response_code"] == "404.002"
        r = await call(client, fx, "POST", "account_balances/")
        assert {row["currency"] for row in r.json()} == {"BTC", "USD", "ETH"}
        r = await call(client, fx, "POST", "account_balances/btc/")
        assert r.json()["currency"] == "BTC"
        r = await call(client, fx, "GET", "position_settlement_transactions/")
        assert len(r.json()) == sum(1 for s in truth["settlements"] if s["kind"] == "settlement")
        json.dumps(truth)  # JSON-serialisable
