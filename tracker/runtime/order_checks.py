"""Order-status checks: ``open_orders/`` against the projected open orders, and ``order_status/`` for the orders
where the two disagree (or that reconciliation asks about), each answer logged as a ``rest_order_status`` fact.

``open_orders/`` is cached by the exchange for about 10 s (docs/bitstamp.md §5), so only orders that did not change
in that time are judged (``open_order_candidates``); an order the exchange does not know (404.002) is reported as not
found, never as an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from tracker.bitstamp import rest_entries as re_
from tracker.bitstamp import rest_observations
from tracker.domain.backfill import BackfillReport
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.domain.reconcile import ExchangeOrderStatus, open_order_candidates
from tracker.domain.rows import OrderRow
from tracker.exchange.errors import ApiError
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi

NOT_FOUND_ORDER: Final = "404.002"


@dataclass(frozen=True, slots=True)
class OrderChecks:
    """Everything an order-status check needs: the API, where to log what it learns, and for whom."""

    api: PoliteApi
    sink: LogSink
    account: str
    markets: tuple[str, ...]
    wall: Callable[[], datetime]
    cache_s: float = 10.0  # open_orders/ is cached this long by the exchange
    max_status_checks: int = 200  # order_status calls per run at most

    async def check_open_orders(
        self, report: BackfillReport, projected: Sequence[OrderRow]
    ) -> list[ExchangeOrderStatus]:
        """``open_orders/`` against the projected open orders; ``order_status/`` for each disagreement older than the
        cache (logged as ``rest_order_status`` facts). Returns the statuses learned."""
        asked_at = self.wall()
        exchange_open = rest_observations.open_orders(await self.api.call("open_orders", self.api.client.open_orders))
        _, confirm = open_order_candidates(
            projected, exchange_open, asked_at=asked_at, markets=self.markets, cache_s=self.cache_s
        )
        return await self.ask_order_status(report, confirm[: self.max_status_checks])

    async def ask_order_status(self, report: BackfillReport, order_ids: Iterable[str]) -> list[ExchangeOrderStatus]:
        """``order_status/`` for each order: the answers are logged (one append) and returned as statuses; an order
        the exchange does not know is a status with ``found=False``."""
        statuses: list[ExchangeOrderStatus] = []
        items: list[NewEntry | QuarantineItem] = []
        for order_id in order_ids:
            try:
                answer = await self.api.call(
                    "order_status", self.api.client.order_status, order_id, omit_transactions=True
                )
            except ApiError as exc:
                if exc.code == NOT_FOUND_ORDER:
                    statuses.append(ExchangeOrderStatus(order_id, "", found=False))
                    continue
                raise
            item = re_.entry_from_order_status(answer, account=self.account, received_at=self.wall())
            items.append(item)
            if isinstance(item, NewEntry) and (status := rest_observations.exchange_status(item)) is not None:
                statuses.append(status)
        appended, _ = await self.sink.append(items)
        report.fetched["order_status"] += len(items)
        report.found["order_status"] += appended
        return statuses
