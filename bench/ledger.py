"""The ledger's two costs: walking a long ledger into the log, and reading balances over a million ledger rows.

    .venv/bin/python bench/ledger.py [--rows 100000] [--legs 1000000]

1. **Walk.** The fake exchange holds ``--rows`` ledger rows on the main account (deposits and withdrawals with fees,
   booked straight into its books); the ledger capture's walk (``LedgerWalker.walk``: ``user_transactions/`` with
   ``sort=asc``, ``since_id`` and ``limit=1000``, every row appended to the SQLite log) takes them all, through the
   production rate budget (``PoliteApi``). Printed: seconds, rows/s, requests, and the bound the paging sets
   (``ceil(rows / 999) + 1``: ``since_id`` is inclusive, so a page of 1000 brings 999 new rows, and the last page
   proves the end). Baseline in the same process: the same pages fetched and parsed with nothing appended (the
   exchange and the HTTP client alone), so the ratio is what the log costs.
2. **Balances.** A SQLite log of ledger rows (an active trading account's mix: trades with three legs, 2 %
   deposits and withdrawals) until ``--legs`` legs, folded by the real projector; then ``SELECT * FROM v_balances``
   timed (target <= 1 s, issue 15), beside the raw ``sqlite3`` baseline of counting the legs per trade account and
   currency (the scan it does not do), and ``v_balance_checks``, ``v_transfers`` and a one-currency ``v_ledger``
   page.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from tracker.bitstamp import ledger_entries as le
from tracker.domain.log import NewEntry
from tracker.exchange.rest import BitstampClient
from tracker.fake import ledger as fake_ledger
from tracker.fake.server import open_fake_exchange
from tracker.runtime.ledger_walk import LedgerWalker
from tracker.runtime.log_sink import LogSink
from tracker.runtime.polite_api import PoliteApi
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore

PAGE = 1000


# -- 1. the walk ---------------------------------------------------------------------------------------------------


def book_rows(fx: Any, rows: int, seed: int) -> None:
    """``rows`` deposits and withdrawals (with fees) on the fake's main account, in its books directly."""
    rng = random.Random(seed)
    state, ids = fx.model.state, fx.model.ids
    main = state.main
    for i in range(rows):
        currency = ("btc", "usd", "eth")[i % 3]
        places = fake_ledger.places(currency)
        amount = Decimal(rng.randint(10**places, 10 ** (places + 3))).scaleb(-places)
        if i % 2 == 0:
            fake_ledger.book_row(state, main, ids.transaction(rng), ids.tick(rng), "0", {currency: amount}, rng)
        else:
            fee = Decimal(rng.randint(1, 100)).scaleb(-places)
            moves = {currency: -(amount / 2).quantize(Decimal(1).scaleb(-places))}
            fake_ledger.book_row(state, main, ids.transaction(rng), ids.tick(rng), 1, moves, rng, fee=fee)


async def walk(rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'walk.db'}"
        upgrade(url)
        async with open_fake_exchange(seed=5, markets=("btcusd", "ethusd"), subaccounts=()) as fx:
            book_rows(fx, rows, seed=5)
            served = len(fx.model.state.main.transactions)
            async with BitstampClient(fx.api_url, fx.api_key, fx.api_secret) as client:
                # Baseline: the same pages, fetched and parsed, nothing appended.
                started = time.perf_counter()
                cursor, pages, seen = 0, 0, 0
                while True:
                    page = await client.user_transactions(None, since_id=cursor, sort="asc", limit=PAGE)
                    pages += 1
                    fresh = [r for r in page if int(r["id"]) != cursor]
                    seen += len(fresh)
                    if not fresh:
                        break
                    cursor = int(fresh[-1]["id"])
                bare = time.perf_counter() - started

                engine = open_engine(url)
                try:
                    api = PoliteApi(client)
                    sink = LogSink(EventLog(engine), trio.CapacityLimiter(1))
                    walker = LedgerWalker(
                        api, sink, account=str(fx.user_id), trade_account_id="0", wall=lambda: datetime.now(UTC)
                    )
                    started = time.perf_counter()
                    result = await walker.walk()
                    seconds = time.perf_counter() - started
                    requests = api.stats.total
                    with engine.connect() as conn:
                        logged = conn.exec_driver_sql(
                            "SELECT count(*) FROM event_log WHERE event = ?", (le.REST_LEDGER_ROW,)
                        ).scalar_one()
                finally:
                    engine.dispose()
    assert seen == served and logged == served and result.appended == served, (seen, served, logged, result)
    bound = math.ceil(served / (PAGE - 1)) + 1
    print(f"walk: {served:,} ledger rows into the SQLite log")
    print(f"  tracker walk : {seconds:7.2f} s, {served / seconds:9,.0f} rows/s, {requests} requests (bound {bound})")
    print(f"  bare paging  : {bare:7.2f} s, {served / bare:9,.0f} rows/s, {pages} requests (no log)")
    print(f"  ratio        : {seconds / bare:.2f}x the bare paging (the log's share: appends, hashes, dedup)")
    return {"rows": served, "seconds": seconds, "requests": requests, "bare_seconds": bare}


# -- 2. balances over a million legs -----------------------------------------------------------------------------


def _row(i: int, rng: random.Random, at: datetime) -> tuple[dict[str, Any], dict[str, Decimal]]:
    """Ledger row ``i``: mostly trades (a base leg, a quote leg and a fee leg), every 50th a deposit and every 50th
    (offset 25) a withdrawal with a fee (an active trading account's mix); its ``user_transactions`` row and the
    balance change it makes."""
    text = at.strftime("%Y-%m-%d %H:%M:%S.%f")
    if i % 50 in (0, 25):
        currency = ("btc", "eth", "usd", "eur")[rng.randrange(4)]
        amount = Decimal(rng.randint(10**6, 10**9)).scaleb(-6)
        fee = Decimal(rng.randint(0, 1000)).scaleb(-6) if i % 50 == 25 else Decimal(0)
        signed = amount if i % 50 == 0 else -amount
        row = {"id": i, "datetime": text, "type": "0" if signed > 0 else "1", currency: f"{signed}", "fee": f"{fee}"}
        return row, {currency: signed - fee}
    base, quote = ("btc", "usd") if i % 2 else ("eth", "eur")
    amount = Decimal(rng.randint(1, 10**6)).scaleb(-8)
    price = Decimal(rng.randint(10**5, 10**7)).scaleb(-2)
    value = (amount * price).quantize(Decimal("0.01"))
    fee = (value * Decimal("0.003")).quantize(Decimal("0.01"))
    sign = 1 if rng.random() < 0.5 else -1
    row = {"id": i, "datetime": text, "type": "2", base: f"{amount * sign}", quote: f"{-value * sign}",
           f"{base}_{quote}": f"{price}", "fee": f"{fee}", "order_id": 10**9 + i}  # fmt: skip
    return row, {base: amount * sign, quote: -value * sign - fee}


def ledger_log(url: str, legs: int, seed: int) -> int:
    """A log of ledger rows (``_row``: about 2.97 legs each) over 3 trade accounts until ``legs`` legs, plus a balance
    snapshot per trade account every 50,000 rows; folded by the real projector. Returns the ledger rows."""
    rng = random.Random(seed)
    engine = open_engine(url)
    log = EventLog(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[NewEntry] = []
    balances: dict[tuple[str, str], Decimal] = {}
    made = i = 0
    try:
        while made < legs:
            i += 1
            tai = ("0", "1001", "1002")[i % 3]
            at = t0 + timedelta(seconds=i)
            row, moves = _row(i, rng, at)
            made += len(moves) + (1 if Decimal(str(row["fee"])) > 0 and row["type"] == "2" else 0)
            for currency, change in moves.items():
                balances[(tai, currency)] = balances.get((tai, currency), Decimal(0)) + change
            entry = le.entry_from_ledger_row(row, account="bench", trade_account_id=tai, received_at=at)
            assert isinstance(entry, NewEntry)
            batch.append(entry)
            if i % 50_000 == 0:
                for t in ("0", "1001", "1002"):
                    answer = [
                        {"currency": c, "total": f"{balances.get((t, c), Decimal(0))}", "available": "0",
                         "reserved": "0"}
                        for c in ("btc", "eth", "usd", "eur")
                    ]  # fmt: skip
                    snap = le.entry_from_balances(answer, account="bench", trade_account_id=t, received_at=at)
                    assert isinstance(snap, NewEntry)
                    batch.append(snap)
            if len(batch) >= 5000:
                log.append(batch)
                batch = []
        if batch:
            log.append(batch)
        started = time.perf_counter()
        ProjectionStore(engine).catch_up(log)
        print(f"  folded {i:,} ledger rows (~{made:,} legs) in {time.perf_counter() - started:.1f} s")
    finally:
        engine.dispose()
    return i


def timed(conn: sqlite3.Connection, sql: str, repeat: int = 5) -> tuple[float, int]:
    best, count = math.inf, 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = len(conn.execute(sql).fetchall())
        best = min(best, time.perf_counter() - started)
    return best, count


def balances(legs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        print(f"balances: building a log of {legs:,} ledger legs (SQLite)")
        ledger_log(url, legs, seed=7)
        conn = sqlite3.connect(path)  # plain sqlite3: what a user's SQL client sees
        try:
            n_legs = conn.execute("SELECT count(*) FROM v_ledger").fetchone()[0]
            v_balances, n = timed(conn, "SELECT * FROM v_balances")
            baseline, _ = timed(conn, "SELECT trade_account_id, currency, count(*) FROM proj_ledger_legs GROUP BY 1, 2")
            checks, n_checks = timed(conn, "SELECT * FROM v_balance_checks")
            differing = conn.execute("SELECT count(*) FROM v_balance_checks WHERE status != 'agrees'").fetchone()[0]
            transfers, n_transfers = timed(conn, "SELECT * FROM v_transfers", repeat=2)
            one = "trade_account_id = '1001' AND currency = 'btc'"
            page, _ = timed(conn, f"SELECT * FROM v_ledger WHERE {one} ORDER BY seq DESC LIMIT 100")
        finally:
            conn.close()
    print(f"  v_ledger rows                  : {n_legs:,}")
    print(f"  SELECT * FROM v_balances       : {v_balances * 1000:8.2f} ms ({n} rows; target <= 1000 ms)")
    print(f"  baseline: legs counted per key : {baseline * 1000:8.2f} ms (the scan a sum over legs would need)")
    print(f"  SELECT * FROM v_balance_checks : {checks * 1000:8.2f} ms ({n_checks} rows, {differing} differ)")
    print(f"  SELECT * FROM v_transfers      : {transfers * 1000:8.2f} ms ({n_transfers:,} rows)")
    print(f"  v_ledger, one currency, 100    : {page * 1000:8.2f} ms")
    return {"legs": n_legs, "v_balances_s": v_balances, "count_legs_s": baseline, "checks_s": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="ledger rows to walk (default 100,000)")
    parser.add_argument("--legs", type=int, default=1_000_000, help="ledger legs for v_balances (default 1,000,000)")
    args = parser.parse_args(argv)
    trio.run(walk, args.rows)
    balances(args.legs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
