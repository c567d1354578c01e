"""A bug in a task beside ingest never stops live ingest (``tracker/runtime/supervise.py``): the task is started
again after a back-off, counted and logged, while every frame the fake delivers is still committed; the real
projector, failing on a batch, catches up once started again. A ``TrackerError`` from such a task still ends the run
(tests/test_ingest_e2e.py ``test_a_failing_run_commits_what_it_received_first``).

Rules: the fake exchange on loopback port 0, the back-off shortened by monkeypatch (never a sleep as
synchronisation: the tests wait on the writer's commits, the tasks' own events and the projector's status), an
absolute timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from test_ingest_e2e import FAST, record_deliveries

from tracker.fake.server import FakeExchange, open_fake_exchange
from tracker.runtime import supervise
from tracker.runtime.projector import projector_task
from tracker.runtime.service import Services, TaskStarter, run_tracker
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.migrate import upgrade
from tracker.store.projections import ProjectionStore

pytestmark = pytest.mark.timeout(60)

MARKETS = ("btcusd",)


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BUG_RESTART_BASE_S", 0.01)


@asynccontextmanager
async def running(
    db_url: str, tasks: Sequence[TaskStarter]
) -> AsyncIterator[tuple[FakeExchange, Services, list[str], EventLog]]:
    upgrade(db_url)
    engine = open_engine(db_url)
    log = EventLog(engine)
    try:
        async with open_fake_exchange(seed=5, markets=MARKETS) as fx:
            delivered = record_deliveries(fx)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                services: Services = await nursery.start(
                    lambda task_status: run_tracker(
                        fx.settings(db_url, markets=MARKETS, subaccounts=()),
                        log,
                        stop=stop,
                        handle_signals=False,
                        ingest_options=FAST,
                        extra_tasks=tasks,
                        task_status=task_status,
                    )
                )
                await fx.wait_subscribed(fx.private_channels())
                yield fx, services, delivered, log
                stop.set()
    finally:
        engine.dispose()


async def committed(services: Services, log: EventLog, frames: list[str]) -> None:
    """Until every frame in ``frames`` is in the log."""
    wanted = set(frames)
    while not wanted <= {e.payload for page in log.iter_after(0) for e in page if e.source == "ws"}:
        await services.writer_stats.committed.wait()


class Flaky:
    """An extra task that fails with a bug on its first ``failures`` starts (before or after reporting started),
    then runs until the stop."""

    def __init__(self, failures: int, *, before_started: bool = False) -> None:
        self.__qualname__ = "flaky_task"  # what supervise calls the task (a starter function's own qualname)
        self.failures = failures
        self.before_started = before_started
        self.starts = 0
        self.running = trio.Event()
        self.failed = trio.Event()

    async def __call__(self, services: Services, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        if not self.before_started:
            task_status.started()
        if self.starts <= self.failures:
            self.failed.set()
            raise KeyError(f"a bug, start {self.starts}")
        task_status.started()
        self.running.set()
        await services.stop.wait()


async def test_a_bug_in_a_task_beside_ingest_restarts_it_and_ingest_goes_on(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(2)
    caplog.set_level(logging.INFO, logger="tracker")
    async with running(sqlite_url, [flaky]) as (fx, services, delivered, log):
        await fx.generate(10)
        await flaky.running.wait()
        await fx.generate(10)  # after the failures: still received and committed
        await committed(services, log, delivered)
    assert flaky.starts == 3
    assert services.task_failures == {"flaky_task": 2}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert errors[0].startswith("flaky_task failed: KeyError: 'a bug, start 1'; live ingest goes on"), errors[0]
    assert "This is a bug in tracker: please report it" in errors[0]
    assert errors[1].startswith("flaky_task failed again (2 times): KeyError: 'a bug, start 2'"), errors[1]
    assert caplog.text.count("Traceback (most recent call last)") == 1, caplog.text  # the first time only
    assert 'raise KeyError(f"a bug, start {self.starts}")' in caplog.text


async def test_a_task_failing_before_it_started_does_not_hold_the_others_back(sqlite_url: str) -> None:
    broken = Flaky(10**9, before_started=True)  # never starts
    after = Flaky(0)
    async with running(sqlite_url, [broken, after]) as (fx, services, delivered, log):
        await broken.failed.wait()
        await after.running.wait()  # started, though the task before it never did
        await fx.generate(10)
        await committed(services, log, delivered)
        assert services.task_failures["flaky_task"] >= 1


async def test_the_projector_failing_on_a_batch_catches_up_once_started_again(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ProjectionStore.project_events
    failures = 0

    def failing_once(self: ProjectionStore, events: Any) -> Any:
        nonlocal failures
        if failures == 0 and events:
            failures += 1
            raise RuntimeError("position 314159/1: its 3 fills sum to 0, its row to 1")
        return real(self, events)

    monkeypatch.setattr(ProjectionStore, "project_events", failing_once)
    engine = open_engine(sqlite_url)  # for the projector, beside the service's
    try:
        async with running(sqlite_url, [projector_task(engine)]) as (fx, services, delivered, log):
            await fx.generate(20)
            await committed(services, log, delivered)
            head = log.head()
            with trio.fail_after(30):
                while (status := services.projector) is None or status.checkpoint < head:
                    # A projector started again has a new status: its rounds, or a look again at which one it is.
                    with trio.move_on_after(0.05):
                        if status is not None:
                            await status.advanced.wait()
                        else:
                            await trio.sleep_forever()
            assert failures == 1
            assert services.task_failures == {"projector_task": 1}
    finally:
        engine.dispose()
