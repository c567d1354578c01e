"""``tracker rebuild`` in two processes (SQLite): the same rows as one process and as the incremental projector, or
(when two groups of markets share a row) a fallback to one process that is still the same; failures and Ctrl-C stop
both workers and leave the live tables and no scratch file.

Rules: SQLite files under tmp_path only (the parallel rebuild is SQLite's); real worker processes; no sleeps.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from array import array
from collections.abc import Iterator
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline import NOW, UID, order_frame, trade_frame
from sqlalchemy import Engine
from test_ledger_views import transfer_scenario
from test_projection_store import fake_entries

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.log import NewEntry
from tracker.errors import StoreError
from tracker.progress import Progress
from tracker.store import child_processes as children
from tracker.store import migrate
from tracker.store import rebuild as rebuild_module
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.projections import BatchResult, ProjectionStore
from tracker.store.rebuild import SCRATCH_SUFFIX, rebuild
from tracker.store.rebuild_parallel import (
    KeyLedger,
    Plan,
    SharedRows,
    WorkerSpec,
    _channel_counts,
    _split,
    build_parts,
    make_plan,
    plan_until,
    worker_environment,
)


def _open(path: Path, entries: list[NewEntry]) -> Engine:
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    if entries:
        EventLog(engine).append(entries)
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = _open(tmp_path / "tracker.db", fake_entries(21, 500))
    try:
        yield engine
    finally:
        engine.dispose()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if SCRATCH_SUFFIX in p.name and not p.name.endswith(".lock"))


def _copy(engine: Engine, path: Path) -> Engine:
    """A consistent copy of ``engine``'s database (``VACUUM INTO``: the WAL's pages included)."""
    with engine.connect() as conn:
        conn.connection.driver_connection.execute("VACUUM INTO ?", (str(path),))  # not in a transaction
    return open_engine(f"sqlite:///{path}")


def _rows_by(engine: Engine, path: Path, mode: str) -> tuple[dict[str, list[object]], int]:
    """The projection of a copy of ``engine``'s database: incremental, or rebuilt in one process or in parallel;
    and how many worker processes folded it."""
    other = _copy(engine, path)
    try:
        store = ProjectionStore(other)
        workers = 0
        if mode == "incremental":
            store.catch_up(EventLog(other), batch=97)
        else:
            result = rebuild(other, batch=113, parallel=mode == "parallel")
            assert result.checkpoint == EventLog(other).head()
            workers = result.workers
        return store.all_rows(), workers  # type: ignore[return-value]
    finally:
        other.dispose()


def test_parallel_equals_one_process_and_incremental(engine: Engine, tmp_path: Path) -> None:
    incremental, _ = _rows_by(engine, tmp_path / "incremental.db", "incremental")
    one, one_workers = _rows_by(engine, tmp_path / "one.db", "one")
    parallel, parallel_workers = _rows_by(engine, tmp_path / "parallel.db", "parallel")
    assert (one_workers, parallel_workers) == (1, 2)
    assert parallel == one == incremental
    assert parallel["positions"] and parallel["settlements"] and parallel["liquidations"]  # entries without market


def test_parallel_equals_one_process_and_incremental_on_both_backends(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the database itself, PostgreSQL included: there the workers read the log from the server, fold
    into scratch files in a temporary directory of their own, and the swap sends the rows with ``COPY``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if db_url.startswith("postgresql"):  # sessions far from UTC (the workers' too): the swap's COPY must not care
        db_url = db_url.replace("?options=", "?options=-cTimeZone%3DPacific%2FAuckland%20", 1)
    engine = open_engine(db_url)
    try:
        migrate.upgrade(engine)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "Pacific/Auckland"
        EventLog(engine).append(fake_entries(21, 500))
        store = ProjectionStore(engine)
        store.catch_up(EventLog(engine), batch=97)
        incremental = store.all_rows()
        batches: list[BatchResult] = []
        parallel = rebuild(engine, batch=113, parallel=True, on_batch=batches.append)
        assert parallel.workers == 2
        assert parallel.checkpoint == EventLog(engine).head() == store.load_checkpoint()
        assert parallel.events == sum(b.events for b in batches) == EventLog(engine).head()
        assert store.all_rows() == incremental
        assert incremental["positions"] and incremental["settlements"] and incremental["liquidations"]
        assert rebuild(engine, batch=113, parallel=False).workers == 1
        assert store.all_rows() == incremental
        assert [p for p in tmp_path.iterdir() if p.name.startswith("tracker-rebuild-")] == []
    finally:
        engine.dispose()


def test_ledger_entries_fold_in_group_0_and_the_parts_stay_independent(tmp_path: Path) -> None:
    """Ledger entries have no market and no position: they fold with group 0, and their tables' keys are touched by
    ledger events only, so the proof holds and the parallel rebuild equals one process and the incremental one."""
    market = fake_entries(21, 500)
    ledger = transfer_scenario()
    step = len(market) // len(ledger)
    mixed = [entry for i, item in enumerate(ledger) for entry in (*market[i * step : (i + 1) * step], item)]
    mixed += market[len(ledger) * step :]
    engine = _open(tmp_path / "ledger.db", mixed)
    try:
        incremental, _ = _rows_by(engine, tmp_path / "incremental.db", "incremental")
        one, _ = _rows_by(engine, tmp_path / "one.db", "one")
        parallel, workers = _rows_by(engine, tmp_path / "parallel.db", "parallel")
    finally:
        engine.dispose()
    assert workers == 2  # no shared key: no fallback to one process
    assert parallel == one == incremental
    assert parallel["ledger_legs"] and parallel["balance_checks"] and parallel["withdrawal_requests"]
    assert parallel["fills"] and parallel["positions"]


def test_parallel_rebuild_uses_two_workers_and_leaves_nothing(engine: Engine, tmp_path: Path) -> None:
    batches: list[BatchResult] = []
    result = rebuild(engine, parallel=True, batch=200, on_batch=batches.append)
    assert result.workers == 2
    assert result.events == EventLog(engine).head() == sum(b.events for b in batches)
    assert ProjectionStore(engine).load_checkpoint() == result.checkpoint == EventLog(engine).head()
    assert _leftovers(tmp_path) == []


def _entries(frames: list[dict[str, object]]) -> list[NewEntry]:
    entries = []
    for frame in frames:
        entry = entry_from_frame(json.dumps(frame), account="acc", received_at=NOW, connection_id="c")
        assert isinstance(entry, NewEntry)
        entries.append(entry)
    return entries


def _same_order_in_two_markets() -> list[NewEntry]:
    """Order 777 under btcusd and under ethusd: the two groups of markets share its row, so they cannot be folded
    apart."""
    frames = [
        order_frame("order_created", "777", market="btcusd", us=1_790_000_000_000_000, amount="2"),
        order_frame("order_changed", "777", market="ethusd", us=1_790_000_001_000_000, amount="1"),
        order_frame("order_created", "778", market="btcusd-perp", us=1_790_000_002_000_000),
        order_frame("order_deleted", "777", market="btcusd", us=1_790_000_003_000_000, amount="0"),
    ]
    return _entries(frames)


def test_shared_rows_fall_back_to_one_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = _open(tmp_path / "tracker.db", fake_entries(5, 60) + _same_order_in_two_markets())
    try:
        plan = make_plan(engine, min_entries=1)
        assert plan is not None
        assert ("btcusd" in plan.markets) != ("ethusd" in plan.markets)  # 777 is in both groups
        progress = Progress("rebuilding", total=EventLog(engine).head(), stream=io.StringIO())
        with caplog.at_level(logging.WARNING, logger="tracker.rebuild"):
            result = rebuild(
                engine,
                parallel=True,
                batch=10,
                on_batch=lambda b: progress.advance(b.events),
                on_restart=progress.restart,
            )
        assert result.workers == 1
        assert progress.done == result.events == EventLog(engine).head()  # counted once, from the restart
        assert "share rows" in caplog.text and "orders" in caplog.text
        incremental, _ = _rows_by(engine, tmp_path / "incremental.db", "incremental")
        assert ProjectionStore(engine).all_rows() == incremental
        assert _leftovers(tmp_path) == []
    finally:
        engine.dispose()


def test_counters_of_both_groups_are_merged(db_url: str) -> None:
    """Both groups count unknown events: the merged counter is the sum, its last_seq the later one (on PostgreSQL
    the swap merges the two scratch files' counters itself, before its ``COPY``)."""
    markets = ["btcusd", "ethusd", "btcusd-perp", "ethusd-perp"] * 3
    unknown = _entries(
        [
            {"event": "order_exploded", "channel": f"private-my_orders_{m}-{UID}", "data": {"n": i}}
            for i, m in enumerate(markets)
        ]
    )
    engine = open_engine(db_url)
    try:
        migrate.upgrade(engine)
        EventLog(engine).append(fake_entries(7, 60) + unknown)
        assert rebuild(engine, parallel=False).workers == 1
        one = ProjectionStore(engine).all_rows()
        assert rebuild(engine, parallel=True).workers == 2
        rows = ProjectionStore(engine).all_rows()
        assert rows == one
        counted = {row.name: (row.value, row.last_seq) for row in rows["counters"]}  # type: ignore[attr-defined]
        assert counted["unknown"] == (12, EventLog(engine).head())
    finally:
        engine.dispose()


def test_plan_needs_two_markets_and_enough_entries(tmp_path: Path) -> None:
    one_market = [e for e in fake_entries(3, 80) if e.market in (None, "btcusd")]
    engine = _open(tmp_path / "one.db", one_market)
    try:
        assert make_plan(engine, min_entries=1) is None
        assert rebuild(engine, parallel=True).workers == 1
    finally:
        engine.dispose()
    engine = _open(tmp_path / "two.db", fake_entries(3, 80))
    try:
        head = EventLog(engine).head()
        assert make_plan(engine, min_entries=head + 1) is None
        plan = make_plan(engine, min_entries=head)
        assert plan is not None and plan.until == head
        assert rebuild(engine).workers == 1  # the default threshold (100,000 entries) is far above this log
    finally:
        engine.dispose()


def test_a_long_logs_markets_are_counted_from_samples(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``4 * samples * span`` entries the counts come from ``samples`` runs of ``span`` seqs (a scan with a
    sort of every entry took 0.7-1.4 s at 1M while the workers waited): the runs' entries exactly, in about the
    whole log's proportions. Below, every entry is counted. The split may differ from the exact counts' (this log's
    markets are near equal), and the rebuild with it is the same."""
    head = EventLog(engine).head()
    with engine.connect() as conn:
        exact = dict(_channel_counts(conn, head, samples=head, span=1))  # 4 * head * 1 > head: counted
        assert sum(exact.values()) == head
        sampled = dict(_channel_counts(conn, head, samples=8, span=head // 40))
    assert sum(sampled.values()) == 8 * (head // 40)
    assert set(sampled) <= set(exact)
    assert max(abs(sampled[c] / sum(sampled.values()) - n / head) for c, n in exact.items() if c in sampled) < 0.1
    sampled_plan = plan_until(engine, head, samples=8, span=head // 40)
    assert sampled_plan is not None and sampled_plan.markets
    monkeypatch.setattr(rebuild_module, "plan_until", partial(plan_until, samples=8, span=head // 40))
    incremental, _ = _rows_by(engine, tmp_path / "incremental.db", "incremental")
    parallel, workers = _rows_by(engine, tmp_path / "parallel.db", "parallel")
    assert workers == 2 and parallel == incremental


def test_markets_sharing_a_position_go_in_one_group(tmp_path: Path) -> None:
    """Position 55 has fills under btcusd-perp and ethusd: the plan keeps the two markets together; with only those
    two markets there is nothing to split, so no parallel attempt is wasted."""
    shared = _entries(
        [
            trade_frame("9001", "8001", market="btcusd-perp", position_id="55"),
            trade_frame("9002", "8002", market="ethusd", position_id="55"),
        ]
    )
    two = [e for e in fake_entries(9, 80) if e.market in (None, "btcusd-perp", "ethusd")]
    engine = _open(tmp_path / "two.db", two + shared)
    try:
        assert make_plan(engine, min_entries=1) is None
        assert rebuild(engine, parallel=True).workers == 1
    finally:
        engine.dispose()
    engine = _open(tmp_path / "four.db", fake_entries(9, 80) + shared)
    try:
        plan = make_plan(engine, min_entries=1)
        assert plan is not None
        assert ("btcusd-perp" in plan.markets) == ("ethusd" in plan.markets)
        assert ("55" in plan.positions) == ("ethusd" in plan.markets)
        one, _ = _rows_by(engine, tmp_path / "one.db", "one")
        assert rebuild(engine, parallel=True).workers == 2
        assert ProjectionStore(engine).all_rows() == one
    finally:
        engine.dispose()


def test_ledger_stops_at_the_first_shared_key() -> None:
    ledger = KeyLedger()
    ledger.add(0, {"orders": array("q", [1, 2]).tobytes(), "fills": array("q", [7]).tobytes()})
    ledger.add(1, {"orders": array("q", [3]).tobytes(), "fills": array("q", [8]).tobytes()})
    ledger.add(0, {"orders": array("q", [1, 4]).tobytes()})  # a part may touch its own keys again
    with pytest.raises(SharedRows, match="1 in orders"):
        ledger.add(1, {"orders": array("q", [2, 9]).tobytes()})


def test_split_balances_the_groups() -> None:
    assert _split({"a": 10}) == ()
    assert _split({"a": 10, "b": 9}) == ("b",)
    assert _split({"a": 50, "b": 30, "c": 25, "d": 5}) == ("b", "c")  # 55 against 55


def test_workers_get_no_secrets_and_one_hash_seed() -> None:
    environ = {
        "PATH": "/bin",
        "BITSTAMP_API_KEY": "k",
        "BITSTAMP_API_SECRET": "s",
        "TRACKER_DB_URL": "postgresql://u:p@h/d",
    }
    env = worker_environment(environ, seed=7)
    assert env == {"PATH": "/bin", "PYTHONHASHSEED": "7"}


def test_a_failing_worker_is_a_store_error(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    spec = WorkerSpec(0, missing, str(tmp_path / "s.0"), Plan(10, ("btcusd",), frozenset()), 10)
    with pytest.raises(StoreError, match=r"a rebuild worker failed: StoreError: the SQLite database .*missing\.db"):
        build_parts([spec])


@pytest.mark.timeout(30)
def test_results_come_back_before_the_workers_exit() -> None:
    """``collect`` returns once every worker sent ``done`` (the rebuild's swap need not wait for their interpreters'
    teardown); ``stop`` then reaps them, killing one that is still at it. The child here never exits by itself: it
    blocks on its stdin, which stays open until ``stop``."""
    child = (
        "import os, sys\n"
        "from multiprocessing.connection import Connection\n"
        "Connection(os.dup(sys.stdout.fileno()), readable=False).send(('done', 42))\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    pipe = Connection(os.dup(process.stdout.fileno()), writable=False)
    process.stdout.close()
    try:
        assert children.collect([process], [pipe], lambda _, __: False, died="died", failed="failed") == [42]
        assert process.poll() is None  # still running: not waited for
    finally:
        children.stop([process], [pipe])
    assert process.returncode == -signal.SIGKILL


def test_interrupt_stops_the_workers_and_keeps_the_live_tables(engine: Engine, tmp_path: Path) -> None:
    store = ProjectionStore(engine)
    store.catch_up(EventLog(engine))
    before = store.all_rows()

    def interrupt(_: BatchResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine, parallel=True, batch=50, on_batch=interrupt)
    assert store.all_rows() == before
    assert _leftovers(tmp_path) == []
    assert rebuild(engine, parallel=True).workers == 2  # the lock was released


def test_the_workers_are_stopped_before_their_scratch_files_are_removed(engine: Engine, tmp_path: Path) -> None:
    """Stopped after the removal, a worker still starting (interrupted at the other's first batch) could make its
    scratch file after it and leave it behind. Workers that make their files and are interrupted: when they are
    stopped, the files are still there; after, none is."""
    plan = make_plan(engine, min_entries=1)
    assert plan is not None
    scratches = [tmp_path / f"tracker.db{SCRATCH_SUFFIX}.{part}" for part in range(2)]
    seen_at_close: list[bool] = []

    class Interrupted:
        def run(self, *_: object) -> None:
            for scratch in scratches:
                scratch.write_bytes(b"")  # as the workers' scratch files are made
            raise KeyboardInterrupt

        def close(self) -> None:
            seen_at_close.append(all(scratch.exists() for scratch in scratches))

    with pytest.raises(KeyboardInterrupt):
        rebuild_module._rebuild_in_parts(engine, tmp_path / "tracker.db", plan, Interrupted(), 50, None, None)  # type: ignore[arg-type]
    assert seen_at_close[:1] == [True]
    assert _leftovers(tmp_path) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(5, 80),
    moves=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["btcusd", "ethusd", "btcusd-perp"])), max_size=3),
)
def test_parallel_equals_one_process_for_random_logs(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int, moves: list[tuple[int, str]]
) -> None:
    """Random fake logs, some with entries moved to another market's channel (rows shared across groups: the
    parallel rebuild must notice and fall back); whichever path it takes, the rows equal one process's."""
    entries = fake_entries(seed, steps)
    for index, market in moves:
        entry = entries[index % len(entries)]
        if entry.market and entry.market != market:
            frame = json.loads(entry.payload)
            frame["channel"] = frame["channel"].replace(f"_{entry.market}-", f"_{market}-")
            moved = entry_from_frame(json.dumps(frame), account="acc", received_at=NOW, connection_id="m")
            if isinstance(moved, NewEntry):
                entries.append(moved)
    directory = tmp_path_factory.mktemp("random")
    engine = _open(directory / "tracker.db", entries)
    try:
        one, _ = _rows_by(engine, directory / "one.db", "one")
        parallel = rebuild(engine, parallel=True)
        assert ProjectionStore(engine).all_rows() == one
        assert parallel.checkpoint == EventLog(engine).head()
    finally:
        engine.dispose()
