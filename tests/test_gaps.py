"""Pure gap detection: chain breaks, coverage windows, inclusive-cursor walks (incl. the repeated-page guard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tracker.domain.gaps import (
    ChainTracker,
    CoverageTracker,
    Window,
    advance,
    chain_breaks,
    event_id_at,
    event_id_order,
    uncovered_windows,
)

T = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T + timedelta(seconds=s)


# --- chain ----------------------------------------------------------------------------------------------------------


def test_unbroken_chain_has_no_break() -> None:
    items = [("a", "btcusd", "orderbook", f"e{i}", f"e{i - 1}" if i else "z") for i in range(10)]
    assert chain_breaks(items) == []


def test_break_is_reported_with_expected_and_actual() -> None:
    items = [
        ("a", "btcusd", "orderbook", "e1", "e0"),
        ("a", "btcusd", "orderbook", "e2", "e1"),
        ("a", "btcusd", "orderbook", "e5", "e4"),  # e3, e4 missed
        ("a", "btcusd", "orderbook", "e6", "e5"),
    ]
    [brk] = chain_breaks(items)
    assert (brk.expected, brk.pre_event_id, brk.event_id) == ("e2", "e4", "e5")


def test_streams_are_independent_per_market_and_account() -> None:
    items = [
        ("a", "btcusd", "orderbook", "b1", "b0"),
        ("a", "ethusd", "orderbook", "x1", "x0"),
        ("b", "btcusd", "orderbook", "c1", "c0"),
        ("a", "btcusd", "orderbook", "b2", "b1"),
        ("a", "ethusd", "orderbook", "x2", "x1"),
        ("b", "btcusd", "orderbook", "c2", "c1"),
    ]
    assert chain_breaks(items) == []


def test_chain_across_order_sources_either_scope() -> None:
    # Market-wide chain (the fake's reading): a stop_order event links to the last orderbook event.
    market_wide = [
        ("a", "btcusd", "orderbook", "e1", "e0"),
        ("a", "btcusd", "stop_order", "e2", "e1"),
        ("a", "btcusd", "orderbook", "e3", "e2"),
    ]
    assert chain_breaks(market_wide) == []
    # Per-source chains: each source links to its own last event.
    per_source = [
        ("a", "btcusd", "orderbook", "o1", "o0"),
        ("a", "btcusd", "stop_order", "s1", "s0"),
        ("a", "btcusd", "orderbook", "o2", "o1"),
        ("a", "btcusd", "stop_order", "s2", "s1"),
    ]
    assert chain_breaks(per_source) == []


def test_duplicate_frame_and_missing_pre_are_not_breaks() -> None:
    tracker = ChainTracker()
    assert tracker.observe("a", "m", "orderbook", "e1", "e0") is None
    assert tracker.observe("a", "m", "orderbook", "e1", "e0") is None  # delivered twice
    assert tracker.observe("a", "m", "orderbook", "e2", None) is None  # old frames have no chain
    assert tracker.observe("a", "m", "orderbook", "e3", "e2") is None


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_every_dropped_run_is_exactly_one_break(keep: list[bool]) -> None:
    """Drop any events from an unbroken chain: each run of dropped events between two kept ones is one break
    (a run before the first kept event or after the last one cannot be seen from the chain)."""
    events = [("a", "m", "orderbook", f"e{i + 1}", f"e{i}") for i in range(len(keep))]
    kept = [e for e, k in zip(events, keep, strict=True) if k]
    expected = sum(1 for i in range(1, len(keep)) if keep[i] and not keep[i - 1] and True in keep[:i])
    assert len(chain_breaks(kept)) == expected


# --- coverage -------------------------------------------------------------------------------------------------------


def test_start_up_window_closes_on_first_subscription() -> None:
    windows = uncovered_windows(
        [("subscribed", "c1", ["x", "y"], at(5))],
        start_up=(["x", "y"], at(-20)),
    )
    assert windows == [Window(at(-20), at(5), "start-up", ("x", "y"))]


def test_drop_opens_a_window_until_resubscribed() -> None:
    windows = uncovered_windows(
        [
            ("subscribed", "c1", ["x", "y"], at(0)),
            ("closed", "c1", [], at(10)),
            ("subscribed", "c2", ["x", "y"], at(12)),
        ]
    )
    assert windows == [Window(at(10), at(12), "closed", ("x", "y"))]


def test_make_before_break_reconnect_is_a_potential_gap() -> None:
    windows = uncovered_windows(
        [
            ("subscribed", "c1", ["x"], at(0)),
            ("reconnect_requested", "c1", [], at(10)),
            ("subscribed", "c2", ["x"], at(11)),
            ("closed", "c1", [], at(12)),  # after the replacement: no new window
        ]
    )
    assert windows == [Window(at(10), at(11), "reconnect", ("x",), "requested by the server")]


def test_stall_window_starts_when_the_connection_went_quiet() -> None:
    cov = CoverageTracker()
    cov.subscribed("c1", ["x"], at(0))
    cov.stalled("c1", since=at(30))
    cov.closed("c1", at(55))
    assert cov.open_windows(at(56)) == [Window(at(30), at(56), "stalled", ("x",))]
    assert cov.subscribed("c2", ["x"], at(60)) == [Window(at(30), at(60), "stalled", ("x",))]
    assert cov.open_windows(at(61)) == []


def test_closing_one_of_two_connections_is_no_gap() -> None:
    windows = uncovered_windows(
        [
            ("subscribed", "c1", ["x"], at(0)),
            ("subscribed", "c2", ["x"], at(1)),
            ("closed", "c1", [], at(2)),
            ("subscribed", "c3", ["x"], at(3)),
        ]
    )
    assert windows == []


def test_shards_have_their_own_windows() -> None:
    windows = uncovered_windows(
        [
            ("subscribed", "a", ["x"], at(0)),
            ("subscribed", "b", ["y"], at(0)),
            ("closed", "a", [], at(5)),
            ("subscribed", "a2", ["x"], at(6)),
        ]
    )
    assert windows == [Window(at(5), at(6), "closed", ("x",))]


# --- cursors --------------------------------------------------------------------------------------------------------


def test_inclusive_first_row_is_dropped_and_cursor_moves() -> None:
    step = advance(5, [5, 6, 7], limit=3)
    assert step.fresh == (1, 2)
    assert step.cursor == 7
    assert not step.done  # a full page: there may be more


def test_short_page_ends_the_walk() -> None:
    step = advance(5, [5, 6], limit=1000)
    assert step.fresh == (1,) and step.cursor == 6 and step.done


def test_repeated_page_ends_the_walk() -> None:
    seen: set[int] = set()
    first = advance(None, [1, 2, 3], limit=3, seen=seen)
    assert first.fresh == (0, 1, 2) and not first.done
    again = advance(first.cursor, [1, 2, 3], limit=3, seen=seen)  # the server ignored since_id
    assert again.fresh == () and again.done and again.stuck
    same = advance(3, [3, 3, 3], limit=3, seen=seen)  # nothing but the cursor row
    assert same.done and same.stuck


def walk(server: list[int], limit: int, *, broken: bool = False) -> tuple[list[int], int]:
    """Drive ``advance`` against a fake inclusive since_id server (``broken``: it ignores since_id)."""
    got: list[int] = []
    seen: set[int] = set()
    cursor: int | None = None
    requests = 0
    while True:
        requests += 1
        assert requests <= len(server) + 2, "endless loop"
        page = [x for x in server if broken or cursor is None or x >= cursor][:limit]
        step = advance(cursor, page, limit=limit, seen=seen)
        got.extend(page[i] for i in step.fresh)
        cursor = step.cursor
        if step.done:
            return got, requests


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=300).map(sorted), st.integers(2, 50))
def test_walk_gets_every_row_once(server: list[int], limit: int) -> None:
    got, requests = walk(server, limit)
    assert got == server
    assert requests <= len(server) // (limit - 1) + 2


@given(st.lists(st.integers(0, 10_000), unique=True, min_size=1, max_size=100).map(sorted), st.integers(1, 20))
def test_walk_against_a_server_that_repeats_pages_terminates(server: list[int], limit: int) -> None:
    got, requests = walk(server, limit, broken=True)
    assert got == server[:limit]
    assert requests == 2 if len(server) >= limit else requests == 1


def test_event_id_cursor_order_and_synthetic_start() -> None:
    eid = event_id_at(1_789_459_694_223_000)
    assert eid == "00065b81-0d69-fe98-0000-000000000000"
    assert event_id_order(eid) < event_id_order("00065b81-0d69-fe98-0000-006902000020")
    assert event_id_order("short") < event_id_order(eid)
    step = advance(eid, ["00065b81-0d69-fe98-0000-006902000020"], limit=1000, order=event_id_order)
    assert step.fresh == (0,) and step.done
