"""The ledger in the fold (pure): running balances, balance checks at the consistent cut, the three ledger
discrepancies, crypto rows and withdrawal requests; and two properties over random ledgers (hypothesis): the
balances are the plain sum of the legs, and folding from scratch equals folding in random batches through rows.

Entries are built by hand per the ledger contract (``ledger_helpers``) and read by the real parser.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    T0,
    balances_entry,
    crypto_entry,
    ledger_entry,
    movement_row,
    request_entry,
    sample_ledger,
    trade_row,
    when,
)
from pipeline import Log

from tracker.domain.events import DomainEvent, LedgerRow
from tracker.domain.log import NewEntry
from tracker.domain.projection import ProjectionState, apply, fold
from tracker.domain.rows import BalanceCheckRow, DiscrepancyRow, row_key

D = Decimal


def _fold(entries: Iterable[NewEntry]) -> tuple[ProjectionState, list[DomainEvent]]:
    log = Log()
    for entry in entries:
        log.append(entry)
    events = log.events()
    return fold(events), events


def _rows(state: ProjectionState, name: str) -> list[Any]:
    return list(state.to_rows()[name])


def _discrepancies(state: ProjectionState) -> dict[str, DiscrepancyRow]:
    return {row.discrepancy_id: row for row in _rows(state, "discrepancies")}


def _snapshot(totals: dict[str, str], minutes: int, tai: str = "0") -> NewEntry:
    answer = [{"currency": c, "total": t, "available": t, "reserved": "0"} for c, t in totals.items()]
    return balances_entry(answer, tai=tai, received_at=T0 + timedelta(minutes=minutes))


def test_sample_ledger_balances_and_checks() -> None:
    state, _ = _fold(sample_ledger())
    balances = {(r.trade_account_id, r.currency): (r.balance, r.entries) for r in _rows(state, "balances")}
    assert balances == {
        ("0", "btc"): (D("0.19990000"), 3),
        ("0", "usd"): (D("5887.50"), 3),
        ("1234", "usd"): (D("100.00"), 1),
    }
    checks = _rows(state, "balance_checks")
    assert {(c.trade_account_id, c.currency, c.status, c.difference) for c in checks} == {
        ("0", "btc", "agrees", 0),
        ("0", "usd", "agrees", 0),
        ("1234", "usd", "agrees", 0),
    }  # fmt: skip  (eur listed at 0 and never moved: left out)
    assert _discrepancies(state) == {}
    legs = _rows(state, "ledger_legs")
    trade = [leg for leg in legs if leg.entry_id == "103"]
    assert [(leg.leg, leg.currency, leg.amount, leg.balance_after) for leg in trade] == [
        ("amount", "btc", D("-0.10000000"), D("0.40000000")),
        ("amount", "usd", D("5000.00"), D("6000.00")),
        ("fee", "usd", D("-12.50"), D("5987.50")),
    ]
    requests = _rows(state, "withdrawal_requests")
    first = next(r for r in requests if r.request_id == "7001")
    assert (first.status, first.status_name, first.txid, first.states) == (2, "finished", "104", 2)


def test_a_differing_check_opens_one_mismatch_refreshed_then_resolved() -> None:
    entries = [
        ledger_entry(movement_row(1, 0, 0, "usd", "100")),
        _snapshot({"usd": "100"}, 1),
        ledger_entry(movement_row(2, 2, 27, "usd", "5")),  # a staking reward... in usd, say
        _snapshot({"usd": "107"}, 3),  # the exchange has 2 more: a movement the ledger lacks
        _snapshot({"usd": "108"}, 4),
        ledger_entry(movement_row(3, 5, 32, "usd", "3")),
        _snapshot({"usd": "108"}, 6),
    ]
    state, events = _fold(entries)
    checks = sorted(_rows(state, "balance_checks"), key=lambda c: c.snapshot_seq)
    assert [(c.status, c.computed_total, c.difference, c.first_entry_id) for c in checks] == [
        ("agrees", D("100"), 0, None),
        ("differs", D("105"), D("2"), "2"),
        ("differs", D("105"), D("3"), "2"),
        ("agrees", D("108"), 0, None),
    ]
    (mismatch,) = _discrepancies(state).values()
    assert mismatch.discrepancy_id == f"balance_mismatch:0:usd:{events[3].seq}"
    assert (mismatch.kind, mismatch.status, mismatch.trade_account_id) == ("balance_mismatch", "resolved", "0")
    assert mismatch.resolved_seq == events[6].seq


def test_the_check_sees_only_the_legs_before_the_snapshot() -> None:
    entries = [
        ledger_entry(movement_row(1, 0, 0, "btc", "1")),
        _snapshot({"btc": "1"}, 1),
        ledger_entry(movement_row(2, 2, 1, "btc", "-0.4")),  # after the snapshot in the log: not in its total
    ]
    state, _ = _fold(entries)
    (check,) = _rows(state, "balance_checks")
    assert isinstance(check, BalanceCheckRow)
    assert (check.computed_total, check.status) == (D("1"), "agrees")


def test_missing_on_exchange_and_non_zero_unknown_currency() -> None:
    entries = [
        ledger_entry(movement_row(1, 0, 0, "eth", "2")),
        ledger_entry(movement_row(2, 1, 0, "ltc", "1")),
        ledger_entry(movement_row(3, 2, 1, "ltc", "-1")),
        _snapshot({"xrp": "5", "doge": "0"}, 3),
    ]
    state, events = _fold(entries)
    checks = {c.currency: c for c in _rows(state, "balance_checks")}
    assert set(checks) == {"eth", "ltc", "xrp"}  # doge: zero and never in the ledger
    assert (checks["eth"].status, checks["eth"].exchange_total, checks["eth"].difference) == (
        "missing_on_exchange", None, D("-2"),
    )  # fmt: skip
    assert (checks["ltc"].status, checks["ltc"].difference) == ("missing_on_exchange", 0)
    assert (checks["xrp"].status, checks["xrp"].computed_total, checks["xrp"].difference) == ("differs", 0, D("5"))
    opened = {d.discrepancy_id for d in _discrepancies(state).values() if d.status == "open"}
    seq = events[3].seq
    assert opened == {f"balance_mismatch:0:eth:{seq}", f"balance_mismatch:0:xrp:{seq}"}
    # a snapshot-only currency is no ledger balance
    assert {r.currency for r in _rows(state, "balances") if r.entries > 0} == {"eth", "ltc"}


def test_negative_balance_opens_at_the_first_leg_below_zero_and_resolves() -> None:
    entries = [
        ledger_entry(movement_row(1, 0, 1, "btc", "-1", "0.001")),
        ledger_entry(movement_row(2, 1, 1, "btc", "-1")),
        ledger_entry(movement_row(3, 2, 0, "btc", "5")),
    ]
    state, events = _fold(entries)
    (negative,) = _discrepancies(state).values()
    assert negative.discrepancy_id == "negative_balance:0:btc:1"
    assert (negative.status, negative.opened_seq, negative.resolved_seq) == ("resolved", 1, events[2].seq)
    legs = [leg.balance_after for leg in _rows(state, "ledger_legs")]
    assert legs == [D("-1"), D("-1.001"), D("-2.001"), D("2.999")]


def test_a_row_id_under_a_second_trade_account_is_not_applied_twice() -> None:
    row = movement_row(1, 0, 0, "usd", "50")
    state, _ = _fold([ledger_entry(row), ledger_entry(row, tai="9"), ledger_entry(movement_row(2, 1, 0, "usd", "1"))])
    (ignored,) = _discrepancies(state).values()
    assert (ignored.kind, ignored.trade_account_id, ignored.entity) == ("subaccount_header_ignored", "9", "ledger:1")
    assert {(b.trade_account_id, b.balance) for b in _rows(state, "balances")} == {("0", D("51"))}


def test_counters_for_unknown_types_derivatives_and_unknown_fee_currency() -> None:
    entries = [
        ledger_entry(movement_row(1, 0, 99, "usd", "1")),
        ledger_entry(trade_row(2, 1, "1", "-100", "100", "1", margin_mode="ISOLATED")),
        ledger_entry({"id": 3, "datetime": when(2), "type": 36, "btc": "1", "eur": "-9", "fee": "1"}),
    ]
    state, _ = _fold(entries)
    counters = {c.name: c.value for c in _rows(state, "counters")}
    assert counters == {"ledger_type_unknown:99": 1, "ledger_derivatives_fill": 1, "fee_currency_unknown": 1}
    fee_leg = [leg for leg in _rows(state, "ledger_legs") if leg.entry_id == "3" and leg.leg == "fee"]
    assert fee_leg[0].currency is None and fee_leg[0].balance_after is None
    assert not [leg for leg in _rows(state, "ledger_legs") if leg.entry_id == "2"]


def test_crypto_rows_are_kept_per_entry() -> None:
    row = {"currency": "ETH", "network": "ethereum", "txid": "0xa", "amount": D("1.50"), "datetime": 1_790_000_000}
    state, _ = _fold([crypto_entry(row, "deposits"), crypto_entry({**row, "txid": "0xb"}, "deposits")])
    rows = _rows(state, "crypto_transactions")
    assert [(r.txid, r.abs_amount, r.currency) for r in rows] == [("0xa", D("1.5"), "eth"), ("0xb", D("1.5"), "eth")]


def test_a_request_keeps_its_first_seq_and_latest_state() -> None:
    base = {"id": 5, "datetime": when(0), "currency": "btc", "amount": "0.1", "txid": None}
    state, _ = _fold([request_entry({**base, "status": s}) for s in (0, 1, 4)])
    (request,) = _rows(state, "withdrawal_requests")
    assert (request.status_name, request.first_seq, request.seq, request.states) == ("failed", 1, 3, 3)
    assert request.signed_amount == D("-0.1")


# --- properties ------------------------------------------------------------------------------------------------------

CURRENCIES = ("btc", "usd", "eur", "eth")
ACCOUNTS = ("0", "1", "22")
AMOUNTS = st.decimals(min_value=-1000, max_value=1000, places=8, allow_nan=False, allow_infinity=False)


def _wire(value: Decimal, draw: st.DrawFn) -> object:
    """An amount as the wire may spell it: text, an exact number, or (for zero) ``"None"``."""
    if value == 0:
        return draw(st.sampled_from(["None", D("0.0"), "0.00000000", 0]))
    return draw(st.sampled_from([str(value), value]))


@st.composite
def ledger_entries(draw: st.DrawFn) -> list[NewEntry]:
    """Random ledger rows (random currencies, types incl. unknown codes as int or text, fees, pair keys, derivatives
    fills, sub-accounts, the same id under a second trade account) with snapshots between them: some agree (the
    totals the ledger has then), some do not."""
    entries: list[NewEntry] = []
    sums: dict[tuple[str, str], Decimal] = {}
    applied: dict[int, str] = {}
    for i in range(draw(st.integers(min_value=0, max_value=25))):
        tai = draw(st.sampled_from(ACCOUNTS))
        minute = i
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            totals = {c: v for (t, c), v in sums.items() if t == tai}
            if draw(st.booleans()):
                for currency in draw(st.lists(st.sampled_from(CURRENCIES), max_size=2)):
                    totals[currency] = draw(AMOUNTS)
            answer = [{"currency": c, "total": str(v), "available": str(v), "reserved": "0"} for c, v in totals.items()]
            entries.append(balances_entry(answer, tai=tai, received_at=T0 + timedelta(minutes=minute, seconds=i)))
            continue
        if applied and draw(st.integers(min_value=0, max_value=9)) == 0:  # an id seen before, maybe elsewhere
            entry_id = draw(st.sampled_from(sorted(applied)))
        else:
            entry_id = 1000 + i
        code: object = draw(st.sampled_from([0, 1, 2, 14, 27, 33, 35, 36, 58, 61, 99, 123]))
        code = str(code) if draw(st.booleans()) else code
        row: dict[str, Any] = {"id": entry_id, "datetime": when(minute), "type": code}
        moved = draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=2, unique=True))
        for currency in moved:
            row[currency] = _wire(draw(AMOUNTS), draw)
        for currency in CURRENCIES:
            if currency not in row and draw(st.booleans()):
                row[currency] = _wire(D(0), draw)
        if len(moved) == 2 and draw(st.booleans()):
            row[f"{moved[0]}_{moved[1]}"] = draw(st.sampled_from(["None", D("123.45"), "0.5"]))
        row["fee"] = draw(st.sampled_from(["0", "None", "0.01", D("1.5"), "0.00000001"]))
        if str(code) == "2" and draw(st.integers(min_value=0, max_value=3)) == 0:
            row["margin_mode"] = "CROSS"
        entries.append(ledger_entry(row, tai=tai))
        applied.setdefault(entry_id, tai)
        sums = _sums_of(entries)  # what the ledger holds now: what an agreeing snapshot says
    return entries


def _sums_of(entries: list[NewEntry]) -> dict[tuple[str, str], Decimal]:
    """The plain sum of the legs per trade account and currency: every ledger row once, under the trade account it
    came for first."""
    log = Log()
    sums: dict[tuple[str, str], Decimal] = {}
    seen: set[str] = set()
    for entry in entries:
        event = log.append(entry)
        if not isinstance(event, LedgerRow) or event.entry_id in seen:
            continue
        seen.add(event.entry_id)
        for leg in event.legs:
            if leg.currency is not None:
                key = (event.trade_account_id, leg.currency)
                sums[key] = sums.get(key, D(0)) + leg.amount
    return sums


@settings(max_examples=150, deadline=None)
@given(ledger_entries())
def test_balances_are_the_sum_of_the_legs(entries: list[NewEntry]) -> None:
    state, events = _fold(entries)
    assert not [e for e in events if type(e).__name__ == "Unknown"]
    balances = {(r.trade_account_id, r.currency): r.balance for r in _rows(state, "balances") if r.entries > 0}
    assert balances == _sums_of(entries)
    legs: dict[tuple[str, str], Decimal] = {}
    last: dict[tuple[str, str], Decimal | None] = {}
    for leg in sorted(_rows(state, "ledger_legs"), key=lambda r: (r.seq, r.leg_no)):
        if leg.currency is not None:
            key = (leg.trade_account_id, leg.currency)
            legs[key] = legs.get(key, D(0)) + leg.amount
            assert leg.balance_after == legs[key]  # the running balance in log order
            last[key] = leg.balance_after
    assert legs == balances == last
    # each check's computed total is the sum of the legs with a smaller seq
    for check in _rows(state, "balance_checks"):
        before = sum(
            (leg.amount for leg in _rows(state, "ledger_legs")
             if leg.seq < check.snapshot_seq and (leg.trade_account_id, leg.currency) ==
             (check.trade_account_id, check.currency)),
            D(0),
        )  # fmt: skip
        assert check.computed_total == before
        exchange = D(0) if check.exchange_total is None else check.exchange_total
        assert check.difference == exchange - before


@settings(max_examples=150, deadline=None)
@given(ledger_entries(), st.data())
def test_rebuild_equals_incremental_in_random_batches(entries: list[NewEntry], data: st.DataObject) -> None:
    """Folding from scratch equals folding in random batches, each from the rows the last one left (as the store
    does), row for row: legs, balances, checks, discrepancies, counters."""
    _, events = _fold(entries)
    whole = fold(events)
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=6), max_size=8))
    state = ProjectionState()
    position = 0
    db: dict[str, dict[tuple[object, ...], object]] = {}
    for size in [*sizes, len(events)]:
        state = ProjectionState.from_rows(state.to_rows(), state.checkpoint)
        for event in events[position : position + size]:
            apply(state, event)
        position += size
        for table, rows in state.changed_rows().items():
            for row in rows:
                db.setdefault(table, {})[row_key(row)] = row
        state.clear_dirty()
    assert state == whole
    assert state.to_rows() == whole.to_rows()
    assert db == {name: {row_key(r): r for r in rows} for name, rows in whole.to_rows().items() if rows}
