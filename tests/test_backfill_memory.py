"""Memory of a backfill and of a reconciliation: bounded by a page, not by the walk's size or the account's history.

A stub client serves a synthetic ``user_transactions/btcusd/`` history of N fills (rows made on demand, page by page,
so the stub itself holds nothing that grows with N); the other endpoints answer with nothing. Measured with
``tracemalloc`` (the peak of Python allocations during one call, which is what RSS follows; CPython's allocator may
keep freed arenas, so RSS after a large walk need not drop, but it cannot rise above that peak).

- a backfill of 5x more facts peaks at about the same memory (each page appended as it arrives; counters, cursors
  and one page of keys kept);
- an incremental reconciliation after a history of N fills loads, per page of the exchange's rows, only the projected
  fills of that page's id range: never more than a page, whatever N is.

``TRACKER_MEMORY_SIZES=10000,50000`` runs them at other sizes (and prints the peaks: the figures in the report).

Rules: no network (the client is a stub), a SQLite file per test, an absolute timeout.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from tracker.domain.backfill import BackfillOptions
from tracker.runtime.backfill import Backfiller
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi, RateLimiter
from tracker.runtime.reconciler import ProjectionReader, Reconciler
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore

pytestmark = pytest.mark.timeout(300)

SIZES = tuple(int(n) for n in os.environ.get("TRACKER_MEMORY_SIZES", "4000,20000").split(","))
PAGE = 1000
T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
ACCOUNT = "314159"


class StubClient:
    """``user_transactions/`` of ``n`` btcusd fills (ids 1001..1000+n, one a second), built per page on demand."""

    def __init__(self, n: int) -> None:
        self.n = n

    @staticmethod
    def row(tid: int) -> dict[str, Any]:
        at = T0 + timedelta(seconds=tid - 1000)
        return {
            "id": tid,
            "datetime": at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "type": "2",
            "fee": "0.05",
            "order_id": 9_000_000 + tid,
            "btc": "0.00100000" if tid % 2 else "-0.00100000",
            "usd": "-30.00" if tid % 2 else "30.00",
            "btc_usd": "30000.00",
            "eur": "0.0",
        }

    async def user_transactions(self, market: str, *, since_id: int, sort: str, limit: int) -> list[dict[str, Any]]:
        assert sort == "asc"
        first = max(since_id, 1001)
        last = min(first + limit - 1, 1000 + self.n)
        return [self.row(tid) for tid in range(first, last + 1)]

    async def account_order_data(self, source: str, **params: Any) -> list[Any]:
        return []

    async def open_orders(self) -> list[Any]:
        return []

    async def account_balances(self) -> list[Any]:
        return []


def make_backfiller(db_url: str, n: int) -> tuple[Backfiller, ProjectionReader]:
    upgrade(db_url)
    engine = open_engine(db_url)
    event_log = EventLog(engine)
    one_writer = trio.CapacityLimiter(1)
    api = PoliteApi(StubClient(n), RateLimiter(per_second=10**6, per_window=10**7))  # type: ignore[arg-type]
    backfiller = Backfiller(
        api,
        LogSink(event_log, one_writer),
        account=ACCOUNT,
        markets=("btcusd",),
        options=BackfillOptions(page_limit=PAGE),
        wall=lambda: T0 + timedelta(days=1),
    )
    return backfiller, ProjectionReader(ProjectionStore(engine), event_log, one_writer)


@contextmanager
def traced() -> Iterator[list[int]]:
    """Yields a list that holds the peak of traced allocations (bytes) once the block is done."""
    out: list[int] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        yield out
        out.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


async def backfill_peak(tmp_path: Path, n: int) -> int:
    backfiller, reader = make_backfiller(f"sqlite:///{tmp_path / f'backfill-{n}.db'}", n)
    with traced() as peak:
        report = await backfiller.run("test")
    assert report.found["user_transactions"] == n and not report.errors
    reader.store.engine.dispose()
    return peak[0]


async def test_backfill_peak_memory_does_not_grow_with_the_walk(tmp_path: Path) -> None:
    small, large = SIZES
    peaks = {n: await backfill_peak(tmp_path, n) for n in (small, large)}
    print({n: f"{p / 2**20:.1f} MiB" for n, p in peaks.items()})
    # 5x the facts: the same pages, more of them. A walk that kept its rows would peak ~5x higher.
    assert peaks[large] < peaks[small] * 1.5 + 2 * 2**20, peaks


async def test_incremental_reconciliation_loads_a_page_per_step_not_the_history(tmp_path: Path) -> None:
    small, large = SIZES
    loaded: dict[int, list[int]] = {}
    peaks: dict[int, int] = {}
    for n in (small, large):
        client_n = n
        backfiller, reader = make_backfiller(f"sqlite:///{tmp_path / f'reconcile-{n}.db'}", client_n)
        reconciler = Reconciler(backfiller, reader)
        first = await reconciler.run_once()  # walks the whole history (nothing reconciled before)
        assert first.findings == [] and first.checked == n
        backfiller.api.client.n = n + PAGE  # type: ignore[attr-defined]  # a page of new fills since
        calls: list[int] = []
        fills_between = reader.fills_between

        async def counting(*args: Any, _inner: Any = fills_between, _calls: list[int] = calls, **kw: Any) -> Any:
            rows = await _inner(*args, **kw)
            _calls.append(len(rows))
            return rows

        reader.fills_between = counting  # type: ignore[method-assign]
        with traced() as peak:
            again = await reconciler.run_once()
        assert again.findings == [] and again.errors == {}
        # The walk starts at the previous run's cursor: that row again plus the new page.
        assert again.checked == PAGE + 1
        loaded[n], peaks[n] = calls, peak[0]
        reader.store.engine.dispose()
    print({n: (loaded[n], f"{peaks[n] / 2**20:.1f} MiB") for n in loaded})
    for n, calls in loaded.items():
        assert calls and max(calls) <= PAGE + 1, (n, calls)  # capped by a page, whatever the history
    assert peaks[large] < peaks[small] * 1.5 + 2 * 2**20, peaks
