"""The ledger walks of one trade account: every movement of ``user_transactions/`` (no market), the balance
snapshots with their consistent cut, ``withdrawal-requests/`` and (main account only) ``crypto-transactions/``.

What each fact becomes in the log is ``tracker.bitstamp.ledger_entries`` (the ledger contract); the task that runs
these walks, when and how often, and what a failure means, is ``runtime/ledger_capture.py``.

- **The ledger** (``walk``): ``sort=asc`` with an inclusive ``since_id`` cursor (the row equal to the cursor is
  dropped: ``domain.gaps.advance``), a page of ``page_limit`` at a time (``since_id`` forces 1000 on the real
  exchange [D]), each page appended (one transaction) before the next is asked for. The cursor is read back from the
  log once (the highest row id of this trade account's ``rest_ledger_row`` entries, ``store/log_queries.py``); a
  first walk ever starts at id 0: the whole history. A ``kill -9`` re-walks at most one page, and the dedup keys
  make that idempotent.
- **A balance snapshot** (``snapshot``), the consistent cut of the contract: walk to the head, ask
  ``account_balances/``, walk again; only when the second walk found no new row is the snapshot appended, before
  anything else of this trade account (the walks and the snapshot hold ``lock``), so the balance it states is
  exactly the sum of the legs logged before it. A movement in between (the second walk found rows) is a race: tried
  again, ``SNAPSHOT_TRIES`` times at most, then given up for this round (counted, logged).
- **Withdrawal requests** (``withdrawal_requests``): ``limit`` and ``offset`` together [D: "Both limit and offset
  must be present"]; the whole list (``full``) or its first page. Each distinct row content is a fact (its key holds
  the content hash), so every status change is kept.
- **Crypto transactions** (``crypto_transactions``, main account only [D]): ``offset`` paging over the answer's
  three lists, to the end (a page that repeats the previous one ends it: a server ignoring ``offset``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import trio

from tracker.bitstamp import ledger_entries as le
from tracker.bitstamp.ledger_channels import MAIN, ledger_channel
from tracker.bitstamp.rest_observations import int_or_minus_one
from tracker.domain.gaps import advance, forget_passed
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi

log = logging.getLogger("tracker.ledger")

PAGE_LIMIT: Final = 1000  # the endpoints' maximum; since_id forces it on user_transactions/ anyway [D]
MAX_OFFSET: Final = 200_000  # the deepest offset the paged endpoints accept [D]
SNAPSHOT_TRIES: Final = 3
# Ledger types that move money in or out of the account: a round that finds one asks crypto-transactions/ again.
TRANSFER_TYPES: Final = frozenset({"0", "1"})


@dataclass
class LedgerStats:
    """What the ledger walks did in this run (the metrics task reads it: ``tracker_ledger_*``)."""

    rows: dict[str, int] = field(default_factory=dict)  # trade account -> ledger rows appended
    snapshots: int = 0
    races: int = 0  # snapshots given up after SNAPSHOT_TRIES raced movements
    walks: int = 0
    # Durations not yet taken by the metrics task (bounded: a run without metrics keeps only the newest).
    walk_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def take_walk_seconds(self) -> list[float]:
        taken = list(self.walk_seconds)
        self.walk_seconds.clear()
        return taken


@dataclass(frozen=True, slots=True)
class WalkResult:
    fresh: int  # rows past the cursor (new to this walk)
    appended: int  # of them, new to the log
    transfers: bool  # a deposit or withdrawal row among the fresh ones


class LedgerWalker:
    """The walks of trade account ``trade_account_id`` (``"0"``: the main account). One ledger walk or snapshot at a
    time (``lock``): the snapshot's consistent cut needs the walk to itself."""

    def __init__(
        self,
        api: PoliteApi,
        sink: LogSink,
        *,
        account: str,
        trade_account_id: str,
        wall: Callable[[], datetime],
        stats: LedgerStats | None = None,
        page_limit: int = PAGE_LIMIT,
        own_key: bool = False,
    ) -> None:
        self.api = api
        # The sub-account is asked with its own API key (``api`` holds its client): the key says which trade account
        # [D: "the account ... to which the used API key is bound"], no header is sent.
        self.own_key = own_key
        self.sink = sink
        self.account = account
        self.trade_account_id = trade_account_id
        self.wall = wall
        self.stats = stats or LedgerStats()
        self.page_limit = page_limit
        self.lock = trio.Lock()
        self.cursor: int | None = None  # the highest ledger row id in the log; read from it on the first walk
        self._cursor_read = False
        self.last_walk_at: datetime | None = None
        self.last_snapshot_at: datetime | None = None

    @property
    def header_account(self) -> str | None:
        """What the client sends as the trade account: nothing for the main account or a sub-account asked with its
        own key."""
        return None if self.trade_account_id == MAIN or self.own_key else self.trade_account_id

    @property
    def is_main(self) -> bool:
        return self.trade_account_id == MAIN

    # -- the ledger ------------------------------------------------------------------------------------------------

    async def walk(self) -> WalkResult:
        """Walk the ledger from the cursor to its head (takes ``lock``)."""
        async with self.lock:
            return await self._walk()

    async def _walk(self) -> WalkResult:
        started = trio.current_time()
        if not self._cursor_read:
            channel = ledger_channel(le.USER_TRANSACTIONS, self.trade_account_id)
            self.cursor = await self.sink.ledger_cursor(self.account, channel, le.REST_LEDGER_ROW)
            self._cursor_read = True
        cursor = self.cursor if self.cursor is not None else 0
        fresh = appended = 0
        transfers = False
        seen: set[int] = set()
        while True:
            page = await self.api.call(
                "ledger",
                self.api.client.user_transactions,
                None,
                trade_account=self.header_account,
                since_id=cursor,
                sort="asc",
                limit=self.page_limit,
            )
            rows: Sequence[Any] = page if isinstance(page, list) else []
            keys = [int_or_minus_one(r.get("id")) if isinstance(r, dict) else -1 for r in rows]
            step = advance(cursor, keys, limit=self.page_limit, seen=seen)
            now = self.wall()
            items = [
                le.entry_from_ledger_row(
                    rows[i], account=self.account, trade_account_id=self.trade_account_id, received_at=now
                )
                for i in step.fresh
            ]
            transfers = transfers or any(
                isinstance(rows[i], dict) and str(rows[i].get("type")).strip() in TRANSFER_TYPES for i in step.fresh
            )
            added, _ = await self.sink.append(items)
            fresh += len(step.fresh)
            appended += added
            if step.cursor is not None and step.cursor >= 0:
                cursor = step.cursor
                self.cursor = max(cursor, self.cursor or 0)
                forget_passed(seen, cursor)
            del rows, page, items
            if step.done:
                break
        if appended:
            self.stats.rows[self.trade_account_id] = self.stats.rows.get(self.trade_account_id, 0) + appended
        self.stats.walks += 1
        self.stats.walk_seconds.append(trio.current_time() - started)
        self.last_walk_at = self.wall()
        return WalkResult(fresh, appended, transfers)

    # -- balance snapshots -----------------------------------------------------------------------------------------

    async def snapshot(self) -> bool:
        """A balance snapshot with the consistent cut (module docstring); True when one was appended."""
        async with self.lock:
            await self._walk()  # to the head; after a race, the walk that saw it brought us there again
            for attempt in range(1, SNAPSHOT_TRIES + 1):
                answer = await self.api.call(
                    "account_balances", self.api.client.account_balances, trade_account=self.header_account
                )
                received_at = self.wall()
                after = await self._walk()
                if after.fresh:
                    log.info(
                        "balance snapshot of trade account %s raced %d ledger row(s) (try %d of %d)",
                        self.trade_account_id,
                        after.fresh,
                        attempt,
                        SNAPSHOT_TRIES,
                    )
                    continue
                item = le.entry_from_balances(
                    answer, account=self.account, trade_account_id=self.trade_account_id, received_at=received_at
                )
                appended, _ = await self.sink.append([item])
                if isinstance(item, QuarantineItem):
                    log.warning("account_balances/ of trade account %s: %s", self.trade_account_id, item.reason)
                    return False
                if not appended:
                    return False  # the same receive time as a logged snapshot (a frozen clock): nothing new
                self.stats.snapshots += 1
                self.last_snapshot_at = received_at
                return True
            self.stats.races += 1
            log.warning(
                "balance snapshot of trade account %s given up for this round: the ledger moved during each of %d"
                " tries (the next reconciliation tries again)",
                self.trade_account_id,
                SNAPSHOT_TRIES,
            )
            return False

    # -- withdrawal requests and crypto transactions ---------------------------------------------------------------

    async def withdrawal_requests(self, *, full: bool) -> int:
        """``withdrawal-requests/`` to the end (``full``) or its first page; the number of new facts."""
        offset = 0
        appended = 0
        previous: list[str] | None = None
        while True:
            page = await self.api.call(
                "withdrawal_requests",
                self.api.client.withdrawal_requests,
                trade_account=self.header_account,
                limit=self.page_limit,
                offset=offset,
            )
            rows: Sequence[Any] = page if isinstance(page, list) else []
            now = self.wall()
            items: list[NewEntry | QuarantineItem] = [
                le.entry_from_withdrawal_request(
                    r, account=self.account, trade_account_id=self.trade_account_id, received_at=now
                )
                for r in rows
            ]
            keys = [i.dedup_key if isinstance(i, NewEntry) else i.raw for i in items]
            appended += (await self.sink.append(items))[0]
            offset += len(rows)
            if not full or len(rows) < self.page_limit or keys == previous or offset + self.page_limit > MAX_OFFSET:
                return appended
            previous = keys

    async def crypto_transactions(self) -> int:
        """``crypto-transactions/`` to the end (main account only); the number of new facts."""
        if not self.is_main:
            return 0
        offset = 0
        appended = 0
        previous: list[str] | None = None
        while True:
            answer = await self.api.call(
                "crypto_transactions", self.api.client.crypto_transactions, limit=self.page_limit, offset=offset
            )
            now = self.wall()
            items: list[NewEntry | QuarantineItem] = []
            longest = 0
            lists = answer if isinstance(answer, dict) else {}
            for name in le.CRYPTO_LISTS:
                rows = lists.get(name)
                if not isinstance(rows, list):
                    continue  # absent (ripple_iou_transactions without include_ious) or not a list
                longest = max(longest, len(rows))
                items += [
                    le.entry_from_crypto_transaction(r, account=self.account, list_name=name, received_at=now)
                    for r in rows
                ]
            if not isinstance(answer, dict):
                items.append(
                    le.entry_from_crypto_transaction(answer, account=self.account, list_name="", received_at=now)
                )
            keys = [i.dedup_key if isinstance(i, NewEntry) else i.raw for i in items]
            appended += (await self.sink.append(items))[0]
            # limit and offset are documented per call, not per list [D]: paged on the longest list [G].
            offset += longest
            if longest < self.page_limit or keys == previous or offset + self.page_limit > MAX_OFFSET:
                return appended
            previous = keys
