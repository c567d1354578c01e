"""Several accounts in one process (``run_accounts``, ``append_combiner.py``).

- ``split_result``: one server append's outcome split back among the batches it took (hypothesis: the parts put
  together are the whole, each part's seqs are its own entries').
- ``AppendCombiner`` on PostgreSQL: writers appending at once get their own exact results from combined appends (the
  log holds every entry once, in each writer's order, chained); what it hands back to the writers (a conflict, an
  unfit entry, a batch too big); a failure is every waiting batch's failure.
- ``run_accounts`` end to end over real sockets, on both backends: two fake exchanges (two accounts) tracked by one
  process into one log; every delivered frame committed once under its own account; the chain holds; on PostgreSQL
  the accounts' appends went through the combiner.
- log lines carry ``account=N``.

Loopback only, port 0; every test has an absolute timeout; waits are on the writers' committed events.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc
from store_helpers import entry, open_log, walk
from test_ingest_e2e import FAST, record_deliveries
from test_pg_append import _entries as pg_append_entries

from tracker.config import ConfigError, Settings
from tracker.domain.chain import GENESIS, Anchor
from tracker.domain.log import NewEntry
from tracker.fake.model import Emission
from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.logs import account_context, setup_logging
from tracker.metrics import Metrics
from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.app import run_accounts
from tracker.runtime.append_combiner import AppendCombiner
from tracker.runtime.lease import WriteGate
from tracker.runtime.service import Services
from tracker.store.engine import Engine, open_engine
from tracker.store.event_log import SERVER_APPEND_MAX, AppendResult, EventLog, split_result
from tracker.store.lease import account_lease_for
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(60)

MARKETS = ("btcusd", "ethusd")


# -------------------------------------------------------------------------------------------------- split_result


@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=8))
def test_split_result_gives_each_batch_its_own_part(batches: list[list[bool]]) -> None:
    """Each bool: whether that entry was appended (else a duplicate)."""
    flat = [appended for batch in batches for appended in batch]
    positions = tuple(i + 1 for i, appended in enumerate(flat) if appended)
    seqs = tuple(100 + n for n in range(len(positions)))
    head = Anchor(seqs[-1] if seqs else 99, "h")
    whole = AppendResult(seqs, len(flat) - len(positions), 0, 0, head, positions)
    parts = split_result(whole, [len(batch) for batch in batches])
    assert tuple(seq for part in parts for seq in part.appended) == seqs
    for batch, part in zip(batches, parts, strict=True):
        assert len(part.appended) == sum(batch)
        assert part.duplicates == len(batch) - sum(batch)
        assert part.positions == tuple(i + 1 for i, appended in enumerate(batch) if appended)
        assert part.head == head and part.conflicts == part.quarantined == 0


def test_split_result_refuses_what_it_cannot_split() -> None:
    head = Anchor(0, GENESIS)
    with pytest.raises(ValueError, match="server append"):
        split_result(AppendResult((1,), 0, 0, 0, head), [1])  # no positions: the client's append
    with pytest.raises(ValueError, match="server append"):
        split_result(AppendResult((1,), 0, 1, 1, head, (1,)), [2])
    with pytest.raises(ValueError, match="covers 1 entries, not 2"):
        split_result(AppendResult((1,), 0, 0, 0, head, (1,)), [2])


# ------------------------------------------------------------------------------------------------ AppendCombiner


def _batches(account: str, first: int, count: int, size: int) -> list[list[NewEntry]]:
    numbers = iter(range(first, first + count * size))
    return [
        [entry(n, account=account, key=f"ws:{account}:order_created:{n}") for n in (next(numbers) for _ in range(size))]
        for _ in range(count)
    ]


@pytest.mark.postgres
async def test_writers_at_once_get_their_own_results(pg_log: EventLog) -> None:
    combiner = AppendCombiner(pg_log)
    writers = {str(1000 + w): _batches(str(1000 + w), 1 + 1000 * w, 6, 1 + w % 3) for w in range(8)}
    results: dict[str, list[AppendResult | None]] = {account: [] for account in writers}

    async def writer(account: str, batches: list[list[NewEntry]]) -> None:
        for batch in batches:
            results[account].append(await combiner.append(batch))

    async with trio.open_nursery() as nursery:
        for account, batches in writers.items():
            nursery.start_soon(writer, account, batches)
    assert combiner.stats.batches == 48 and combiner.stats.appends < 48  # combined
    rows = [e for page in pg_log.iter_after(0) for e in page]
    assert walk(pg_log).head == len(rows) == sum(len(b) for bs in writers.values() for b in bs)
    seq_of = {row.dedup_key: row.seq for row in rows}
    for account, batches in writers.items():
        for batch, result in zip(batches, results[account], strict=True):
            assert result is not None
            assert result.appended == tuple(seq_of[e.dedup_key] for e in batch)  # its own entries' seqs
            assert result.duplicates == 0
        mine = [row.seq for row in rows if row.account == account]
        assert mine == sorted(mine)  # each writer's entries in its order

    # A writer's batch again (its commit's answer lost, say): duplicates, its own.
    again = writers["1001"][0]
    others = _batches("1002", 90_000, 1, 2)[0]
    both = await _at_once(combiner, [again, others])
    assert (both[0].appended, both[0].duplicates) == ((), len(again))
    assert len(both[1].appended) == 2 and both[1].duplicates == 0


async def _at_once(combiner: AppendCombiner, batches: Sequence[list[NewEntry]]) -> list[AppendResult]:
    out = await _in_one_turn(combiner, batches)
    results = [result for result in out if isinstance(result, AppendResult)]
    assert len(results) == len(out)
    return results


async def _in_one_turn(
    combiner: AppendCombiner, batches: Sequence[list[NewEntry]]
) -> list[AppendResult | BaseException | None]:
    """The batches handed in by writers at once while an append runs, then appended in one turn: each writer's
    result (or what it raised)."""
    out: list[AppendResult | BaseException | None] = [None] * len(batches)

    async def one(i: int) -> None:
        try:
            out[i] = await combiner.append(batches[i])
        except Exception as error:
            out[i] = error

    combiner._busy = True  # an append under way: the writers queue
    async with trio.open_nursery() as nursery:
        for i in range(len(batches)):
            nursery.start_soon(one, i)
        await trio.testing.wait_all_tasks_blocked()
        assert len(combiner._queue) == len(batches)
        combiner._busy = False
        await combiner._turn()  # as the append under way would end: the next turn takes them all
    return out


@pytest.mark.postgres
async def test_what_it_hands_back_to_the_writers(pg_log: EventLog) -> None:
    combiner = AppendCombiner(pg_log)
    assert (await combiner.append([entry(1)])).appended == (1,)  # type: ignore[union-attr]
    changed = entry(1, payload='{"data":{"id":1,"amount_str":"0.2"}}')  # same key, other text: a conflict
    results = await _in_one_turn(combiner, [[changed], [entry(2)]])
    assert results == [None, None]  # refused together: each writer appends its own (the thread quarantines it)
    assert await combiner.append([entry(3, payload="bad\x00text")]) is None  # unfit
    assert await combiner.append([entry(n) for n in range(10, 11 + SERVER_APPEND_MAX)]) is None  # too big
    gate = WriteGate()
    gate.close()
    assert await combiner.loop_append(gate)([entry(4)]) is None  # a closed gate: the writer's thread waits for it
    assert combiner.stats.handed_back == 4
    assert walk(pg_log).head == 1


@pytest.mark.postgres
async def test_a_failure_is_every_waiting_batchs_failure(pg_log: EventLog) -> None:
    combiner = AppendCombiner(pg_log)
    await combiner.append([entry(1)])
    [kept] = pg_log._held._kept
    backend = kept.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
    with pg_log.engine.connect() as other:  # the combined log's connection ends, from outside
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})").scalar_one()
    raised = await _in_one_turn(combiner, [[entry(2)], [entry(3, account="1002", key="ws:1002:3")]])
    assert all(isinstance(error, exc.DBAPIError) for error in raised)
    # The next append checks a fresh connection out (in a thread) and goes on.
    assert (await combiner.append([entry(2)])).appended == (2,)  # type: ignore[union-attr]
    assert walk(pg_log).head == 2


# -------------------------------------------------------------------------------------------------- run_accounts


def _settings(fx: FakeExchange, db_url: str) -> Settings:
    return fx.settings(db_url, markets=MARKETS)


async def start_accounts(
    nursery: trio.Nursery, accounts: Sequence[Settings], engine: Engine, stop: trio.Event, **options: Any
) -> list[AccountState]:
    """``run_accounts`` started in ``nursery`` as the tests run it (no signal handling, short ingest intervals), until
    ``stop``; its accounts' states once each runs or is down."""
    states: list[AccountState] = await nursery.start(
        partial(run_accounts, accounts, engine, stop=stop, handle_signals=False, ingest_options=FAST, **options)
    )
    return states


def _running(states: Sequence[AccountState]) -> list[Services]:
    services = [state.services for state in states]
    assert None not in services, [state.down for state in states]
    return [one for one in services if one is not None]


def _payloads(log: EventLog, account: int) -> list[str]:
    return [e.payload for page in log.iter_after(0) for e in page if e.source == "ws" and e.account == str(account)]


async def test_one_process_tracks_every_account_exactly(db_url: str) -> None:
    upgrade(db_url)
    engine = open_engine(db_url)
    try:
        async with (
            open_fake_exchange(seed=3, markets=MARKETS, user_id=710001, api_key="keyaccountone") as one,
            open_fake_exchange(seed=4, markets=MARKETS, user_id=710002, api_key="keyaccounttwo") as two,
        ):
            fakes = (one, two)
            delivered = [record_deliveries(fx) for fx in fakes]
            stop = trio.Event()
            metrics = Metrics()
            async with trio.open_nursery() as nursery:
                states = await start_accounts(
                    nursery, [_settings(fx, db_url) for fx in fakes], engine, stop, metrics=metrics
                )
                services = _running(states)
                for fx in fakes:
                    await fx.wait_subscribed(fx.private_channels())
                for _ in range(5):
                    for fx in fakes:
                        await fx.generate(8)
                log = EventLog(engine)
                for fx, sent, service in zip(fakes, delivered, services, strict=True):
                    while not set(sent) <= set(_payloads(log, fx.user_id)):
                        await service.writer_stats.committed.wait()
                stop.set()
        for fx, sent in zip(fakes, delivered, strict=True):
            stored = _payloads(log, fx.user_id)
            assert sent and len(stored) == len(set(stored)) and set(stored) == set(sent)
        assert walk(log).head == log.head()
        # One set of metrics for the process: both accounts' frames and commits (the task's last round at the stop).
        frames = sum(len(_payloads(log, fx.user_id)) for fx in fakes)
        assert _total(metrics, "tracker_frames_ingested_total") == frames
        # Every account's commits (the writers' last ones, after the stop, may come after the task's last round).
        commits = [sum(s.writer_stats.latency_counts) for s in services]
        assert max(commits) < _total(metrics, "tracker_commit_latency_seconds_count") <= sum(commits)
        # The accounts' live appends went through one combiner (on either backend). How many batches the writers made
        # of the 80 frames depends on the machine's load (a loaded writer takes more frames a batch): at least one
        # each.
        [combiner] = {id(s.combiner): s.combiner for s in services}.values()
        assert combiner is not None and combiner.stats.batches >= len(fakes) and combiner.stats.appends >= 1
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_a_standby_account_holds_the_others_up_in_nothing(pg_url: str) -> None:
    """Account 1's lease is held by another process: account 2 starts and commits meanwhile, the projector runs;
    account 1 takes over when the lease is free."""
    upgrade(pg_url)
    engine = open_engine(pg_url)
    holder = open_engine(pg_url)
    try:
        async with (
            open_fake_exchange(seed=5, markets=MARKETS, user_id=710011, api_key="keystandbyone") as one,
            open_fake_exchange(seed=6, markets=MARKETS, user_id=710012, api_key="keystandbytwo") as two,
        ):
            elsewhere = account_lease_for(holder, "710011")
            assert elsewhere is not None and elsewhere.try_acquire()
            stop = trio.Event()
            reported: list[list[AccountState]] = []

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                reported.append(
                    await run_accounts(
                        [_settings(fx, pg_url) for fx in (one, two)],
                        engine,
                        stop=stop,
                        handle_signals=False,
                        ingest_options=FAST,
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await two.wait_subscribed(two.private_channels())  # account 2 runs while account 1 waits
                assert not one.hub.conns  # the standby connects nowhere
                await two.generate(5)
                await trio.to_thread.run_sync(elsewhere.release)  # the other process stops
                await one.wait_subscribed(one.private_channels())  # account 1 takes over
                stop.set()
        [states] = reported
        services = _running(states)
        assert [s.account for s in services] == ["710011", "710012"]
        assert all(s.lease_acquired_at is not None for s in services)
        assert {e.account for p in EventLog(engine).iter_after(0) for e in p if e.source == "ws"} >= {"710012"}
    finally:
        holder.dispose()
        engine.dispose()


def _trade_ids(emissions: Sequence[Emission]) -> set[str]:
    return {str(json.loads(e.text)["data"]["id"]) for e in emissions if e.channel.startswith("private-my_trades")}


async def test_one_accounts_failure_is_its_own(db_url: str) -> None:
    """Account 1's key is deleted while it runs: its service ends when its reconnect's token call is refused (the
    error a process of its own would end on); it is down (``tracker_account_up`` 0, one failure counted) while
    account 2 goes on committing. Once the key is back it is tracked again, and its backfill brings what it traded
    meanwhile; its start-up gap in the log says why it was not tracked."""
    upgrade(db_url)
    engine = open_engine(db_url)
    try:
        async with (
            open_fake_exchange(seed=7, markets=MARKETS, user_id=710031, api_key="keyfailsone") as one,
            open_fake_exchange(seed=8, markets=MARKETS, user_id=710032, api_key="keyfailstwo") as two,
        ):
            delivered = record_deliveries(two)
            stop = trio.Event()
            metrics = Metrics()
            log = EventLog(engine)
            async with trio.open_nursery() as nursery:
                first, second = await start_accounts(
                    nursery,
                    [_settings(fx, db_url) for fx in (one, two)],
                    engine,
                    stop,
                    metrics=metrics,
                    retry_base_s=0.05,
                )
                for fx in (one, two):
                    await fx.wait_subscribed(fx.private_channels())
                assert _up(metrics) == {"1": 1.0, "2": 1.0}
                failed = first.services
                # Its first start's backfill done (its gap, "first start", in the log) before its key goes: a service
                # that ends sooner has no such gap, and its next one walks from nothing all the same.
                assert failed is not None and failed.backfiller is not None
                await failed.backfiller.wait_runs(1)
                one.revoke_key()
                await one.drop_connections()
                while first.down is None:
                    await first.changed.wait()
                assert first.down.startswith("API key not found"), first.down
                assert _up(metrics)["1"] == 0.0
                assert _by_account(metrics, "tracker_account_connections")["1"] == 0.0
                missed = await one.generate(30)  # account 1's trades while it is down: nobody receives them
                await two.generate(30)  # account 2 goes on
                assert second.down is None and second.services is not None
                while not set(delivered) <= set(_payloads(log, two.user_id)):
                    await second.services.writer_stats.committed.wait()
                one.restore_key()
                while first.down is not None or first.services is failed:
                    await first.changed.wait()
                assert first.services is not None and first.services.backfiller is not None
                await one.wait_subscribed(one.private_channels())
                await first.services.backfiller.wait_runs(1)  # the new service's start-up backfill
                stop.set()
        entries = [e for page in log.iter_after(0) for e in page]
        assert _trade_ids(missed) and _trade_ids(missed) <= {e.trade_id for e in entries}
        # The new service's start-up window runs from the failed one's last entry, not from the process's start.
        start_ups = [
            json.loads(e.payload)["data"]
            for e in entries
            if e.account == "710031" and e.event == "gap_detected" and e.source == "tracker"
        ]
        details = [gap["detail"] for gap in start_ups if gap["reason"] == "start-up"]
        # The window the account was down in says why, in the log (written at its return, under its own writer).
        assert details and details[0] == "first start", details
        assert set(details[1:]) == {"account down in this run: API key not found: check its api_key"}, details
        assert first.failures >= 1 and second.failures == 0
        assert _up(metrics) == {"1": 1.0, "2": 1.0}
        assert set(_by_account(metrics, "tracker_account_connections")) == {"1", "2"}  # the metrics task's, per account
        assert metrics.registry.get_sample_value("tracker_account_failures_total", {"account": "1"}) == first.failures
        assert walk(log).head == log.head()
    finally:
        engine.dispose()


async def test_two_keys_of_one_account_are_refused_before_anything_starts(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        async with (
            open_fake_exchange(seed=1, markets=MARKETS, user_id=710021, api_key="keysameone") as one,
            open_fake_exchange(seed=2, markets=MARKETS, user_id=710021, api_key="keysametwo") as two,
        ):
            with pytest.raises(ConfigError) as refused:
                await run_accounts([_settings(fx, sqlite_url) for fx in (one, two)], engine, handle_signals=False)
            assert not one.hub.conns and not two.hub.conns
        assert str(refused.value) == (
            "accounts 1 and 2 of [[accounts]] have keys of one Bitstamp account (user 710021): list each account once"
        )
        assert EventLog(engine).head() == 0
    finally:
        engine.dispose()


async def test_run_accounts_needs_an_account(sqlite_url: str) -> None:
    """One account is fine (a config file of one ``[[accounts]]`` table: ``test_accounts_reload.py``); none is not."""
    engine = open_engine(sqlite_url)
    try:
        with pytest.raises(ValueError, match="one account or more"):
            await run_accounts([], engine)
    finally:
        engine.dispose()


def _by_account(metrics: Metrics, name: str) -> dict[str, float]:
    return {
        sample.labels["account"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def _up(metrics: Metrics) -> dict[str, float]:
    return _by_account(metrics, "tracker_account_up")


def _total(metrics: Metrics, name: str) -> float:
    return sum(
        sample.value for family in metrics.registry.collect() for sample in family.samples if sample.name == name
    )


def test_log_lines_carry_the_account() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    logger = logging.getLogger("tracker.test")
    try:
        with account_context("2"):
            logger.info("connected")
        logger.info("alone")
    finally:
        setup_logging()
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("tracker.test: connected account=2")
    assert lines[1].endswith("tracker.test: alone")


# ------------------------------------------------------------------------------------- append_parts (SQLite's way)


def _outcome(result: AppendResult) -> tuple[tuple[int, ...], int, int, int]:
    return result.appended, result.duplicates, result.conflicts, result.quarantined


def _log_state(log: EventLog) -> tuple[list[tuple[int, str, str, str]], list[tuple[str, str | None, int | None, str]]]:
    rows = [(r.seq, r.dedup_key, r.payload, r.hash) for page in log.iter_after(0) for r in page]
    kept = [(q.kind, q.dedup_key, q.existing_seq, q.raw) for q in log.quarantined()]
    return rows, kept


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(pg_append_entries(), min_size=1, max_size=4), min_size=1, max_size=3))
def test_append_parts_is_each_part_appended_in_turn(
    rounds: list[list[list[NewEntry]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Rounds of parts (7 keys over every part and round: duplicates and conflicts within a part, across parts and
    with what earlier rounds stored): each part's result, the rows, the chain and the quarantine are what appending
    the parts one after the other gives."""
    assume(all(EventLog.entries_fit(part) for parts in rounds for part in parts))
    where = tmp_path_factory.mktemp("parts")
    with open_log(f"sqlite:///{where / 'turns.db'}") as turns, open_log(f"sqlite:///{where / 'parts.db'}") as combined:
        for parts in rounds:
            expected = [_outcome(turns.append(part)) for part in parts]
            got = combined.append_parts(parts)
            assert [_outcome(result) for result in got] == expected
            assert all(result.head == combined.head_anchor() for result in got)
        assert _log_state(combined) == _log_state(turns)


@pytest.mark.postgres
async def test_append_parts_on_postgresql_is_sqlites(pg_log: EventLog, tmp_path: Path) -> None:
    changed = entry(2, payload='{"data":{"id":2,"amount_str":"0.3"}}')  # key of entry 2, another text: a conflict
    rounds = [[[entry(1), entry(2)], [entry(3, account="1002", key="ws:1002:3")]], [[entry(2), changed], [entry(4)]]]
    with open_log(f"sqlite:///{tmp_path / 'lite.db'}") as lite:
        for parts in rounds:
            assert [_outcome(r) for r in pg_log.append_parts(parts)] == [_outcome(r) for r in lite.append_parts(parts)]
        assert _log_state(pg_log) == _log_state(lite)
    assert [_outcome(r) for r in pg_log.append_parts([[changed], [entry(5)]])] == [((), 0, 1, 0), ((5,), 0, 0, 0)]
