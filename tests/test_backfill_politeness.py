"""Politeness: the rate limiter's two limits, back-off on 400.002/400.067/429/5xx, and walks that always advance
(a server repeating a page ends the walk instead of looping).

Rules: no network (``httpx.MockTransport``), ``autojump_clock`` for everything timed, an absolute timeout on each test.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from tracker.domain.log import NewEntry, QuarantineItem
from tracker.exchange.errors import RateLimited, ServerError
from tracker.exchange.rest import BitstampClient
from tracker.runtime.backfill import Backfiller
from tracker.runtime.polite_api import PoliteApi, RateLimiter

pytestmark = pytest.mark.timeout(20)


async def test_per_second_limit(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(per_second=400, per_window=10_000)
    start = trio.current_time()
    stamps = []
    for _ in range(1200):
        await limiter.acquire()
        stamps.append(trio.current_time() - start)
    # A burst of 400, then 400 per second.
    assert stamps[399] == 0
    assert stamps[-1] == pytest.approx((1200 - 400) / 400, rel=1e-3)
    for i in range(400, len(stamps)):
        assert stamps[i] - stamps[i - 400] >= 1.0 - 1e-9


async def test_sliding_window_limit(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(per_second=400, per_window=50, window_s=10)
    start = trio.current_time()
    stamps = []
    for _ in range(160):
        await limiter.acquire()
        stamps.append(trio.current_time() - start)
    for i in range(50, len(stamps)):
        assert stamps[i] - stamps[i - 50] >= 10 - 1e-9, "never more than 50 in any 10 s"
    assert stamps[-1] == pytest.approx(30, abs=0.1)


def client_for(handler: Any) -> BitstampClient:
    return BitstampClient(
        "http://127.0.0.1:1/api/v2/",
        "test-key-not-a-word",
        "test-secret-not-a-word",
        transport=httpx.MockTransport(handler),
        verify_response=False,
    )


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, {"status": "error", "reason": "slow down"}, RateLimited),
        (400, {"status": "error", "code": "400.002", "reason": "rate"}, RateLimited),
        (400, {"status": "error", "code": "400.067", "reason": "rate"}, RateLimited),
        (503, {"status": "error", "reason": "busy"}, ServerError),
        (200, {"status": "error", "code": "500.001", "reason": "internal"}, ServerError),
    ],
)
async def test_back_off_and_retry(
    status: int, body: dict[str, Any], error: type[Exception], autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        if len(calls) <= 3:
            return httpx.Response(status, json=body)
        return httpx.Response(200, json=[])

    async with client_for(handler) as client:
        api = PoliteApi(client, backoff_base=0.5, backoff_cap=4.0, rng=random.Random(1))
        assert await api.call("user_transactions", client.user_transactions) == []
        assert api.stats.requests["user_transactions"] == 4
        assert api.stats.retries == 3
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert all(g >= 0.25 for g in gaps) and gaps[2] > gaps[0], gaps  # growing, jittered delays

        calls.clear()
        api = PoliteApi(client, max_attempts=2, rng=random.Random(1))
        with pytest.raises(error):
            await api.call("user_transactions", client.user_transactions)
        assert len(calls) == 2


async def test_retry_after_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        if len(calls) == 1:
            return httpx.Response(429, json={"status": "error"}, headers={"Retry-After": "7"})
        return httpx.Response(200, json=[])

    async with client_for(handler) as client:
        await PoliteApi(client).call("user_transactions", client.user_transactions)
    assert calls[1] - calls[0] == pytest.approx(7)


class MemorySink:
    def __init__(self) -> None:
        self.entries: list[NewEntry] = []
        self.keys: set[str] = set()

    async def append(self, items: list[NewEntry | QuarantineItem]) -> tuple[int, int]:
        new = 0
        for item in items:
            if isinstance(item, NewEntry) and item.dedup_key not in self.keys:
                self.keys.add(item.dedup_key)
                self.entries.append(item)
                new += 1
        return new, len(items) - new

    async def entries_about(self, account: str, trade_ids: list[str], event_ids: list[str]) -> list[Any]:
        return []  # nothing logged from the websocket here: every REST row is new

    async def unclosed_gaps(self, account: str) -> list[str]:
        data = [(e.event, json.loads(e.payload)["data"]) for e in self.entries if e.source == "tracker"]
        closed = {g for event, d in data if event == "backfill_completed" for g in d["gap_ids"]}
        return [d["gap_id"] for event, d in data if event == "gap_detected" and d["gap_id"] not in closed]

    async def latest(self, account: str, channel: str, event: str) -> dict[str, Any] | None:
        for entry in reversed(self.entries):
            if entry.channel == channel and entry.event == event:
                return json.loads(entry.payload)["data"]  # type: ignore[no-any-return]
        return None


def tx_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "datetime": "2026-11-29 12:00:00",
        "type": "2",
        "fee": "0.01",
        "order_id": 5,
        "btc": "0.1",
        "usd": "-10",
        "btc_usd": "100",
    }


@pytest.mark.parametrize("repeat", [False, True], ids=["honest", "repeats_pages"])
async def test_user_transactions_walk_always_advances(repeat: bool, autojump_clock: trio.testing.MockClock) -> None:
    """An honest server: 2,500 rows in pages of 1,000 (inclusive since_id) → every row once, 3 requests. A server that
    ignores since_id and repeats its first page: the walk ends after the repeated page (2 requests), no endless loop.
    """
    server = [tx_row(i) for i in range(1, 2501)]
    seen_params: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = dict(httpx.QueryParams(request.content.decode()))
        if path.endswith("account_order_data/"):
            return httpx.Response(404, json={"status": "error", "code": "404.008", "reason": "No events found."})
        assert path.endswith("user_transactions/btcusd/"), path
        seen_params.append(params)
        since = int(params.get("since_id", "0"))
        rows = server[:1000] if repeat else [r for r in server if r["id"] >= since][:1000]
        return httpx.Response(200, json=rows)

    async with client_for(handler) as client:
        sink = MemorySink()
        backfiller = Backfiller(
            PoliteApi(client),
            sink,  # type: ignore[arg-type]
            account="acc",
            markets=["btcusd"],
            wall=lambda: datetime(2026, 11, 29, 12, tzinfo=UTC),
        )
        report = await backfiller.run("test")
        rows = [e for e in sink.entries if e.event == "rest_user_transaction"]
        if repeat:
            assert len(seen_params) == 2
            assert [e.trade_id for e in rows] == [str(i) for i in range(1, 1001)]
        else:
            assert len(seen_params) == 3
            assert [int(p["since_id"]) for p in seen_params] == [0, 1000, 1999]
            assert [e.trade_id for e in rows] == [str(i) for i in range(1, 2501)]
            assert report.cursors.user_transactions == {"btcusd": 2500}
        assert Counter(p["sort"] for p in seen_params) == {"asc": len(seen_params)}
        # The next backfill starts where this one stopped (read back from its backfill_completed entry).
        seen_params.clear()
        again = Backfiller(PoliteApi(client), sink, account="acc", markets=["btcusd"])  # type: ignore[arg-type]
        await again.run("next")
        assert int(seen_params[0]["since_id"]) == (1000 if repeat else 2500)
        assert report.requests["account_order_data"] == 2


async def test_concurrent_callers_share_the_limits(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(per_second=10, per_window=25, window_s=5)
    stamps: list[float] = []

    async def caller() -> None:
        for _ in range(20):
            await limiter.acquire()
            stamps.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(caller)
    stamps.sort()
    assert len(stamps) == 80
    for i in range(10, len(stamps)):
        assert stamps[i] - stamps[i - 10] >= 1 - 1e-9
    for i in range(25, len(stamps)):
        assert stamps[i] - stamps[i - 25] >= 5 - 1e-9


async def test_refused_synthetic_first_cursor_falls_back_to_the_default_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked: list[dict[str, str]] = []
    event = {
        "event": "order_created",
        "event_id": "00065b81-0d69-fe98-0000-006902000020",
        "order_source": "orderbook",
        "trade_account_id": 0,
        "data": {"id": 7, "id_str": "7", "order_type": 0, "amount_str": "1", "price_str": "100",
                 "microtimestamp": "1789459694223000", "amount_at_create": "1"},
    }  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(httpx.QueryParams(request.content.decode()))
        if request.url.path.endswith("user_transactions/btcusd/"):
            return httpx.Response(200, json=[])
        asked.append(params)
        if "since_id" in params and params["since_id"].endswith("0000-000000000000"):
            return httpx.Response(400, json={"status": "error", "code": "400.079", "reason": "Invalid since_id."})
        if params["order_source"] == "orderbook" and "since_id" not in params:
            return httpx.Response(200, json=[event])
        return httpx.Response(404, json={"status": "error", "code": "404.008", "reason": "No events found."})

    async with client_for(handler) as client:
        sink = MemorySink()
        backfiller = Backfiller(PoliteApi(client), sink, account="acc", markets=["btcusd"])  # type: ignore[arg-type]
        report = await backfiller.run("first")
    assert [e.event_id for e in sink.entries if e.event == "rest_order_event"] == [event["event_id"]]
    assert report.cursors.order_events == {"btcusd|orderbook": event["event_id"]}
    assert not report.errors
