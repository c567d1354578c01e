"""Ledger capture against a scripted exchange: the resumable ledger walk, the consistent cut of balance snapshots,
withdrawal requests and crypto transactions, sub-accounts by header, failure domains and coalesced triggers.

Rules: no network (``httpx.MockTransport``), ``autojump_clock`` for everything timed, no sleep used as
synchronisation (waits are on the capture's rounds), an absolute timeout on each test.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
from test_backfill_politeness import MemorySink, client_for

from tracker.bitstamp import ledger_entries as le
from tracker.domain import tracker_events as te
from tracker.domain.log import NewEntry
from tracker.runtime.ledger_capture import LedgerCapture
from tracker.runtime.ledger_walk import SNAPSHOT_TRIES
from tracker.runtime.polite_api import PoliteApi

pytestmark = pytest.mark.timeout(30)
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


class LedgerSink(MemorySink):
    async def ledger_cursor(self, account: str, channel: str, event: str) -> int | None:
        ids = [int(e.dedup_key.rsplit(":", 1)[1]) for e in self.entries if e.channel == channel and e.event == event]
        return max(ids, default=None)

    async def ws_activity_after(self, account: str, after: int, prefixes: Any) -> tuple[int, bool]:
        return after, False


def row(i: int, kind: int = 2) -> dict[str, Any]:
    if kind == 2:
        return {"id": i, "datetime": "2026-12-06 10:00:00", "type": "2", "btc": "0.1", "usd": "-10", "btc_usd": "100",
                "fee": "0.01", "order_id": 5}  # fmt: skip
    return {"id": i, "datetime": "2026-12-06 10:00:00", "type": str(kind), "btc": "1.0", "usd": "0", "fee": "0"}


class Exchange:
    """Per trade account: ledger rows (ascending id), withdrawal requests; crypto rows for the main account."""

    def __init__(self, rows: int = 0) -> None:
        self.ledger: dict[str, list[dict[str, Any]]] = {"0": [row(i) for i in range(1, rows + 1)]}
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.deposits: list[dict[str, Any]] = []
        self.unknown: set[str] = set()  # trade accounts answered with 404.004
        self.refuse_crypto = False
        self.on_balances: Callable[[str], None] | None = None
        self.calls: Counter[tuple[str, str]] = Counter()  # (endpoint, trade account)
        self.next_id = rows + 1

    def add(self, tai: str = "0", kind: int = 2) -> None:
        self.ledger.setdefault(tai, []).append(row(self.next_id, kind))
        self.next_id += 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.split("/api/v2/", 1)[1]
        tai = request.headers.get("X-Auth-Subaccount-Id", "0")
        params = dict(parse_qsl(request.content.decode()))
        self.calls[(path, tai)] += 1
        if tai in self.unknown:
            reason = "Trade account not found for provided API key."
            return httpx.Response(404, json={"status": "error", "code": "404.004", "reason": reason})
        if path == "user_transactions/":
            assert params["sort"] == "asc"
            since, limit = int(params["since_id"]), int(params["limit"])
            return httpx.Response(200, json=[r for r in self.ledger.get(tai, []) if r["id"] >= since][:limit])
        if path == "account_balances/":
            if self.on_balances is not None:
                self.on_balances(tai)
            total = sum((Decimal(r["btc"]) for r in self.ledger.get(tai, [])), Decimal(0))
            body = [{"currency": "BTC", "total": str(total), "available": str(total), "reserved": "0"}]
            return httpx.Response(200, json=body)
        if path == "withdrawal-requests/":
            if "limit" not in params or "offset" not in params:
                reason = "Both limit and offset must be present."
                return httpx.Response(400, json={"status": "error", "code": "400.001", "reason": reason})
            offset, limit = int(params["offset"]), int(params["limit"])
            return httpx.Response(200, json=self.requests.get(tai, [])[offset : offset + limit])
        if path == "crypto-transactions/":
            assert tai == "0"
            if self.refuse_crypto:
                return httpx.Response(403, json={"status": "error", "code": "API0003", "reason": "No permission."})
            offset, limit = int(params["offset"]), int(params["limit"])
            body = {"deposits": self.deposits[offset : offset + limit], "withdrawals": []}
            return httpx.Response(200, content=json.dumps(body).encode())
        raise AssertionError(f"unexpected {request.url}")


def capture_for(client: Any, sink: LedgerSink, *, subaccounts: tuple[str, ...] = (), page: int = 1000) -> LedgerCapture:
    api = PoliteApi(client, max_attempts=1, rng=random.Random(3))
    ticks = itertools.count()
    return LedgerCapture(
        api,
        sink,  # type: ignore[arg-type]
        account="acc",
        trade_accounts=("0", *subaccounts),
        interval_s=5.0,
        wall=lambda: NOW + timedelta(microseconds=next(ticks)),  # every snapshot its own time (and dedup key)
        rng=random.Random(4),
        page_limit=page,
    )


def of(sink: MemorySink, event: str, channel: str | None = None) -> list[NewEntry]:
    return [e for e in sink.entries if e.event == event and (channel is None or e.channel == channel)]


async def test_full_walk_pages_and_resume_from_the_log(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=2500)
    sink = LedgerSink()
    async with client_for(exchange) as client:
        walker = capture_for(client, sink).walkers["0"]
        result = await walker.walk()
        assert (result.fresh, result.appended) == (2500, 2500)
        # Inclusive since_id: 0 → 1..1000, 1000 → 1000..1999 (one repeat), 1999 → 1999..2500 (short page: done).
        assert exchange.calls[("user_transactions/", "0")] == 3
        ids = [int(e.dedup_key.rsplit(":", 1)[1]) for e in of(sink, le.REST_LEDGER_ROW)]
        assert ids == list(range(1, 2501))
        assert all(e.channel == "user_transactions/" and e.market is None for e in of(sink, le.REST_LEDGER_ROW))
        # A new walker (a restart) starts at the highest id in the log: one request, nothing new.
        exchange.calls.clear()
        again = capture_for(client, sink).walkers["0"]
        assert (await again.walk()).appended == 0
        assert again.cursor == 2500
        assert exchange.calls[("user_transactions/", "0")] == 1
        exchange.add(kind=0)
        assert (await again.walk()).transfers


async def test_snapshot_after_a_raced_movement_is_taken_again(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=3)
    sink = LedgerSink()
    moves = [1]

    def move_once(tai: str) -> None:
        if moves:
            moves.pop()
            exchange.add(tai)

    exchange.on_balances = move_once
    async with client_for(exchange) as client:
        capture = capture_for(client, sink)
        assert await capture.walkers["0"].snapshot()
    [snapshot] = of(sink, le.REST_BALANCES)
    assert sink.entries[-1] is snapshot  # appended after every row it accounts for, and nothing of it after
    assert [e.dedup_key for e in of(sink, le.REST_LEDGER_ROW)][-1] == "rest:acc:ledger:0:4"
    assert json.loads(snapshot.payload)[0]["total"] == "0.4"  # it counted the raced row: the second answer
    assert (capture.stats.snapshots, capture.stats.races) == (1, 0)
    # walk, balances, walk (a row: raced), balances, walk (nothing: the cut holds)
    assert exchange.calls[("user_transactions/", "0")] == 3
    assert exchange.calls[("account_balances/", "0")] == 2


async def test_snapshot_given_up_after_three_races(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=1)
    exchange.on_balances = exchange.add
    sink = LedgerSink()
    async with client_for(exchange) as client:
        capture = capture_for(client, sink)
        assert not await capture.walkers["0"].snapshot()
    assert of(sink, le.REST_BALANCES) == []
    assert exchange.calls[("account_balances/", "0")] == SNAPSHOT_TRIES
    assert (capture.stats.snapshots, capture.stats.races) == (0, 1)


async def test_sub_accounts_by_header_and_an_unknown_one_alone(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=2)
    exchange.ledger["7"] = [row(100, 14)]
    exchange.requests["7"] = [{"id": 1, "status": 0, "amount": "0.1", "currency": "BTC", "datetime": "2026-12-06"}]
    exchange.unknown.add("99")
    sink = LedgerSink()
    async with client_for(exchange) as client:
        capture = capture_for(client, sink, subaccounts=("7", "99"))
        for walker in capture.walkers.values():
            await capture.round(walker, start=True)
        assert not capture.available(capture.walkers["99"])
        calls_99 = sum(n for (_, tai), n in exchange.calls.items() if tai == "99")
        await capture.round(capture.walkers["99"])
        assert sum(n for (_, tai), n in exchange.calls.items() if tai == "99") == calls_99  # skipped until restart
    sub_rows = of(sink, le.REST_LEDGER_ROW, "subaccount/7/user_transactions/")
    assert [e.dedup_key for e in sub_rows] == ["rest:acc:ledger:7:100"]
    assert len(of(sink, le.REST_LEDGER_ROW, "user_transactions/")) == 2
    assert len(of(sink, le.REST_BALANCES, "subaccount/7/account_balances/")) == 1
    assert len(of(sink, le.REST_BALANCES, "account_balances/")) == 1
    assert [e.channel for e in of(sink, le.REST_WITHDRAWAL_REQUEST)] == ["subaccount/7/withdrawal-requests/"]
    assert ("crypto-transactions/", "7") not in exchange.calls  # main account only
    [unavailable] = [json.loads(e.payload)["data"] for e in of(sink, te.ENDPOINT_UNAVAILABLE)]
    assert (unavailable["walk"], unavailable["code"]) == ("trade_account:99", "404.004")


async def test_crypto_refused_is_unavailable_and_skipped(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=1)
    exchange.refuse_crypto = True
    sink = LedgerSink()
    async with client_for(exchange) as client:
        capture = capture_for(client, sink)
        main = capture.walkers["0"]
        await capture.round(main, start=True)
        exchange.add(kind=1)  # a withdrawal row would ask crypto-transactions/ again: not while unavailable
        await capture.round(main)
        summary = await capture.reconcile()
    assert exchange.calls[("crypto-transactions/", "0")] == 1
    [unavailable] = [json.loads(e.payload)["data"] for e in of(sink, te.ENDPOINT_UNAVAILABLE)]
    assert (unavailable["walk"], unavailable["code"]) == ("crypto_transactions:0", "API0003")
    assert summary["snapshots"] == ["0"]
    assert "crypto_transactions:0" in summary["unavailable"]
    assert len(of(sink, le.REST_BALANCES)) == 2  # at start and at the reconciliation


async def test_withdrawal_requests_paged_and_each_status_a_fact(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=1)
    requests = [{"id": i, "status": 0, "amount": "1", "currency": "BTC", "datetime": "2026-12-06"} for i in range(25)]
    exchange.requests["0"] = requests
    exchange.deposits = [{"currency": "BTC", "amount": 0.5, "txid": f"h{i}", "datetime": 1764928800} for i in range(3)]
    sink = LedgerSink()
    async with client_for(exchange) as client:
        capture = capture_for(client, sink, page=10)
        main = capture.walkers["0"]
        await capture.round(main, start=True)
        assert len(of(sink, le.REST_WITHDRAWAL_REQUEST)) == 25
        assert exchange.calls[("withdrawal-requests/", "0")] == 3  # offsets 0, 10, 20
        assert len(of(sink, le.REST_CRYPTO_TRANSACTION, "crypto-transactions/deposits")) == 3
        requests[0] = {**requests[0], "status": 2}  # finished: a new fact on the next round's first page
        await capture.round(main)
        assert exchange.calls[("withdrawal-requests/", "0")] == 4
    statuses = [json.loads(e.payload)["status"] for e in of(sink, le.REST_WITHDRAWAL_REQUEST) if '"id":0' in e.payload]
    assert statuses == [0, 2]


async def test_followers_run_on_triggers_coalesced_and_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    exchange = Exchange(rows=1)
    sink = LedgerSink()
    stop = trio.Event()
    backfills = [trio.Event()]
    async with client_for(exchange) as client:
        capture = capture_for(client, sink)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: capture.run(stop=stop, backfill_completed=lambda: backfills[-1],
                                                                task_status=task_status))  # fmt: skip
            await capture.wait_rounds(1)  # the start round
            assert len(of(sink, le.REST_BALANCES)) == 1
            started = trio.current_time()
            exchange.add()
            done, backfills[0] = backfills[0], trio.Event()
            done.set()  # a backfill completed: a round at once, not after the interval
            await capture.wait_rounds(2)
            assert trio.current_time() - started < 1.0
            assert len(of(sink, le.REST_LEDGER_ROW)) == 2
            for _ in range(5):
                capture.poke()  # coalesced: one more round
            await capture.wait_rounds(3)
            assert trio.current_time() - started < 1.0
            before = trio.current_time()
            await capture.wait_rounds(4)  # then the interval
            assert trio.current_time() - before == pytest.approx(5.0, abs=0.1)
            stop.set()
    assert len(of(sink, le.REST_BALANCES)) == 1  # a snapshot at start only (and at reconciliations)
