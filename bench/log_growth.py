"""How much the permanent log grows from REST when nothing was missed: REST entries per websocket entry.

    .venv/bin/python bench/log_growth.py [--seconds 60] [--reconnect-every 15] [--rate 40]

The fake exchange delivers everything over the websocket (no frame withheld) and asks for a reconnect every
``--reconnect-every`` seconds (make-before-break: nothing is lost); ``tracker run`` (a child process, the real
command) backfills after each reconnect. Every REST entry appended is then a copy of a fact the websocket already
delivered, or a REST-only fact (order status snapshots). Prints the log's entries by source, the REST entries per
websocket entry, and the REST rows the walks found equal to logged facts (``corroborated``, not appended).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path

import trio

from tracker.fake.server import open_fake_exchange

MARKETS = ("btcusd", "ethusd", "btcusd-perp")


async def bench(seconds: float, reconnect_every: float, rate: float) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "growth.db"
        url = f"sqlite:///{db}"
        env = {**os.environ}
        done = await trio.run_process([sys.executable, "-m", "tracker", "db", "upgrade", "--db-url", url], env=env)
        assert done.returncode == 0
        async with open_fake_exchange(seed=11, markets=MARKETS, rate=rate) as fx:
            child_env = fx.tracker_env(os.environ, TRACKER_DB_URL=url, TRACKER_RECONCILE_INTERVAL="3600")
            async with trio.open_nursery() as nursery:
                command = [sys.executable, "-m", "tracker", "run"]
                process = await nursery.start(partial(trio.run_process, command, env=child_env, check=False))
                deadline = trio.current_time() + seconds
                while trio.current_time() < deadline - reconnect_every:
                    await trio.sleep(reconnect_every)
                    await fx.request_reconnect(close_after=1.0)
                await trio.sleep_until(deadline)
                process.send_signal(signal.SIGINT)
        # (the child committed everything before it exited)
        return report(db)


def report(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        by_source = Counter(dict(conn.execute("SELECT source, count(*) FROM event_log GROUP BY source").fetchall()))
        by_event = conn.execute(
            "SELECT event, count(*) FROM event_log WHERE source = 'rest' GROUP BY event ORDER BY 2 DESC"
        ).fetchall()
        kinds = conn.execute(
            "SELECT json_extract(payload, '$.type'), market, count(*) FROM event_log"
            " WHERE event = 'rest_user_transaction' GROUP BY 1, 2"
        ).fetchall()
        completed = [json.loads(p)["data"] for (p,) in conn.execute(
            "SELECT payload FROM event_log WHERE event = 'backfill_completed'"
        )]  # fmt: skip
    corroborated: Counter[str] = Counter()
    for data in completed:
        corroborated.update(data.get("corroborated") or {})
    ws, rest = by_source["ws"], by_source["rest"]
    print(f"log entries by source: {dict(by_source)}; backfills: {len(completed)}")
    print(f"REST entries appended by kind: {dict(by_event)}")
    print(f"user_transactions rows appended by (type, market): {kinds}")
    print(f"REST rows found equal to logged facts (corroborated, not appended): {dict(corroborated) or 'n/a'}")
    print(f"REST entries per websocket entry: {rest / ws:.3f}" if ws else "no websocket entries")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reconnect-every", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()
    return trio.run(bench, args.seconds, args.reconnect_every, args.rate)


if __name__ == "__main__":
    sys.exit(main())
