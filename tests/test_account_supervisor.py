"""One account's failure is its own (``tracker/runtime/account_supervisor.py``), without sockets or a database.

- ``account_only``: which errors end one account's service only; a group with anything else is the process's.
- the reason line and the hints in an ``[[accounts]]`` table's terms; ``name_account`` names an error once.
- ``supervise_account`` under ``autojump_clock``: an account that fails is down (state, metrics, the ERROR line),
  started again after a growing back-off, checked again before each start; a long healthy run starts the back-off
  afresh; an error that is not one account's is raised, named; the stop ends a down account's wait at once.
"""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from tracker.config import ConfigError, Secret, Settings
from tracker.exchange.errors import AuthError, ExchangeUnreachable, RateLimited
from tracker.metrics import Metrics
from tracker.runtime import account_supervisor
from tracker.runtime.account_supervisor import (
    AccountState,
    account_only,
    in_file_terms,
    name_account,
    reason_of,
    supervise_account,
)
from tracker.runtime.backoff import Backoff
from tracker.runtime.service import Services
from tracker.store.errors import DatabaseDamaged
from tracker.store.lease import LeaseLost

pytestmark = pytest.mark.timeout(30)

REFUSED = "signature rejected: check BITSTAMP_API_SECRET"


def test_what_is_one_accounts_failure() -> None:
    assert account_only(AuthError(REFUSED, code="API0005", status=403))
    assert account_only(ExchangeUnreachable("exchange unreachable: check BITSTAMP_API_URL and your network"))
    assert account_only(ConfigError("unknown market xyzusd"))
    assert account_only(LeaseLost("another tracker run took over account 1: stopping"))
    assert account_only(ExceptionGroup("run", [AuthError(REFUSED), ExceptionGroup("inner", [LeaseLost("x")])]))
    assert not account_only(DatabaseDamaged("the database is damaged"))
    assert not account_only(ValueError("a bug"))
    assert not account_only(ExceptionGroup("run", [AuthError(REFUSED), KeyError("a bug beside it")]))
    assert not account_only(trio.Cancelled._create())  # type: ignore[attr-defined]


def test_the_reason_is_the_first_tracker_errors_line_in_the_tables_terms() -> None:
    group = ExceptionGroup("run", [KeyError("k"), AuthError(REFUSED + "\nmore")])
    assert reason_of(group) == "signature rejected: check its api_secret_file"
    assert reason_of(ValueError("first\nsecond")) == "first"
    assert in_file_terms("authentication failed: check BITSTAMP_API_KEY and BITSTAMP_API_SECRET") == (
        "authentication failed: check its api_key and api_secret_file"
    )
    assert in_file_terms("unknown market x: fix TRACKER_MARKETS or --markets") == (
        "unknown market x: fix its markets (or the markets all accounts share)"
    )


def test_an_error_is_named_once() -> None:
    shared = AuthError(REFUSED)
    group = ExceptionGroup("run", [shared, ValueError("not a tracker error")])
    name_account(group, "account 2 of [[accounts]]")
    name_account(shared, "account 3 of [[accounts]]")  # the same object met again in another account's writer
    assert str(shared) == "account 2 of [[accounts]]: signature rejected: check its api_secret_file"
    assert str(group.exceptions[1]) == "not a tracker error"


def _state() -> AccountState:
    return AccountState(2, Settings(db_url="sqlite://", api_key=Secret("k"), api_secret=Secret("s")))


def _services() -> Services:
    return Services.starting(_state().settings, trio.Event(), None)  # type: ignore[arg-type]  # no log is read


class Script:
    """A check and a service whose outcomes the test decides: each start is ``(check error, service error)``; a
    ``None`` service error runs until the stop."""

    def __init__(self, stop: trio.Event, outcomes: list[tuple[BaseException | None, BaseException | None]]) -> None:
        self.stop = stop
        self.outcomes = outcomes
        self.checks: list[float] = []
        self.starts: list[float] = []
        self.ran_for: float = 0.0
        self.service = _services()

    async def check(self, state: AccountState) -> None:
        self.checks.append(trio.current_time())
        error, _ = self.outcomes[0]
        if error is not None:
            self.outcomes.pop(0)
            raise error
        state.user = "4242"

    async def run(self, *, task_status: trio.TaskStatus[Services]) -> Services:
        self.starts.append(trio.current_time())
        _, error = self.outcomes.pop(0)
        task_status.started(self.service)
        if error is None:
            await self.stop.wait()
            return self.service
        await trio.sleep(self.ran_for)  # the service's life before it fails (virtual time)
        raise error


def _no_jitter() -> Backoff:
    class Fixed(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    return Backoff(base=10.0, cap=300.0, rng=Fixed())


async def _supervise(script: Script, state: AccountState, metrics: Metrics) -> None:
    """Supervise ``state`` until the script is played out and everything is idle, then stop."""
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: supervise_account(
                state,
                script.check,
                script.run,
                script.stop,
                metrics=metrics,
                backoff=_no_jitter(),
                task_status=task_status,
            )
        )
        while script.outcomes:
            await state.changed.wait()
        await trio.testing.wait_all_tasks_blocked()
        script.stop.set()


async def test_a_failing_account_is_down_then_started_again_after_a_growing_back_off(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("tracker"), "propagate", True)
    caplog.set_level(logging.INFO, logger="tracker.service")
    stop = trio.Event()
    refused = AuthError(REFUSED, code="API0005", status=403)
    # started, fails; its check refused twice; then it starts and runs until the stop
    script = Script(stop, [(None, refused), (refused, None), (refused, None), (None, None)])
    state = _state()
    state.user = "4242"  # the caller checked it at the start
    metrics = Metrics()
    await _supervise(script, state, metrics)
    assert len(script.starts) == 2 and script.starts[0] == 0.0
    # a check after each failure (none before the first start: the caller's), 10, 20, 40 s apart (no jitter)
    assert [round(t - script.starts[0]) for t in script.checks] == [10, 30, 70]
    assert round(script.starts[1]) == 70
    assert state.down is None and state.services is script.service and state.failures == 3
    up = metrics.registry.get_sample_value("tracker_account_up", {"account": "2"})
    failures = metrics.registry.get_sample_value("tracker_account_failures_total", {"account": "2"})
    assert (up, failures) == (1.0, 3.0)
    # Each record once: an earlier test's CLI set-up may leave the capture handler on two loggers of the tree.
    records = {id(r): r for r in caplog.records if r.name == "tracker.service"}.values()
    lines = [r.getMessage() for r in records]
    assert lines[:3] == [
        f"account 2 of [[accounts]] is not tracked: signature rejected: check its api_secret_file; the other accounts"
        f" go on; trying it again in {delay} s"
        for delay in (10, 20, 40)
    ]
    assert lines[3] == "account 2 of [[accounts]] is tracked again (user 4242)"


async def test_what_tracker_status_is_told_of_a_spell_down(autojump_clock: trio.testing.MockClock) -> None:
    """At every change the state says what ``tracker status`` shows (``down_board.py``): down since the spell's
    first failure (not the newest), the next try once drawn, the user it tracked last (``user`` is forgotten at a
    failure); once it runs again, since when and why it was down."""
    stop = trio.Event()
    refused = AuthError(REFUSED, code="API0005", status=403)
    script = Script(stop, [(None, refused), (refused, None), (None, None)])
    state = _state()
    state.user = "4242"
    seen: list[tuple[bool, object, bool, bool, str | None, str | None]] = []

    def snapshot() -> None:
        at = (state.down is not None, state.down_since, state.retry_at is not None, state.back_at is not None)
        seen.append((*at, state.was_down, state.tracked_user))

    state.on_change = snapshot
    await _supervise(script, state, Metrics())
    first_since = seen[1][1]
    assert first_since is not None
    reason = "signature rejected: check its api_secret_file"
    assert [(down, since == first_since, *rest) for down, since, *rest in seen] == [
        (False, False, False, False, None, "4242"),  # up (the first start)
        (True, True, False, False, None, "4242"),  # down: the next try not drawn yet
        (True, True, True, False, None, "4242"),  # its next try drawn
        (True, True, False, False, None, "4242"),  # that try's check refused: down since the same moment
        (True, True, True, False, None, "4242"),
        (False, True, False, True, reason, "4242"),  # up again: back since now, after the spell from first_since
    ]


async def test_a_long_healthy_run_starts_the_back_off_afresh(autojump_clock: trio.testing.MockClock) -> None:
    stop = trio.Event()
    lost = LeaseLost("another tracker run took over account 4242: stopping")
    script = Script(stop, [(None, lost), (None, lost), (None, lost), (None, None)])
    state = _state()
    state.user = "4242"
    backoff = _no_jitter()
    script.ran_for = 1.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: supervise_account(state, script.check, script.run, stop, metrics=None, backoff=backoff)
        )
        while len(script.starts) < 2:
            await state.changed.wait()
        script.ran_for = account_supervisor.HEALTHY_AFTER_S  # the third run is a long healthy one
        while script.outcomes:
            await state.changed.wait()
        stop.set()
    gaps = [round(b - a) for a, b in zip(script.starts, script.starts[1:], strict=False)]
    assert gaps == [1 + 10, 1 + 20, 600 + 10]


async def test_what_is_not_one_accounts_is_raised_named(autojump_clock: trio.testing.MockClock) -> None:
    stop = trio.Event()
    damaged = DatabaseDamaged("the database is damaged (database disk image is malformed): the run stopped")
    script = Script(stop, [(None, RateLimited("rate limited", code="400.002", status=429)), (None, damaged)])
    state = _state()
    state.user = "4242"
    with pytest.RaisesGroup(DatabaseDamaged, flatten_subgroups=True) as raised:
        await supervise_account(state, script.check, script.run, stop, backoff=_no_jitter())
    [error] = raised.value.exceptions
    assert str(error).startswith("account 2 of [[accounts]]: the database is damaged")
    assert state.failures == 1  # the rate limit (an exchange error of its own) was the account's


async def test_the_stop_ends_a_down_accounts_wait(autojump_clock: trio.testing.MockClock) -> None:
    stop = trio.Event()
    state = _state()
    state.down = "API key not found: check its api_key"
    script = Script(stop, [(AuthError("API key not found"), None)])
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: supervise_account(
                state, script.check, script.run, stop, backoff=_no_jitter(), task_status=task_status
            )
        )
        assert script.checks == []  # down from the caller's check: it waits first
        stop.set()
    assert trio.current_time() < 1 and script.checks == [] and script.starts == []
