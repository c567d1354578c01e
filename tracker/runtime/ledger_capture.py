"""Ledger capture: one task per tracked trade account keeps its ledger, balances and transfers current in the log.

Task tree (under the recovery task's nursery, beside the backfill watcher and the periodic reconciler)::

    LedgerCapture.run
    ├── follow(trade account "0")      start round, then a round on every wake-up or every interval
    ├── follow(sub-account 1234) ...   one per TRACKER_SUBACCOUNTS id
    ├── after_backfills                every completed backfill (a gap handled) wakes every follower
    └── after_fills                    fills or settlements committed from the websocket wake every follower

A **start round** walks the ledger from its cursor (the whole history on a first run), the whole of
``withdrawal-requests/``, ``crypto-transactions/`` (main account only) and takes a balance snapshot (the consistent
cut: ``runtime/ledger_walk.py``). A **round** walks the ledger, reads the first page of ``withdrawal-requests/`` (status
changes) and, when the walk found a deposit or withdrawal row, ``crypto-transactions/``. Wake-ups are coalesced: many
triggers during a round make one more round. Rounds run at least every ``interval_s`` (``TRACKER_LEDGER_INTERVAL``,
default 5 s), so the ledger is current within 10 s. Each reconciliation (``reconcile``: the periodic reconciler and
``tracker reconcile``) takes a snapshot of every trade account and reads both transfer lists whole again.

Failure domains (``runtime/walk_health.py``): each walk of each trade account (``ledger:<id>``,
``account_balances:<id>``, ``withdrawal_requests:<id>``, ``crypto_transactions:0``) fails alone, recorded as a
``walk_failed`` entry and tried again after its back-off, or as ``endpoint_unavailable`` (API0003, 403.xxx, ...) and
skipped until restart. ``404.004`` ("Trade account not found for provided API key") makes the whole trade account
unavailable (``trade_account:<id>``). None of it stops live ingest, the backfill or the other trade accounts. Every
request goes through the run's one ``PoliteApi`` (the rate budget backfill uses).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

import trio

from tracker.domain import tracker_events as te
from tracker.domain.log import NewEntry
from tracker.domain.timeutil import utc_now
from tracker.errors import ExchangeError
from tracker.runtime.ledger_walk import PAGE_LIMIT, LedgerStats, LedgerWalker, WalkResult
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi
from tracker.runtime.walk_health import WalkHealth

log = logging.getLogger("tracker.ledger")
T = TypeVar("T")

LEDGER_CHANNEL: Final = "ledger"  # the channel of the ledger walks' tracker entries (walk_failed, ...)
UNKNOWN_TRADE_ACCOUNT: Final = "404.004"  # "Trade account not found for provided API key." [D: spec error list]
# The websocket channels whose frames move balances: a fill, a settlement, a liquidation (docs/bitstamp.md §4).
MOVEMENT_CHANNELS: Final = (
    "private-my_trades_",
    "private-my_settlements",
    "private-my_liquidations",
    "private-my_token_settlements",
)
FILL_POLL_S: Final = 1.0  # the log is asked about new fills at most this often (coalesced: a busy account walks 1/s)


def uuid4_hex() -> str:
    return uuid.uuid4().hex


class LedgerCapture:
    """The ledger walkers of one account's trade accounts, their failure domains and their triggers."""

    def __init__(
        self,
        api: PoliteApi,
        sink: LogSink,
        *,
        account: str,
        trade_accounts: Sequence[str] = ("0",),
        interval_s: float = 5.0,
        wall: Callable[[], datetime] = utc_now,
        uid: Callable[[], str] = uuid4_hex,
        rng: random.Random | None = None,
        page_limit: int = PAGE_LIMIT,
        own_apis: Mapping[str, PoliteApi] | None = None,
    ) -> None:
        """``own_apis``: the sub-accounts asked with their own API key, each through its own ``PoliteApi`` (sharing
        ``api``'s rate limiter); the other sub-accounts go through ``api`` with the ``X-Auth-Subaccount-Id``
        header."""
        if interval_s <= 0:
            raise ValueError("the ledger interval must be positive")
        self.api = api
        self.sink = sink
        self.account = account
        self.interval_s = interval_s
        self.wall = wall
        self.uid = uid
        self.stats = LedgerStats()
        self.health = WalkHealth(rng=rng)
        accounts = list(dict.fromkeys(["0", *trade_accounts]))
        own = {tai: a for tai, a in (own_apis or {}).items() if tai != "0"}
        self.walkers = {
            tai: LedgerWalker(
                own.get(tai, api),
                sink,
                account=account,
                trade_account_id=tai,
                wall=wall,
                stats=self.stats,
                page_limit=page_limit,
                own_key=tai in own,
            )
            for tai in accounts
        }
        self._wake = {tai: trio.Event() for tai in accounts}
        self.rounds = 0
        self.round_done = trio.Event()  # replaced after each round: wait on it for the next one

    # -- triggers ----------------------------------------------------------------------------------------------------

    def poke(self) -> None:
        """Ask every follower for a round (coalesced: a follower in a round makes one more after it)."""
        for event in self._wake.values():
            event.set()

    async def wait_rounds(self, n: int) -> None:
        """Wait until at least ``n`` rounds (of any trade account) are done (tests)."""
        while self.rounds < n:
            await self.round_done.wait()

    # -- failure domains ---------------------------------------------------------------------------------------------

    def _blocked(self, walker: LedgerWalker, key: str, now: float) -> bool:
        if f"trade_account:{walker.trade_account_id}" in self.health.unavailable or key in self.health.unavailable:
            return True
        due = self.health.due.get(key)
        return due is not None and due > now

    def available(self, walker: LedgerWalker) -> bool:
        return f"trade_account:{walker.trade_account_id}" not in self.health.unavailable

    async def _guard(
        self, walker: LedgerWalker, kind: str, fn: Callable[[], Awaitable[T]], errors: dict[str, str] | None = None
    ) -> T | None:
        """Run one walk of one trade account; an exchange failure is recorded and judged, never raised."""
        key = f"{kind}:{walker.trade_account_id}"
        now = trio.current_time()
        if self._blocked(walker, key, now):
            return None
        try:
            result = await fn()
        except ExchangeError as exc:
            if errors is not None:
                errors[key] = str(exc)
            if getattr(exc, "code", None) == UNKNOWN_TRADE_ACCOUNT:
                key = f"trade_account:{walker.trade_account_id}"
            outcome = self.health.failed(key, exc, now)
            await self.sink.append([self._entry(outcome.event, outcome.as_data())])
            if outcome.event == te.ENDPOINT_UNAVAILABLE:
                log.warning("ledger: %s is unavailable until restart: %s", key, exc)
            else:
                log.warning("ledger: %s failed: %s (retried in %.1f s)", key, exc, outcome.retry_in_s or 0)
            return None
        self.health.succeeded(key)
        return result

    def _entry(self, event: str, data: dict[str, Any]) -> NewEntry:
        return te.tracker_entry(
            account=self.account,
            event=event,
            data=data,
            received_at=self.wall(),
            uid=self.uid(),
            channel=LEDGER_CHANNEL,
        )

    def _due(self, kind: str, walker: LedgerWalker) -> bool:
        """A start-round walk that failed and whose retry is due."""
        at = self.health.due.get(f"{kind}:{walker.trade_account_id}")
        return at is not None and at <= trio.current_time()

    # -- rounds ------------------------------------------------------------------------------------------------------

    async def round(self, walker: LedgerWalker, *, start: bool = False) -> WalkResult | None:
        """One round of ``walker`` (a start round when ``start``: module docstring)."""
        result = await self._guard(walker, "ledger", walker.walk)
        full_requests = start or self._due("withdrawal_requests", walker)
        await self._guard(walker, "withdrawal_requests", partial(walker.withdrawal_requests, full=full_requests))
        if walker.is_main and (
            start or (result is not None and result.transfers) or self._due("crypto_transactions", walker)
        ):
            await self._guard(walker, "crypto_transactions", walker.crypto_transactions)
        if start or self._due("account_balances", walker):
            await self._guard(walker, "account_balances", walker.snapshot)
        self.rounds += 1
        done, self.round_done = self.round_done, trio.Event()
        done.set()
        return result

    async def reconcile(self) -> dict[str, Any]:
        """At a reconciliation: a balance snapshot of every trade account (its consistent cut walks the ledger to the
        head first), the whole of ``withdrawal-requests/`` and ``crypto-transactions/`` again (``tracker reconcile``
        has no start round). Returns what the ``reconciled`` entry records."""
        errors: dict[str, str] = {}
        snapshots: list[str] = []
        raced: list[str] = []
        for walker in self.walkers.values():
            if not self.available(walker):
                continue
            taken = await self._guard(walker, "account_balances", walker.snapshot, errors)
            if taken:
                snapshots.append(walker.trade_account_id)
            elif taken is False and f"account_balances:{walker.trade_account_id}" not in errors:
                raced.append(walker.trade_account_id)
            await self._guard(walker, "withdrawal_requests", partial(walker.withdrawal_requests, full=True), errors)
            if walker.is_main:
                await self._guard(walker, "crypto_transactions", walker.crypto_transactions, errors)
        return {
            "snapshots": snapshots,
            "snapshots_not_taken": raced,
            "errors": errors,
            "unavailable": sorted(self.health.unavailable),
            "cursors": {tai: w.cursor for tai, w in self.walkers.items()},
        }

    # -- the task ----------------------------------------------------------------------------------------------------

    async def _follow(self, walker: LedgerWalker) -> None:
        tai = walker.trade_account_id
        await self.round(walker, start=True)
        while self.available(walker):
            wake = self._wake[tai]
            with trio.move_on_after(self.interval_s):
                await wake.wait()
            self._wake[tai] = trio.Event()  # a trigger during the round below makes one more round
            await self.round(walker)
        log.warning("ledger: trade account %s is not followed until restart", tai)

    async def _after_backfills(self, completed: Callable[[], trio.Event]) -> None:
        while True:
            await completed().wait()
            self.poke()
            await trio.lowlevel.checkpoint()

    async def _after_fills(self, committed: Callable[[], trio.Event]) -> None:
        after, _ = await self.sink.ws_activity_after(self.account, 0, ())
        while True:
            await committed().wait()
            after, moved = await self.sink.ws_activity_after(self.account, after, MOVEMENT_CHANNELS)
            if moved:
                self.poke()
            await trio.sleep(FILL_POLL_S)  # spacing, not synchronisation: at most one look per FILL_POLL_S

    async def run(
        self,
        *,
        stop: trio.Event,
        backfill_completed: Callable[[], trio.Event] | None = None,
        committed: Callable[[], trio.Event] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow every trade account until ``stop`` (a round in progress is cancelled: its pages are in the log,
        the next run resumes from them). ``backfill_completed`` and ``committed`` return the event of the next
        completed backfill and of the writer's next commit."""
        async with trio.open_nursery() as nursery:
            for walker in self.walkers.values():
                nursery.start_soon(self._follow, walker)
            if backfill_completed is not None:
                nursery.start_soon(self._after_backfills, backfill_completed)
            if committed is not None:
                nursery.start_soon(self._after_fills, committed)
            task_status.started()
            await stop.wait()
            nursery.cancel_scope.cancel()
