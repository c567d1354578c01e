"""Reconciliation diffs (pure): the projection against what the exchange's REST API says now.

Each ``diff_*`` returns a ``Diff``: the ``findings`` (mismatches) and the ``checked`` entities (what was compared at
all). ``plan`` turns a diff and the currently open reconciliation discrepancies into what to append: new
``discrepancy`` entries (ids are stable, ``recon:<kind>:<entity>``, so a re-run does not duplicate an open one) and
``discrepancy_resolved`` entries for open ones whose entity was checked again and found clean.

Rules (docs/bitstamp.md §5, §6 gotchas 18-20):

- fills: by trade id (docs/semantics.md: the ``user_transactions/`` id of a fill is assumed to equal the websocket trade
  id). Only the window the exchange rows cover is compared: fills of that market with a trade id at or above the
  walk's first id.
- open orders: ``open_orders/`` is cached for 10 s, so an order that changed less than ``cache_s`` before the answer
  is not judged from it; a disagreement is only a *candidate* confirmed (or not) by ``order_status/``.
- order states: ``order_status/`` ``Open``/``In Queue`` = open, ``Finished`` = filled, ``Canceled``/``Expired`` =
  cancelled or replaced; ``Cancel pending`` is transitional and never judged. Closed orders are only known for about
  30 days (404.002 afterwards), so "not found" is not a mismatch.
- balances: the projection holds no balances (no deposits, withdrawals or opening balances in the log), so only the
  exchange's own arithmetic is checked (``total = available + reserved``, nothing negative).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from tracker.domain.rows import DiscrepancyRow, FillRow, OrderRow

RECON_PREFIX: Final = "recon:"
OPEN_STATES: Final = frozenset({"open", "in queue"})
TRANSITIONAL: Final = frozenset({"cancel pending"})
STATUS_MAP: Final[dict[str, frozenset[str]]] = {
    "open": frozenset({"open"}),
    "in queue": frozenset({"open"}),
    "finished": frozenset({"filled"}),
    "canceled": frozenset({"cancelled", "replaced"}),
    "cancelled": frozenset({"cancelled", "replaced"}),
    "expired": frozenset({"cancelled"}),
}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    entity: str
    detail: str

    @property
    def id(self) -> str:
        return f"{RECON_PREFIX}{self.kind}:{self.entity}"


@dataclass
class Diff:
    findings: list[Finding] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    # Entities checked but not kept in ``checked`` (a paged fills audit keeps only those an open discrepancy names:
    # ``plan`` needs no others), counted here so that ``n_checked`` still says how much was compared.
    uncounted: int = 0

    @property
    def n_checked(self) -> int:
        return len(self.checked) + self.uncounted

    def extend(self, other: Diff) -> Diff:
        self.findings.extend(other.findings)
        self.checked |= other.checked
        self.uncounted += other.uncounted
        return self


@dataclass(frozen=True, slots=True)
class ExchangeFill:
    """A fill as ``user_transactions/`` (or ``trade_history/``) shows it."""

    trade_id: str
    market: str | None
    side: str
    amount: Decimal
    price: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class ExchangeOpenOrder:
    order_id: str
    market: str | None
    amount_remaining: Decimal | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExchangeOrderStatus:
    order_id: str
    status: str  # as the exchange spells it: Open, Finished, Canceled, Expired, Cancel pending, In Queue
    amount_remaining: Decimal | None = None
    found: bool = True  # False: 404.002 "Order not found" (older than ~30 days, or never existed)


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    total: Decimal
    available: Decimal
    reserved: Decimal


def first_wait(interval_s: float, last: datetime | None, now: datetime) -> float:
    """Seconds until a new process's first periodic reconciliation: one interval after the last one (or after the
    account's log began), counted across restarts, so a tracker restarted more often than the interval still
    reconciles; never more than one interval (a clock set back), never less than 0."""
    if last is None:
        return interval_s
    return min(interval_s, max(0.0, interval_s - (now - last).total_seconds()))


def _trade_number(trade_id: str) -> int | None:
    return int(trade_id) if trade_id.isdigit() else None


def fill_entity(trade_id: str) -> str:
    return f"fill:{trade_id}"


def order_entity(order_id: str) -> str:
    return f"order:{order_id}"


# --- fills ----------------------------------------------------------------------------------------------------------


def diff_fills(
    projected: Iterable[FillRow],
    exchange: Sequence[ExchangeFill],
    *,
    market: str,
    from_id: int,
    to_id: int | None = None,
) -> Diff:
    """Projected fills of ``market`` with ``from_id`` ≤ trade id ≤ ``to_id`` (the last id the walk saw: fills made
    after the walk are judged next time) against the exchange's rows of that window."""
    diff = Diff()
    mine = {
        f.trade_id: f
        for f in projected
        if f.market == market
        and (n := _trade_number(f.trade_id)) is not None
        and n >= from_id
        and (to_id is None or n <= to_id)
    }
    theirs = {f.trade_id: f for f in exchange}
    for trade_id, ex in theirs.items():
        entity = fill_entity(trade_id)
        diff.checked.add(entity)
        own = mine.get(trade_id)
        if own is None:
            diff.findings.append(
                Finding(
                    "fill_missing",
                    entity,
                    f"the exchange has fill {trade_id} ({ex.side} {ex.amount} @ {ex.price}, fee {ex.fee}) "
                    f"in {market}; the projection does not",
                )
            )
            continue
        wrong = [
            f"{name} projected={a} exchange={b}"
            for name, a, b in (
                ("amount", own.amount, ex.amount),
                ("price", own.price, ex.price),
                ("fee", own.fee, ex.fee),
                ("side", own.side, ex.side),
            )
            if a != b
        ]
        if wrong:
            kind = "fee_mismatch" if len(wrong) == 1 and wrong[0].startswith("fee ") else "fill_mismatch"
            diff.findings.append(Finding(kind, entity, f"fill {trade_id} in {market}: " + "; ".join(wrong)))
    for trade_id, own in mine.items():
        if trade_id in theirs:
            continue
        entity = fill_entity(trade_id)
        diff.checked.add(entity)
        diff.findings.append(
            Finding(
                "fill_unknown_to_exchange",
                entity,
                f"projected fill {trade_id} ({own.side} {own.amount} @ {own.price}, fee {own.fee}, from "
                f"{own.source}) in {market} is not in the exchange's user_transactions",
            )
        )
    return diff


@dataclass
class FillAudit:
    """``diff_fills`` of one market's walk, page by page, so that memory is bounded by a page, not by the history.

    The walk's pages cover consecutive id ranges: the first ``[from_id, cursor_1]``, each next one ``(cursor_k,
    cursor_k+1]``. ``page`` judges one range from the exchange's rows of that page and the projected fills whose ids
    fall in it; ``tail`` judges what is left up to the walk's end id (projected fills the exchange no longer lists
    after its last row), in chunks. Together: the same findings as one ``diff_fills`` over ``[from_id, to_id]``.
    Only findings, a count and the checked entities in ``watch`` (those open discrepancies name) are kept.
    """

    market: str
    from_id: int
    watch: frozenset[str] = frozenset()
    next_id: int = -1  # the lowest id not judged yet (from_id until the first page)
    findings: list[Finding] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    uncounted: int = 0

    def __post_init__(self) -> None:
        if self.next_id < 0:
            self.next_id = self.from_id

    def _add(self, diff: Diff) -> None:
        self.findings.extend(diff.findings)
        kept = diff.checked & self.watch
        self.checked |= kept
        self.uncounted += len(diff.checked) - len(kept)

    def page(self, projected: Iterable[FillRow], exchange: Sequence[ExchangeFill], to_id: int) -> None:
        """One page: ``exchange`` its fills, ``to_id`` the walk's cursor after it, ``projected`` (at least) the
        projected fills with ids in ``[next_id, to_id]``."""
        if to_id < self.next_id and not exchange:
            return
        self._add(diff_fills(projected, exchange, market=self.market, from_id=self.next_id, to_id=to_id))
        self.next_id = max(self.next_id, to_id + 1)

    def tail(self, projected: Iterable[FillRow], to_id: int) -> None:
        """After the last page: projected fills in ``[next_id, to_id]``, which the exchange did not list. Called once
        per chunk of them (each chunk is judged alone; ``next_id`` does not move)."""
        if to_id >= self.next_id:
            self._add(diff_fills(projected, (), market=self.market, from_id=self.next_id, to_id=to_id))

    def diff(self) -> Diff:
        return Diff(list(self.findings), set(self.checked), self.uncounted)


# --- orders ---------------------------------------------------------------------------------------------------------


def open_order_candidates(
    projected: Iterable[OrderRow],
    exchange_open: Sequence[ExchangeOpenOrder],
    *,
    asked_at: datetime,
    markets: Iterable[str],
    cache_s: float = 10.0,
    grace_s: float = 5.0,
) -> tuple[Diff, list[str]]:
    """Open orders in the projection vs ``open_orders/``.

    Returns findings that need no confirmation (an order open on the exchange the projection has never heard of) and
    the order ids whose state the two disagree on, to be confirmed with ``order_status/``. Orders that changed within
    ``cache_s`` of ``asked_at`` are skipped (the answer may be up to 10 s old); exchange-open orders the projection
    lacks get ``grace_s`` more (their frames may be on the way).
    """
    wanted = set(markets)
    fresh_after = asked_at - timedelta(seconds=cache_s)
    unknown_after = fresh_after - timedelta(seconds=grace_s)
    mine = {o.order_id: o for o in projected if o.market in wanted}
    theirs = {o.order_id: o for o in exchange_open if o.market is None or o.market in wanted}
    diff = Diff()
    confirm: list[str] = []
    for order_id, own in sorted(mine.items()):
        if own.updated_at >= fresh_after:
            continue
        on_exchange = order_id in theirs
        if (own.status == "open") != on_exchange:
            confirm.append(order_id)
        else:
            diff.checked.add(order_entity(order_id))
    for order_id, ex in sorted(theirs.items()):
        if order_id in mine:
            continue
        if ex.created_at is not None and ex.created_at >= unknown_after:
            continue
        entity = order_entity(order_id)
        diff.checked.add(entity)
        diff.findings.append(
            Finding(
                "order_missing",
                entity,
                f"order {order_id} is open on the exchange ({ex.market}, remaining {ex.amount_remaining}); "
                "the projection has never seen it",
            )
        )
    return diff, confirm


def diff_order_status(
    projected: Mapping[str, OrderRow],
    statuses: Iterable[ExchangeOrderStatus],
) -> Diff:
    """Projected order states against ``order_status/`` answers (and remaining amounts where both are known)."""
    diff = Diff()
    for st in statuses:
        own = projected.get(st.order_id)
        if own is None or not st.found:
            continue
        word = st.status.strip().lower()
        if word in TRANSITIONAL:
            continue
        entity = order_entity(st.order_id)
        diff.checked.add(entity)
        allowed = STATUS_MAP.get(word)
        if allowed is None:
            diff.findings.append(
                Finding("order_status_unknown", entity, f"order {st.order_id}: unknown exchange status {st.status!r}")
            )
        elif own.status not in allowed:
            diff.findings.append(
                Finding(
                    "order_status_mismatch",
                    entity,
                    f"order {st.order_id} ({own.market}): projected {own.status}, exchange {st.status}",
                )
            )
        elif (
            st.amount_remaining is not None
            and own.status == "open"
            and not own.remaining_is_placeholder
            and st.amount_remaining != own.amount_remaining
        ):
            diff.findings.append(
                Finding(
                    "order_remaining_mismatch",
                    entity,
                    f"order {st.order_id} ({own.market}): projected remaining {own.amount_remaining}, "
                    f"exchange {st.amount_remaining}",
                )
            )
    return diff


@dataclass
class OrderAudit:
    """``open_order_candidates`` and the choice of orders to ask ``order_status/`` about, over the projected orders
    chunk by chunk (each order in exactly one chunk), so that memory is bounded by a chunk and the budget, not by the
    history: kept are the disagreements to confirm (ids and rows), the ``budget`` most recently changed closed orders
    (``since_seq``: those changed after it; None: all), findings, a count and the checked entities in ``watch``.

    ``chunk`` for each chunk; ``candidates(named)`` (the exchange-open ids the projection has) ends the candidates
    and returns the ids to ask about; ``statuses`` judges the answers and returns the whole ``Diff``.
    """

    exchange_open: Sequence[ExchangeOpenOrder]
    asked_at: datetime
    markets: tuple[str, ...]
    budget: int
    since_seq: int | None = None
    cache_s: float = 10.0
    grace_s: float = 5.0
    watch: frozenset[str] = frozenset()
    findings: list[Finding] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    counted: int = 0  # distinct entities checked so far (kept or not)
    confirm: dict[str, OrderRow] = field(default_factory=dict)
    recent: list[OrderRow] = field(default_factory=list)  # at most ``budget``, newest change first
    agreed: set[str] = field(default_factory=set)  # ids in ``recent`` the candidates already counted as checked
    wanted: list[str] = field(default_factory=list)

    def _add(self, diff: Diff) -> None:
        self.findings.extend(diff.findings)
        self.checked |= diff.checked & self.watch
        self.counted += len(diff.checked)

    def chunk(self, projected: Sequence[OrderRow]) -> None:
        ids = {o.order_id for o in projected}
        theirs = [o for o in self.exchange_open if o.order_id in ids]
        diff, confirm = open_order_candidates(
            projected,
            theirs,
            asked_at=self.asked_at,
            markets=self.markets,
            cache_s=self.cache_s,
            grace_s=self.grace_s,
        )
        self._add(diff)
        by_id = {o.order_id: o for o in projected}
        self.confirm.update((order_id, by_id[order_id]) for order_id in confirm)
        since = self.since_seq
        closed = [o for o in projected if o.status != "open" and (since is None or o.last_seq > since)]
        self.recent = heapq.nlargest(self.budget, [*self.recent, *closed], key=lambda o: o.last_seq)
        kept = {o.order_id for o in self.recent}
        self.agreed = {i for i in self.agreed if i in kept} | {i for i in kept & ids if order_entity(i) in diff.checked}

    def candidates(self, named: Iterable[str]) -> list[str]:
        """Exchange-open orders the projection has never seen (``named``: the exchange-open ids it has) are findings
        now; returns the order ids to ask ``order_status/`` about (disagreements first, then recent closes)."""
        known = set(named)
        diff, _ = open_order_candidates(
            (),
            [o for o in self.exchange_open if o.order_id not in known],
            asked_at=self.asked_at,
            markets=self.markets,
            cache_s=self.cache_s,
            grace_s=self.grace_s,
        )
        self._add(diff)
        self.wanted = list(dict.fromkeys([*sorted(self.confirm), *(o.order_id for o in self.recent)]))[: self.budget]
        return self.wanted

    def statuses(self, statuses: Iterable[ExchangeOrderStatus]) -> Diff:
        rows = {o.order_id: o for o in self.recent} | self.confirm
        status_diff = diff_order_status({i: rows[i] for i in self.wanted if i in rows}, statuses)
        overlap = {order_entity(i) for i in self.agreed} & status_diff.checked
        self.findings.extend(status_diff.findings)
        self.checked |= status_diff.checked & self.watch
        self.counted += len(status_diff.checked) - len(overlap)
        return Diff(list(self.findings), set(self.checked), self.counted - len(self.checked))


# --- balances -------------------------------------------------------------------------------------------------------


def diff_balances(balances: Iterable[Balance]) -> Diff:
    diff = Diff()
    for b in balances:
        entity = f"balance:{b.currency.lower()}"
        diff.checked.add(entity)
        if b.available + b.reserved != b.total or b.total < 0 or b.reserved < 0:
            diff.findings.append(
                Finding(
                    "balance_inconsistent",
                    entity,
                    f"{b.currency}: total {b.total} != available {b.available} + reserved {b.reserved}"
                    if b.available + b.reserved != b.total
                    else f"{b.currency}: negative total or reserved ({b.total}, {b.reserved})",
                )
            )
    return diff


# --- what to append -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    open: tuple[Finding, ...]  # new discrepancies (not already open)
    resolve: tuple[DiscrepancyRow, ...]  # open reconciliation discrepancies checked again and found clean
    still_open: tuple[Finding, ...]  # found again, already open: nothing appended


def plan(diff: Diff, existing: Iterable[DiscrepancyRow]) -> Plan:
    """Compare this run's findings with the discrepancies already in the projection (any status)."""
    # Acknowledged ones are still found (not opened again) and still resolved when checked clean.
    open_by_id = {d.discrepancy_id: d for d in existing if d.status in ("open", "acknowledged")}
    found_ids = set()
    new: list[Finding] = []
    again: list[Finding] = []
    for finding in sorted(diff.findings, key=lambda f: f.id):
        if finding.id in found_ids:
            continue
        found_ids.add(finding.id)
        (again if finding.id in open_by_id else new).append(finding)
    resolve = [
        d
        for d_id, d in sorted(open_by_id.items())
        if d_id.startswith(RECON_PREFIX) and d_id not in found_ids and d.entity in diff.checked
    ]
    return Plan(tuple(new), tuple(resolve), tuple(again))
