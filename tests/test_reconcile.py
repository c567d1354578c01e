"""Pure reconciliation diffs: fills and fees, open orders (10 s cache), order states, balances, and the plan
(stable ids: a re-run opens nothing twice; a clean re-check resolves)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tracker.domain.reconcile import (
    Balance,
    Diff,
    ExchangeFill,
    ExchangeOpenOrder,
    ExchangeOrderStatus,
    FillAudit,
    Finding,
    OrderAudit,
    diff_balances,
    diff_fills,
    diff_order_status,
    open_order_candidates,
    plan,
)
from tracker.domain.rows import DiscrepancyRow, FillRow, OrderRow
from tracker.store.projection_reads import id_ranges

T = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def fill(trade_id: str, *, market: str = "btcusd", fee: str = "0.1", amount: str = "1", source: str = "ws") -> FillRow:
    return FillRow(
        "acc", trade_id, "9", market, "buy", D(amount), D("100"), D(fee), T, None, False, source, 1, None, None, None
    )


def ex_fill(trade_id: str, *, fee: str = "0.1", amount: str = "1") -> ExchangeFill:
    return ExchangeFill(trade_id, "btcusd", "buy", D(amount), D("100"), D(fee))


def order(order_id: str, status: str = "open", *, age_s: float = 60, remaining: str = "1") -> OrderRow:
    at = T - timedelta(seconds=age_s)
    return OrderRow(
        "acc", order_id, "btcusd", "buy", D("1"), D(remaining), D(1) - D(remaining), status,  # type: ignore[arg-type]
        D("100"), None, at, at, "orderbook", D(remaining), 1, False, "", 1, 1, None, None, None, None, True,
    )  # fmt: skip


def test_clean_fills_have_no_findings() -> None:
    diff = diff_fills([fill("10"), fill("11")], [ex_fill("10"), ex_fill("11")], market="btcusd", from_id=0)
    assert diff.findings == []
    assert diff.checked == {"fill:10", "fill:11"}


def test_fee_mismatch_missing_and_unknown_fill() -> None:
    diff = diff_fills(
        [fill("10", fee="0.1"), fill("12"), fill("13", amount="2")],
        [ex_fill("10", fee="0.2"), ex_fill("11"), ex_fill("13")],
        market="btcusd",
        from_id=0,
    )
    kinds = {(f.kind, f.entity) for f in diff.findings}
    assert kinds == {
        ("fee_mismatch", "fill:10"),
        ("fill_missing", "fill:11"),
        ("fill_unknown_to_exchange", "fill:12"),
        ("fill_mismatch", "fill:13"),
    }
    assert next(f for f in diff.findings if f.entity == "fill:10").id == "recon:fee_mismatch:fill:10"


def test_fills_outside_the_window_or_market_are_not_judged() -> None:
    diff = diff_fills(
        [fill("5"), fill("20", market="ethusd"), fill("30")], [ex_fill("30")], market="btcusd", from_id=10
    )
    assert diff.findings == []
    assert diff.checked == {"fill:30"}


def test_fills_after_the_walk_are_judged_next_time() -> None:
    diff = diff_fills([fill("10"), fill("11")], [ex_fill("10")], market="btcusd", from_id=0, to_id=10)
    assert diff.findings == []


def test_open_orders_respect_the_cache_window() -> None:
    projected = [
        order("1"),  # open both sides
        order("2"),  # open in projection, gone on the exchange: confirm
        order("3", status="filled"),  # closed in projection, still listed: confirm
        order("4", age_s=3),  # changed 3 s ago: the cached answer cannot judge it
        order("5", status="filled", age_s=3),
    ]
    exchange = [
        ExchangeOpenOrder("1", "btcusd", D("1"), T - timedelta(seconds=60)),
        ExchangeOpenOrder("3", "btcusd", D("1"), T - timedelta(seconds=60)),
        ExchangeOpenOrder("5", "btcusd", D("1"), T - timedelta(seconds=60)),
        ExchangeOpenOrder("6", "btcusd", D("1"), T - timedelta(seconds=60)),  # never seen: a finding
        ExchangeOpenOrder("7", "btcusd", D("1"), T - timedelta(seconds=2)),  # just created: grace
        ExchangeOpenOrder("8", "ethusd", D("1"), T - timedelta(seconds=60)),  # another market
    ]
    diff, confirm = open_order_candidates(projected, exchange, asked_at=T, markets=["btcusd"])
    assert confirm == ["2", "3"]
    assert [(f.kind, f.entity) for f in diff.findings] == [("order_missing", "order:6")]
    assert "order:1" in diff.checked and "order:4" not in diff.checked


def test_order_status_mapping() -> None:
    projected = {o.order_id: o for o in (order("1"), order("2", "filled"), order("3", "replaced"), order("4"))}
    answers = [
        ExchangeOrderStatus("1", "Canceled"),
        ExchangeOrderStatus("2", "Finished"),
        ExchangeOrderStatus("3", "Canceled"),
        ExchangeOrderStatus("4", "Cancel pending"),
        ExchangeOrderStatus("9", "Open"),  # unknown to the projection: not this function's business
    ]
    diff = diff_order_status(projected, answers)
    assert [(f.kind, f.entity) for f in diff.findings] == [("order_status_mismatch", "order:1")]
    assert diff.checked == {"order:1", "order:2", "order:3"}


def test_open_order_remaining_differs() -> None:
    diff = diff_order_status({"1": order("1", remaining="0.5")}, [ExchangeOrderStatus("1", "Open", D("0.4"))])
    assert [f.kind for f in diff.findings] == ["order_remaining_mismatch"]


def test_balances_arithmetic() -> None:
    diff = diff_balances([Balance("USD", D(10), D(7), D(3)), Balance("BTC", D(1), D(1), D("0.1"))])
    assert [f.entity for f in diff.findings] == ["balance:btc"]


def row(finding: Finding, status: str = "open") -> DiscrepancyRow:
    return DiscrepancyRow("acc", finding.id, finding.kind, finding.entity, finding.detail, status, 1, None, None, None)  # type: ignore[arg-type]


def test_plan_is_idempotent_and_resolves_clean_rechecks() -> None:
    fee = Finding("fee_mismatch", "fill:10", "fee differs")
    gone = Finding("fill_unknown_to_exchange", "fill:12", "not on exchange")
    first = plan(Diff([fee, gone], {"fill:10", "fill:12"}), [])
    assert first.open == (fee, gone) and first.resolve == ()
    # Same findings again: nothing new.
    again = plan(Diff([fee, gone], {"fill:10", "fill:12"}), [row(fee), row(gone)])
    assert again.open == () and set(again.still_open) == {fee, gone}
    # fill:10 checked and clean now; fill:12 not checked this time: stays open.
    later = plan(Diff([], {"fill:10"}), [row(fee), row(gone)])
    assert [d.discrepancy_id for d in later.resolve] == [fee.id]
    # A projector-made discrepancy is never resolved by the reconciler.
    other = DiscrepancyRow(
        "acc", "fill_source_mismatch:10:5", "fill_source_mismatch", "fill:10", "", "open", 5, None, None, None
    )
    assert plan(Diff([], {"fill:10"}), [other]).resolve == ()


@given(
    st.lists(st.integers(1, 10_000), unique=True, min_size=1, max_size=40),
    st.data(),
)
def test_each_planted_difference_is_found_once(ids: list[int], data: st.DataObject) -> None:
    """Equal sides: nothing. Then drop some exchange rows, some projected fills, change some fees: exactly those
    entities are reported, each once, with the right kind."""
    projected = [fill(str(i)) for i in ids]
    exchange = [ex_fill(str(i)) for i in ids]
    assert diff_fills(projected, exchange, market="btcusd", from_id=0).findings == []
    chosen = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    kinds = {
        i: data.draw(st.sampled_from(["fill_missing", "fill_unknown_to_exchange", "fee_mismatch"])) for i in chosen
    }
    projected = [f for f in projected if kinds.get(int(f.trade_id)) != "fill_missing"]
    exchange = [
        ex_fill(e.trade_id, fee="0.2") if kinds.get(int(e.trade_id)) == "fee_mismatch" else e
        for e in exchange
        if kinds.get(int(e.trade_id)) != "fill_unknown_to_exchange"
    ]
    found = diff_fills(projected, exchange, market="btcusd", from_id=0).findings
    assert sorted((f.entity, f.kind) for f in found) == sorted((f"fill:{i}", k) for i, k in kinds.items())


@given(
    st.sets(st.integers(1, 60)),
    st.sets(st.integers(1, 60)),
    st.sets(st.integers(1, 60)),
    st.lists(st.integers(1, 12), min_size=1, max_size=8),
    st.integers(0, 20),
    st.integers(0, 70),
)
def test_fills_judged_page_by_page_equal_one_diff_of_the_window(
    projected: set[int], listed: set[int], wrong_fee: set[int], page_sizes: list[int], from_id: int, to_id: int
) -> None:
    """``FillAudit`` over a walk's pages (each page: its rows, the projected fills of its id range) and the tail up to
    ``to_id`` finds what one ``diff_fills`` over the whole window finds, and counts as many checked entities."""
    mine = [fill(str(i), fee="0.2" if i in wrong_fee else "0.1") for i in sorted(projected)]
    walk = sorted(i for i in listed if i >= from_id)  # a walk from from_id (inclusive): rows at or above it
    to_id = max(to_id, walk[-1] if walk else from_id)
    whole = diff_fills(mine, [ex_fill(str(i)) for i in walk], market="btcusd", from_id=from_id, to_id=to_id)

    audit = FillAudit("btcusd", from_id, watch=frozenset({"fill:3", "fill:40"}))
    pages: list[list[int]] = []
    rest = walk
    for size in page_sizes * 10:
        if not rest:
            break
        pages.append(rest[:size])
        rest = rest[size:]
    if rest:
        pages.append(rest)
    for page in pages:
        lo, hi = audit.next_id, page[-1]
        page_projected = [f for f in mine if lo <= int(f.trade_id) <= hi]
        assert len(page_projected) <= hi - lo + 1
        audit.page(page_projected, [ex_fill(str(i)) for i in page], hi)
    tail = [f for f in mine if audit.next_id <= int(f.trade_id) <= to_id]
    for start in range(0, len(tail), 3):  # in chunks
        audit.tail(tail[start : start + 3], to_id)
    paged = audit.diff()
    assert sorted(paged.findings, key=lambda f: f.id) == sorted(whole.findings, key=lambda f: f.id)
    assert paged.n_checked == len(whole.checked)
    assert paged.checked == whole.checked & {"fill:3", "fill:40"}


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7))
def test_id_ranges_select_exactly_the_ids_between(lo: int, hi: int, probe: int) -> None:
    """The text conditions the paged fills query uses on the text trade ids equal the numeric range."""
    text = str(probe)
    inside = any(len(text) == n and first <= text <= last for n, first, last in id_ranges(lo, hi))
    assert inside == (lo <= probe <= hi)


STATUSES = ("open", "filled", "cancelled")
EXCHANGE_WORDS = ("Open", "Finished", "Canceled", "Cancel pending")


@given(
    st.lists(st.tuples(st.sampled_from(STATUSES), st.integers(0, 40), st.booleans()), min_size=3, max_size=40),
    st.sets(st.integers(0, 45)),
    st.one_of(st.none(), st.integers(0, 40)),
    st.integers(1, 8),
    st.integers(1, 15),
    st.lists(st.sampled_from(EXCHANGE_WORDS), min_size=1),
)
def test_orders_judged_chunk_by_chunk_equal_the_whole(
    rows: list[tuple[str, int, bool]],
    exchange_ids: set[int],
    since_seq: int | None,
    budget: int,
    chunk_size: int,
    words: list[str],
) -> None:
    """``OrderAudit`` over chunks of the projected orders finds, asks about and counts what the one-shot judgement
    (every projected order in memory) does."""
    projected = []
    for i, (status, age, other_market) in enumerate(rows):
        o = order(f"{i:03d}", status, age_s=age)  # type: ignore[arg-type]
        o = msgspec.structs.replace(o, last_seq=i * 7 % 41 + 1, market="ethusd" if other_market else "btcusd")
        projected.append(o)
    exchange_open = [  # created 0-50 s before the answer: some within the grace, most not
        ExchangeOpenOrder(f"{i:03d}", "btcusd", D("1"), T - timedelta(seconds=50 - i)) for i in exchange_ids
    ]
    named = {o.order_id for o in projected} & {o.order_id for o in exchange_open}
    loaded = [o for o in projected if since_seq is None or o.status == "open" or o.last_seq > since_seq]
    loaded += [o for o in projected if o.order_id in named and o not in loaded]
    # The one-shot judgement (what the reconciler did with every projected order in memory).
    whole, confirm = open_order_candidates(loaded, exchange_open, asked_at=T, markets=["btcusd"])
    recent = sorted(
        (o for o in loaded if o.status != "open" and (since_seq is None or o.last_seq > since_seq)),
        key=lambda o: o.last_seq,
        reverse=True,
    )
    wanted = list(dict.fromkeys([*confirm, *(o.order_id for o in recent)]))[:budget]
    statuses = [ExchangeOrderStatus(i, words[n % len(words)]) for n, i in enumerate(wanted)]
    whole.extend(diff_order_status({o.order_id: o for o in loaded}, statuses))

    watch = frozenset({"order:001", "order:005", "order:030"})
    audit = OrderAudit(exchange_open, asked_at=T, markets=("btcusd",), budget=budget, since_seq=since_seq, watch=watch)
    streamed = sorted(
        (o for o in projected if since_seq is None or o.status == "open" or o.last_seq > since_seq),
        key=lambda o: o.order_id,
    )
    audit.chunk([o for o in projected if o.order_id in named and o not in streamed])
    for start in range(0, len(streamed), chunk_size):
        audit.chunk(streamed[start : start + chunk_size])
    assert audit.candidates(named) == wanted
    paged = audit.statuses(statuses)
    assert sorted(paged.findings, key=lambda f: f.id) == sorted(whole.findings, key=lambda f: f.id)
    assert paged.checked == whole.checked & watch
    assert paged.n_checked == len(whole.checked)
