"""An ``order_fills_mismatch`` that the order's own logged events explain as a self trade whose frame was missed.

Pure (``domain/self_trade_hint.py``): the order's events in, the hint or ``None`` out, whatever order the log holds
them in. Then on both backends: a log where two orders lost their self trade's frame and a third lost a fill, the
projection's discrepancies, ``missed_self_trades`` and ``tracker discrepancies`` (table and JSON): the first two get
the hint, the lost fill does not.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from tests.pipeline import NOW, order_frame
from tracker.bitstamp.frames import entry_from_frame
from tracker.cli import main
from tracker.cli.audit import write_audit
from tracker.domain.events import OrderEvent, OrderEventKind
from tracker.domain.log import NewEntry
from tracker.domain.self_trade_hint import describe, missed_self_trade, untraded_drops
from tracker.store.discrepancy_queries import list_discrepancies, missed_self_trades
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore

ZERO = Decimal(0)
US = 1_796_622_323_294_378


def event_id(n: int) -> str:
    """A MarketEventID of the standard form whose leading digits grow with ``n`` (time order is text order)."""
    return f"{US + n:016x}"[:8] + "-" + f"{US + n:016x}"[8:12] + "-" + f"{US + n:016x}"[12:16] + "-0000-000000000000"


def order(
    seq: int,
    kind: OrderEventKind,
    remaining: str,
    traded: str | None,
    ident: str | None,
    *,
    source: str = "ws",
    is_market: bool = False,
) -> OrderEvent:
    return OrderEvent(
        seq=seq,
        account="314159",
        source=source,  # type: ignore[arg-type]
        kind=kind,
        order_id="7",
        market="btcusd",
        side="buy",
        amount_remaining=Decimal(remaining),
        amount_traded=None if traded is None else Decimal(traded),
        amount_at_create=Decimal("1"),
        price=Decimal("100"),
        price_is_placeholder=False,
        is_market=is_market,
        client_order_id=None,
        orig_order_id=None,
        event_id=ident,
        pre_event_id=None,
        order_source=None,
        occurred_at=None,
        received_at=datetime(2026, 12, 7, tzinfo=UTC),
    )


def hint(
    events: list[OrderEvent], filled: str, fills: str, offset: str = "0"
) -> tuple[Decimal, tuple[int, ...]] | None:
    found = missed_self_trade(
        events, amount_filled=Decimal(filled), fills_sum=Decimal(fills), self_trade_offset=Decimal(offset)
    )
    return None if found is None else (found.amount, found.seqs)


def test_a_drop_with_nothing_traded_explains_the_shortfall() -> None:
    # created 1; self-trade prevention takes 0.4 (amount_traded 0); a fill of 0.6 (amount_traded 0.6) ends it
    events = [
        order(10, "created", "1", "0", event_id(1)),
        order(11, "changed", "0.6", "0", event_id(2)),
        order(12, "deleted", "0", "0.6", event_id(3)),
    ]
    assert hint(events, filled="1", fills="0.6") == (Decimal("0.4"), (11,))
    found = missed_self_trade(events, amount_filled=Decimal(1), fills_sum=Decimal("0.6"), self_trade_offset=ZERO)
    assert found is not None
    text = describe(found)
    assert "dropped by 0.4 with nothing traded (log seq 11)" in text and "no REST source" in text


def test_a_lost_fill_is_not_called_a_self_trade() -> None:
    # the drop came with amount_traded equal to it: a trade whose my_trades frame is missing
    events = [order(10, "created", "1", "0", event_id(1)), order(11, "deleted", "0", "1", event_id(2))]
    assert hint(events, filled="1", fills="0") is None


def test_a_logged_self_trade_leaves_nothing_to_explain() -> None:
    # the self_trade frame was logged (offset 0.4): a shortfall left is something else
    events = [
        order(10, "created", "1", "0", event_id(1)),
        order(11, "changed", "0.6", "0", event_id(2)),
        order(12, "deleted", "0", "0.6", event_id(3)),
    ]
    assert hint(events, filled="0.6", fills="0.3", offset="0.4") is None
    assert hint(events, filled="0.6", fills="0.6", offset="0.4") is None  # no shortfall at all


def test_the_drops_must_match_the_shortfall_exactly() -> None:
    events = [order(10, "created", "1", "0", event_id(1)), order(11, "changed", "0.6", "0", event_id(2))]
    assert hint(events, filled="0.4", fills="0.1") is None  # 0.3 short, 0.4 dropped


def test_a_replay_logged_after_later_live_events_is_put_in_the_exchanges_order() -> None:
    # live: created, then (the change withheld) the deletion; the REST replay of the change comes after both
    events = [
        order(10, "created", "1", "0", event_id(1)),
        order(20, "deleted", "0.6", "0", event_id(3)),
        order(30, "changed", "0.6", "0", event_id(2), source="rest"),
    ]
    assert hint(events, filled="0.4", fills="0") == (Decimal("0.4"), (30,))


def test_an_event_logged_twice_counts_once() -> None:
    events = [
        order(10, "created", "1", "0", event_id(1)),
        order(11, "changed", "0.6", "0", event_id(2)),
        order(40, "changed", "0.6", "0", event_id(2), source="rest"),
    ]
    assert untraded_drops(events) == (Decimal("0.4"), (11,))


def test_no_hint_where_the_order_cannot_be_known() -> None:
    market = [order(10, "created", "1", "0", event_id(1), is_market=True), order(11, "deleted", "0", "0", event_id(2))]
    assert untraded_drops(market) is None
    mixed = [order(10, "created", "1", "0", event_id(1)), order(11, "changed", "0.6", "0", None, source="rest")]
    assert untraded_drops(mixed) is None
    # ids of another form from two sources: the log's order is not the exchange's
    odd = [order(10, "created", "1", "0", "a"), order(11, "changed", "0.6", "0", "b", source="rest")]
    assert untraded_drops(odd) is None
    # from one source, the log's order is the exchange's
    assert untraded_drops([order(10, "created", "1", "0", None), order(11, "changed", "0.6", "0", None)]) == (
        Decimal("0.4"),
        (11,),
    )
    assert untraded_drops([order(11, "changed", "0.6", None, event_id(2))]) == (ZERO, ())  # no amount_traded


@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=10**8)), min_size=1, max_size=12),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_the_drops_are_the_self_trades_whatever_order_the_log_holds(steps: list[tuple[bool, int]], seed: int) -> None:
    """An order of N satoshis worn down by fills (``amount_traded`` = the step) and self-trade prevention
    (``amount_traded`` 0): the untraded drops are the prevention's sum, in whatever order the log holds the events."""
    total = sum(size for _, size in steps)
    events = [order(1, "created", str(Decimal(total).scaleb(-8)), "0", event_id(0))]
    remaining = total
    for n, (is_fill, size) in enumerate(steps, start=1):
        remaining -= size
        kind: OrderEventKind = "deleted" if n == len(steps) else "changed"
        traded = str(Decimal(size).scaleb(-8)) if is_fill else "0"
        events.append(order(n + 1, kind, str(Decimal(remaining).scaleb(-8)), traded, event_id(n)))
    random.Random(seed).shuffle(events)
    events = [order_with_seq(e, seq) for seq, e in enumerate(events, start=1)]  # seqs in the log's (shuffled) order
    prevented = sum(size for is_fill, size in steps if not is_fill)
    drops = untraded_drops(events)
    assert drops is not None and drops[0] == Decimal(prevented).scaleb(-8)
    fills = sum(size for is_fill, size in steps if is_fill)
    found = missed_self_trade(
        events,
        amount_filled=Decimal(total).scaleb(-8),
        fills_sum=Decimal(fills).scaleb(-8),
        self_trade_offset=ZERO,
    )
    assert (found is not None) == (prevented > 0)


def order_with_seq(event: OrderEvent, seq: int) -> OrderEvent:
    return msgspec.structs.replace(event, seq=seq)


def frames() -> list[str]:
    """Three orders whose frames the log holds; their ``self_trade`` frame and one ``my_trades`` frame are missing.

    Order 101 (buy 1) and order 102 (sell 0.4) met: self-trade prevention took 0.4 off both (``amount_traded`` 0);
    101 was then cancelled, 102 is gone with nothing left (\"filled\"). Order 103 (buy 1) was filled by a trade
    whose frame is missing (``amount_traded`` 1)."""
    out = []
    n = 0

    def add(event: str, oid: str, amount: str, at_create: str, traded: str, side: int = 0) -> None:
        nonlocal n
        n += 1
        out.append(
            json.dumps(
                order_frame(
                    event,
                    oid,
                    amount=amount,
                    amount_at_create=at_create,
                    amount_traded=traded,
                    side=side,
                    event_id=event_id(n),
                )
            )
        )

    add("order_created", "101", "1", "1", "0")
    add("order_created", "102", "0.4", "0.4", "0", side=1)
    add("order_changed", "101", "0.6", "1", "0")
    add("order_deleted", "102", "0", "0.4", "0", side=1)
    add("order_deleted", "101", "0.6", "1", "0")
    add("order_created", "103", "1", "1", "0")
    add("order_deleted", "103", "0", "1", "1")
    return out


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_tracker_discrepancies_gives_the_hint_to_the_self_trades_only(
    migrated_engine: Engine, db_url: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = EventLog(migrated_engine)
    entries = [entry_from_frame(text, account="314159", received_at=NOW, connection_id="c") for text in frames()]
    log.append([entry for entry in entries if isinstance(entry, NewEntry)])
    ProjectionStore(migrated_engine).catch_up(log)
    rows = list_discrepancies(migrated_engine)
    assert sorted(row["entity"] for row in rows) == ["order:101", "order:102", "order:103"]
    hints = missed_self_trades(migrated_engine, rows)
    by_entity = {row["entity"]: hints.get(row["id"]) for row in rows}
    assert by_entity["order:103"] is None  # a lost fill stays a plain mismatch
    assert by_entity["order:101"] is not None and by_entity["order:101"].amount == Decimal("0.4")
    assert by_entity["order:102"] is not None and by_entity["order:102"].amount == Decimal("0.4")
    assert by_entity["order:101"].seqs == (3,) and by_entity["order:102"].seqs == (4,)

    assert main(["discrepancies", "--db-url", db_url, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        shown = {row["entity"]: row["hint"] for row in json.loads(out)}
        assert shown["order:103"] is None
        assert "dropped by 0.4 with nothing traded (log seq 3)" in shown["order:101"]
        assert "dropped by 0.4 with nothing traded (log seq 4)" in shown["order:102"]
    else:
        blocks = out.split("order_fills_mismatch:")
        likely = {block.split(":", 1)[0]: "    likely: a self trade" in block for block in blocks[1:]}
        assert likely == {"101": True, "102": True, "103": False}, out


def test_the_audit_report_gives_the_hint_apart_from_the_view(
    migrated_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = EventLog(migrated_engine)
    entries = [entry_from_frame(text, account="314159", received_at=NOW, connection_id="c") for text in frames()]
    log.append([entry for entry in entries if isinstance(entry, NewEntry)])
    ProjectionStore(migrated_engine).catch_up(log)
    ids = {row["entity"]: row["id"] for row in list_discrepancies(migrated_engine)}
    write_audit(db_url, tmp_path / "audit.html")
    page = (tmp_path / "audit.html").read_text(encoding="utf-8")
    _, hints = page.split("Likely causes, read by tracker from the orders' own logged events", 1)
    hints = hints.split("</ul>", 1)[0]
    assert f"<code>{ids['order:101']}</code>: a self trade" in hints
    assert f"<code>{ids['order:102']}</code>: a self trade" in hints
    assert ids["order:103"] not in hints
