"""Failure domains of backfill: one walk's failure is recorded and judged alone, never the end of the run.

- an endpoint the account may not use (API5506 from the derivatives endpoints) is marked unavailable until restart and
  skipped by later backfills, the other walks complete;
- a transient failure (API5502, "try again later") is a ``walk_failed`` entry and that walk alone is retried when due;
- chain breaks walk only their market and order source; a chain that breaks event after event while the connection
  stays up is learned as market-wide (its breaks stop triggering walks); one that breaks now and then does not.

Rules: no network (``httpx.MockTransport``), ``autojump_clock`` for everything timed, an absolute timeout on each test.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio
from test_backfill_politeness import MemorySink, client_for, tx_row

from tracker.domain import tracker_events as te
from tracker.domain.gaps import MARKET_WIDE_AFTER, ChainBreak, GapWatch, LifecycleSignal, OrderChainSignal
from tracker.exchange.errors import Disposition
from tracker.runtime.backfill import Backfiller, break_walks
from tracker.runtime.polite_api import PoliteApi

pytestmark = pytest.mark.timeout(30)
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def _data(entry: Any) -> dict[str, Any]:
    return json.loads(entry.payload)["data"]  # type: ignore[no-any-return]


class Exchange:
    """A scripted exchange: a spot-only account (derivatives refused with API5506) whose user_transactions answer
    API5502 the first ``flaky`` times."""

    def __init__(self, flaky: int) -> None:
        self.flaky = flaky
        self.calls: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.split("/api/v2/", 1)[1].split("/", 1)[0]
        self.calls[endpoint] += 1
        if endpoint in ("trade_history", "position_settlement_transactions"):
            return httpx.Response(
                400, json={"code": "API5506", "message": "Trade account does not support derivatives."}
            )
        if endpoint == "account_order_data":
            return httpx.Response(404, json={"status": "error", "code": "404.008", "reason": "No events found."})
        if endpoint == "user_transactions":
            if self.flaky > 0:
                self.flaky -= 1
                return httpx.Response(
                    400, json={"code": "API5502", "message": "Something went wrong, try again later."}
                )
            return httpx.Response(200, json=[tx_row(1), tx_row(2)])
        raise AssertionError(f"unexpected {request.url}")


def backfiller_for(client: Any, sink: MemorySink) -> Backfiller:
    # One try per call (max_attempts=1): the walk's own retry (WalkHealth) is what is under test.
    api = PoliteApi(client, max_attempts=1, rng=random.Random(3))
    return Backfiller(
        api,
        sink,  # type: ignore[arg-type]
        account="acc",
        markets=["btcusd", "btcusd-perp"],
        wall=lambda: NOW,
        rng=random.Random(4),
    )


async def test_an_unavailable_endpoint_is_given_up_and_a_failing_walk_retried_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = Exchange(flaky=1)
    sink = MemorySink()
    async with client_for(exchange) as client:
        backfiller = backfiller_for(client, sink)
        first = await backfiller.run("start")
        # Everything was tried; nothing raised.
        assert set(first.errors) == {
            "trade_history:btcusd-perp",
            "position_settlement_transactions",
            "user_transactions:btcusd",
        }
        assert "user_transactions:btcusd-perp" not in first.errors  # the other market's walk went on
        unavailable = [_data(e) for e in sink.entries if e.event == te.ENDPOINT_UNAVAILABLE]
        assert {d["walk"] for d in unavailable} == {"trade_history:btcusd-perp", "position_settlement_transactions"}
        assert {d["code"] for d in unavailable} == {"API5506"}
        [failed] = [_data(e) for e in sink.entries if e.event == te.WALK_FAILED]
        assert failed["walk"] == "user_transactions:btcusd"
        assert (failed["code"], failed["disposition"]) == ("API5502", str(Disposition.RETRY))
        assert failed["retry_in_s"] > 0

        # The failing walk, alone, when its retry is due.
        assert backfiller.health.due_now(trio.current_time()) == []
        await trio.sleep(failed["retry_in_s"] + 0.001)  # (rounded to ms in the entry)
        due = backfiller.health.due_now(trio.current_time())
        assert due == ["user_transactions:btcusd"]
        exchange.calls.clear()
        retry = await backfiller.run("retry", only=due)
        assert retry.errors == {}
        assert exchange.calls == {"user_transactions": 1}
        assert backfiller.health.due == {}

        # A later full backfill skips the unavailable walks (until restart) and asks the rest.
        exchange.calls.clear()
        later = await backfiller.run("subscribed")
        assert set(later.skipped) == {"trade_history:btcusd-perp", "position_settlement_transactions"}
        assert exchange.calls["trade_history"] == exchange.calls["position_settlement_transactions"] == 0
        assert exchange.calls["user_transactions"] == 2
    completed = [_data(e) for e in sink.entries if e.event == te.BACKFILL_COMPLETED]
    assert completed[-1]["skipped"].keys() == later.skipped.keys()


def test_chain_breaks_walk_only_their_market_both_its_sources_and_its_fills() -> None:
    breaks = [
        ChainBreak("acc", "btcusd", "orderbook", "e1", "e0", "e2"),
        ChainBreak("acc", "ethusd", "", "e1", "e0", "e2"),  # source unknown
        ChainBreak("acc", "btcusd-perp", "stop_order", "e1", "e0", "e2"),
    ]
    assert break_walks(breaks) == {
        "account_order_data:btcusd:orderbook",
        "account_order_data:btcusd:stop_order",  # the chain may run over both sources: either may have missed events
        "user_transactions:btcusd",
        "account_order_data:ethusd:orderbook",
        "account_order_data:ethusd:stop_order",
        "user_transactions:ethusd",
        "account_order_data:btcusd-perp:orderbook",
        "account_order_data:btcusd-perp:stop_order",
        "trade_history:btcusd-perp",  # a perp fill is learned with its position first
        "position_settlement_transactions",  # my_settlements frames carry no chain: withheld with the orders'
        "user_transactions:btcusd-perp",
    }


def _order(seq: int, pre: str | None, market: str = "btcusd") -> OrderChainSignal:
    return OrderChainSignal("acc", market, "orderbook", f"e{seq}", pre, seq)


def test_breaks_while_the_connection_stays_up_teach_a_market_wide_chain() -> None:
    watch = GapWatch("acc")
    at = NOW
    watch.feed(LifecycleSignal(te.SUBSCRIBED, "c1", at, ("private-my_orders_btcusd-acc",)))
    watch.feed(_order(1, None))
    # Each event names an event this account never saw (other users' events in between): a break each time.
    for seq in range(2, 2 + MARKET_WIDE_AFTER + 3):
        watch.feed(_order(seq, f"other-{seq}"))
    _, breaks, _ = watch.take()
    assert len(breaks) == MARKET_WIDE_AFTER  # reported until learned, then not any more
    assert watch.take_learned() == ["btcusd"] and watch.take_learned() == []
    assert watch.market_wide == {"btcusd"}


def test_breaks_of_frames_withheld_now_and_then_never_teach_a_market_wide_chain() -> None:
    """Found by the soak (a fault every ~3 s): frames withheld with the connection up, pause after pause, break a
    per-account chain once each and then it links again. Counted in total, three such breaks taught the chain to be
    market-wide and the breaks of later pauses were no longer walked (their fills missing until the next full walk)."""
    watch = GapWatch("acc")
    watch.feed(LifecycleSignal(te.SUBSCRIBED, "c1", NOW, ("private-my_orders_btcusd-acc",)))
    watch.feed(_order(1, None))
    seq = 1
    for _ in range(MARKET_WIDE_AFTER + 3):
        seq += 2  # one event withheld: the next names it
        watch.feed(_order(seq, f"e{seq - 1}"))
        for _ in range(5):  # then the stream links again
            seq += 1
            watch.feed(_order(seq, f"e{seq - 1}"))
    _, breaks, _ = watch.take()
    assert len(breaks) == MARKET_WIDE_AFTER + 3  # every pause's break reported (and walked)
    assert watch.market_wide == set() and watch.take_learned() == []


def test_frames_of_two_connections_interleaved_are_no_breaks_and_teach_nothing() -> None:
    """Make-before-break: the old connection drains its queue (older events) while the new one delivers newer ones,
    so the log holds e.g. e5 (new), e3 (old), e6 (new), e4 (old). Each names an event that was logged, only not the
    last: nothing is missing. Judged against the last event alone these were quiet breaks in a row and the market was
    learned market-wide (found by the soak with reconciliation off: the breaks of later losses were then ignored and
    their fills lost until the next full walk)."""
    watch = GapWatch("acc")
    watch.feed(LifecycleSignal(te.SUBSCRIBED, "old", NOW, ("private-my_orders_btcusd-acc",)))
    for seq in range(1, 3):
        watch.feed(_order(seq, f"e{seq - 1}" if seq > 1 else None))
    watch.feed(LifecycleSignal(te.RECONNECT_REQUESTED, "old", NOW))
    watch.feed(LifecycleSignal(te.SUBSCRIBED, "new", NOW, ("private-my_orders_btcusd-acc",)))
    watch.take()
    # new: e5 (its e4 not logged yet: a real break, once); then old and new alternate, every pre already logged
    for seq, pre in [(5, "e4"), (3, "e2"), (6, "e5"), (4, "e3"), (7, "e6"), (8, "e7"), (9, "e8")]:
        watch.feed(_order(seq, pre))
    _, breaks, _ = watch.take()
    assert [b.event_id for b in breaks] == ["e5"]
    assert watch.market_wide == set() and watch.take_learned() == []


def test_breaks_across_a_reconnect_are_not_evidence_of_a_market_wide_chain() -> None:
    watch = GapWatch("acc")
    at = NOW
    seq = 1
    watch.feed(_order(seq, None))
    for round_ in range(MARKET_WIDE_AFTER + 2):
        # The connection drops and comes back between two events each time: a real loss may explain the break.
        watch.feed(LifecycleSignal(te.CLOSED, f"c{round_}", at, reason="dropped"))
        watch.feed(LifecycleSignal(te.SUBSCRIBED, f"c{round_ + 1}", at + timedelta(seconds=1), ("ch",)))
        seq += 1
        watch.feed(_order(seq, f"missed-{seq}"))
    _, breaks, _ = watch.take()
    assert len(breaks) == MARKET_WIDE_AFTER + 2
    assert watch.market_wide == set()
