"""What reading the event log would cost through a view over the compact layout of ``bench/log_layout.py``, on SQLite.

    .venv/bin/python bench/log_view.py [--events 100000] [--repeat 3]

A design study, as ``log_layout.py`` is (nothing in tracker uses this): the compact table is smaller on disk (issue 16's
1.6 x target), but every reader of ``event_log`` (``tracker verify``, rebuild, status, backfill, SQL users) would read
today's columns through a view that joins the names back, renders the hashes as hex and the time as text, takes
``prev_hash`` from the previous row and derives the dedup key. This measures that cost before anyone builds it.

1. Today's log is made as ``log_size.py`` makes it (model events, batches of 50); the same rows are copied into the
   compact table of ``log_layout.py`` ("compact+event_key", 8 KiB pages) in a second file, with the view
   ``event_log_v`` over it giving today's columns.
2. The view is checked first: every row of it equals today's row, column for column (else the figures mean nothing).
3. Then each read, today's table against the view, best of ``--repeat``, in this process (sqlite3, rows fetched to
   Python): the whole log in seq order with every column (the chain walk's and an export's read); the rebuild's
   columns; one account's 1,000 entries after a seq (backfill's and the tailing readers'); 1,000 entries by dedup key
   (the append's lookup: through the view, and as the compact layout would ask it, by its digest).

Deterministic rows, timed reads: run it on a quiet machine. Prints each read's time and the ratio view / today.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from log_layout import copy_log, ddl, sqlite_rows
from log_size import fill

GENESIS = "0" * 64
# Today's columns, in the table's order, from the compact row (``r``), its names and the previous row (``p``).
VIEW = f"""CREATE VIEW event_log_v AS SELECT
  r.seq, a.text AS account, s.text AS source, c.text AS channel, e.text AS event, m.text AS market,
  r.order_id, r.trade_id, r.position_id, r.event_id, r.pre_event_id, r.exchange_ts_us,
  strftime('%Y-%m-%d %H:%M:%S', r.received_at / 1000000, 'unixepoch') || '.' || printf('%06d', r.received_at % 1000000)
    AS received_at,
  k.text AS connection_id, r.payload,
  coalesce(r.dedup_key, 'ws:' || a.text || ':' || c.text || ':ev:' || r.event_id) AS dedup_key,
  CASE WHEN p.seq IS NULL THEN '{GENESIS}' ELSE lower(hex(p.hash)) END AS prev_hash, lower(hex(r.hash)) AS hash
FROM event_log r
JOIN names a ON a.id = r.account JOIN names s ON s.id = r.source JOIN names c ON c.id = r.channel
JOIN names e ON e.id = r.event LEFT JOIN names m ON m.id = r.market LEFT JOIN names k ON k.id = r.connection_id
LEFT JOIN event_log p ON p.seq = r.seq - 1"""
COLUMNS = (
    "seq, account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id,"
    " exchange_ts_us, received_at, connection_id, payload, dedup_key, prev_hash, hash"
)
REBUILD_COLUMNS = "seq, account, source, channel, event, market, received_at, connection_id, payload"


def build(events: int, tmp: Path) -> tuple[Path, Path]:
    today, compact = tmp / "today.db", tmp / "compact.db"
    fill(f"sqlite:///{today}", events)
    rows = sqlite_rows(today)
    with sqlite3.connect(compact) as db:
        db.executescript("PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF")
        for statement in ddl("sqlite", event_key=True):
            db.execute(statement)
        copy_log(rows, db, "?", store_event_key=True)
        db.execute(VIEW)
    return today, compact


def check_view(today: Path, compact: Path) -> int:
    """Every row of the view equals today's, column for column; returns how many rows."""
    with sqlite3.connect(today) as a, sqlite3.connect(compact) as b:
        left = a.execute(f"SELECT {COLUMNS} FROM event_log ORDER BY seq")
        right = b.execute(f"SELECT {COLUMNS} FROM event_log_v ORDER BY seq")
        count = 0
        while True:
            page, other = left.fetchmany(5_000), right.fetchmany(5_000)
            if page != other:
                at = next(i for i, (x, y) in enumerate(zip(page, other, strict=False)) if x != y)
                raise SystemExit(f"the view differs from today's table at row {count + at}: {page[at]} vs {other[at]}")
            if not page:
                return count
            count += len(page)


def best(repeat: int, read: Callable[[], int]) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = read()
        times.append(time.perf_counter() - started)
    return min(times), rows


def fetch_all(path: Path, sql: str, params: Sequence[Any] = ()) -> Callable[[], int]:
    def read() -> int:
        with sqlite3.connect(path) as db:
            cursor, count = db.execute(sql, params), 0
            while page := cursor.fetchmany(10_000):
                count += len(page)
            return count

    return read


def lookups(path: Path, sql: str, keys: Sequence[Any]) -> Callable[[], int]:
    def read() -> int:
        with sqlite3.connect(path) as db:
            return sum(len(db.execute(sql, key).fetchall()) for key in keys)

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        today, compact = build(args.events, Path(tmp))
        rows = check_view(today, compact)
        print(f"view checked: {rows:,} rows equal today's, every column")
        with sqlite3.connect(today) as db:
            account = db.execute("SELECT account FROM event_log LIMIT 1").fetchone()[0]
            middle = rows // 2
            keys = [row[0] for row in db.execute("SELECT dedup_key FROM event_log ORDER BY random() LIMIT 1000")]
        digests = [(hashlib.sha256(key.encode()).digest()[:16], key) for key in keys]
        reads: list[tuple[str, Callable[[], int], Callable[[], int]]] = [
            (
                "whole log, every column",
                fetch_all(today, f"SELECT {COLUMNS} FROM event_log ORDER BY seq"),
                fetch_all(compact, f"SELECT {COLUMNS} FROM event_log_v ORDER BY seq"),
            ),
            (
                "whole log, the rebuild's columns",
                fetch_all(today, f"SELECT {REBUILD_COLUMNS} FROM event_log ORDER BY seq"),
                fetch_all(compact, f"SELECT {REBUILD_COLUMNS} FROM event_log_v ORDER BY seq"),
            ),
            (
                "one account, 1,000 after a seq",
                fetch_all(
                    today,
                    f"SELECT {COLUMNS} FROM event_log WHERE account = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (account, middle),
                ),
                fetch_all(
                    compact,
                    f"SELECT {COLUMNS} FROM event_log_v WHERE account = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (account, middle),
                ),
            ),
            (
                "1,000 dedup keys, through the view",
                lookups(today, "SELECT seq FROM event_log WHERE dedup_key = ?", [(k,) for k in keys]),
                lookups(compact, "SELECT seq FROM event_log_v WHERE dedup_key = ?", [(k,) for k in keys[:50]]),
            ),
            (
                "1,000 dedup keys, by digest",
                lookups(today, "SELECT seq FROM event_log WHERE dedup_key = ?", [(k,) for k in keys]),
                lookups(
                    compact,
                    "SELECT seq FROM event_log_v WHERE seq = (SELECT seq FROM event_log WHERE dedup_digest = ?)"
                    " AND dedup_key = ?",
                    digests,
                ),
            ),
        ]
        print(f"\n{'read':<36} {'today':>9} {'view':>9} {'view/today':>11}")
        for name, old, new in reads:
            old_s, old_rows = best(args.repeat, old)
            new_s, new_rows = best(args.repeat, new)
            scale = 1.0
            if name.endswith("through the view"):
                scale = len(keys) / 50  # the view answers a key by a scan: 50 keys, scaled to 1,000
            note = "" if old_rows == new_rows * scale else f"  (rows {old_rows} vs {new_rows})"
            new_s *= scale
            print(f"{name:<36} {old_s * 1000:>7.1f}ms {new_s * 1000:>7.1f}ms {new_s / old_s:>10.2f}x{note}")


if __name__ == "__main__":
    main()
