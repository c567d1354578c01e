"""How long a backfill of N missed fills takes against the fake exchange, and how many requests it makes.

    .venv/bin/python bench/backfill.py [--fills 10000] [--markets btcusd,ethusd,btcusd-perp] [--db-url URL]

The fake generates activity with nobody subscribed (every frame withheld: it exists only in the fake's REST state)
until it holds ``--fills`` fills, then one ``Backfiller.run`` (the start-up backfill of ``tracker run``: every market
and order source of ``account_order_data/``, ``trade_history/`` for perps, ``user_transactions/`` per market,
``position_settlement_transactions/``) appends everything to a fresh event log (SQLite file by default) through the
same code and rate limiter as the service (≤ 400 requests/s, ≤ 10,000 per 10 min). Then the projection catches up and
is checked against the fake's truth (fill count and fees). Prints requests per endpoint, wall time, and rates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import trio

from tracker.exchange.rest import BitstampClient
from tracker.fake.server import open_fake_exchange
from tracker.runtime.backfill import Backfiller, market_names
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore


async def bench(fills: int, markets: tuple[str, ...], db_url: str) -> int:
    upgrade(db_url)
    engine = open_engine(db_url)
    try:
        async with open_fake_exchange(seed=42, markets=markets) as fx:
            t0 = time.perf_counter()
            steps = 0
            while len(fx.model.state.fills) < fills:
                await fx.generate(200)
                steps += 200
            generated = time.perf_counter() - t0
            state = fx.model.state
            events = sum(len(v) for v in state.order_events.values())
            print(
                f"fake: {len(state.fills)} fills, {len(state.orders)} orders, {events} order events, "
                f"{len(state.transactions)} user_transactions rows, {len(state.trade_history)} perp trades, "
                f"{len(state.settlement_rows)} settlements ({steps} steps in {generated:.1f} s; none delivered)"
            )
            event_log = EventLog(engine)
            async with BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as client:
                api = PoliteApi(client)
                names = await market_names(api)
                backfiller = Backfiller(
                    api,
                    LogSink(event_log, trio.CapacityLimiter(1)),
                    account=str(fx.user_id),
                    markets=markets,
                    names=names,
                )
                t1 = time.perf_counter()
                report = await backfiller.run("bench")
                took = time.perf_counter() - t1
            requests = report.requests
            total = sum(requests.values())
            print(f"backfill: {took:.2f} s, {total} requests ({total / took:.0f}/s), limiter waited "
                  f"{api.limiter.waited_s:.2f} s, retries {api.stats.retries}")  # fmt: skip
            for endpoint, n in sorted(requests.items()):
                print(f"  {endpoint:<34} {n:>5} requests  {report.found[endpoint]:>6} new entries")
            print(f"  appended {sum(report.found.values())} entries ({sum(report.found.values()) / took:.0f}/s)")
            t2 = time.perf_counter()
            ProjectionStore(engine).catch_up(event_log)
            projected = time.perf_counter() - t2
            rows = ProjectionStore(engine).all_rows()
            fees = sum((f.fee for f in rows["fills"]), Decimal(0))
            want_fees = sum((f.fee for f in state.fills), Decimal(0))
            ok = len(rows["fills"]) == len(state.fills) and fees == want_fees
            print(
                f"projection: {projected:.2f} s; {len(rows['fills'])} fills (truth {len(state.fills)}), "
                f"fees {fees} (truth {want_fees}): {'OK' if ok else 'MISMATCH'}"
            )
            counts = Counter(f.source for f in rows["fills"])
            print(f"  fills by source: {dict(counts)}")
            return 0 if ok else 1
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--markets", default="btcusd,ethusd,btcusd-perp")
    parser.add_argument("--db-url", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    markets = tuple(m.strip() for m in args.markets.split(",") if m.strip())
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        return trio.run(bench, args.fills, markets, db_url)


if __name__ == "__main__":
    sys.exit(main())
