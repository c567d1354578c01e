"""The soak in CI: ``bench/soak.py`` for 2 minutes (``TRACKER_SOAK_MINUTES`` for longer): ``tracker run`` as a child
against the fake at 1000 frames/s with a random fault every ~10 s (reconnect, drop, stall, pause, duplicates,
malformed, unknown event, token invalidation, HTTP 429); then zero lost, zero doubled, nothing different from the
fake's ground truth, a clean SIGINT exit, and the tracker's RSS flat.

Periodic reconciliation runs every 30 s (production: 300 s), so the 2 minutes see three of them under load.
Its memory is bounded by a page, not by the account's history: the fills are compared page by page during its walk
(the page's rows against the projected fills of that page's id range) and the orders a chunk at a time, keeping
findings, counts and the budget's order_status candidates only; a backfill appends each page as it arrives and keeps
counters, not lists (tests/test_backfill_memory.py measures both). The first reconciliation walks the whole history
once (no previous one to start from): the warm-up (45 s) ends after it.

RSS bound: from the end of the warm-up to the end, the tracker's resident memory may grow by at most 40 MB. What it
keeps is bounded by design (the writer's channel of 4096 items, projector batches of 5000 entries, the
200,000-sample latency deque, ~6 MB when full, SQLite page caches of 2 MB per connection, a page of 1000 REST rows per
walk), but the largest of those transients is only reached when a fault's window is large (a refused token request
and a backing-off reconnect: ~20,000-35,000 facts to backfill, then full projector batches): CPython keeps that
memory for reuse, so RSS rises in a few steps to a plateau (bench/soak.py, 10 minutes with reconciliation every 60 s:
130 MB after the warm-up, 160-169 MB from minute 3 to the end; before the paging it rose ~6 MB a minute, 98 -> 205
MB). A leak per frame shows: ~75,000 frames arrive after the warm-up, so keeping 0.5 KB per frame (one frame's
text) adds ~37 MB on top of those steps, and anything larger exceeds the bound alone; the 30-minute run
(``TRACKER_SOAK_MINUTES=30``) makes a smaller leak show.

Rules: loopback only, port 0, an absolute timeout; waits across processes poll the database under a deadline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import soak  # bench/soak.py

SOAK_MINUTES = float(os.environ.get("TRACKER_SOAK_MINUTES", "2"))
RSS_GROWTH_BOUND_MB = 40.0

pytestmark = pytest.mark.timeout(240 + SOAK_MINUTES * 60)


async def test_soak_zero_lost_zero_doubled_memory_flat(tmp_path: Path) -> None:
    lines: list[str] = []
    report = await soak.soak(
        minutes=SOAK_MINUTES,
        rate=1000,
        fault_every=10,
        seed=20261129,
        db_url=f"sqlite:///{tmp_path / 'soak.db'}",
        workdir=tmp_path,
        reconcile_every=30,
        warm_up=45,
        say=lines.append,
    )
    print("\n" + report.summary())
    context = "\n".join([*lines, *report.problems, (tmp_path / "tracker.log").read_text()[-3000:]])
    assert report.exit_code == 0, context
    # A floor for "under load", not a throughput measure: the fake's paced generator sleeps after each step and never
    # catches up, so its rate falls with the CPU it gets (41,726 frames in 2 minutes, 348/s of the 1000 asked, with
    # two CPU hogs beside three pytest workers on this 2-core machine: below the 417/s floor this had).
    assert report.fills > 1000 and report.frames_generated > 250 * 60 * SOAK_MINUTES, context
    # A fault every 10 s * U(0.5, 1.5): with this seed the 12th falls at 117 s of the 120, and the faults' own time (a
    # broadcast behind a full queue, a late wake-up on a loaded machine) can push it past the end; 5 a minute still
    # shows they ran (the 10th falls at 98 s).
    assert sum(report.faults.values()) >= 5 * SOAK_MINUTES, context
    assert (report.lost, report.doubled, report.wrong) == (0, 0, 0), context
    assert report.rss_growth_mb < RSS_GROWTH_BOUND_MB, context
