"""Several accounts in one process: one account's failure is that account's, not the process's.

An account whose service ends on an error of its own (``ACCOUNT_ONLY``: the exchange refused its key or could not be
reached at its URL, one of its markets is unknown, another process took its writer lease) is marked down, logged at
ERROR with the reason, and started again after a back-off (``RETRY_BASE_S`` doubling to ``RETRY_CAP_S``, jittered),
while every other account goes on (``tracker status`` shows it down, why, since when and its next try, then since
when it is tracked again: the state's ``down``, ``down_since``, ``retry_at``, ``back_at``, written by
``down_board.py``). Started again means from the start: its credentials and markets are checked anew, its service
(connections, writer, lease, backfill) is a new one, and backfill fills from the log what the account missed while
it was down. Before it ends, the failed service's writer commits what it had received (``run_tracker``).

What is not one account's still ends the process, as it ends a process of one account: the database damaged, or
failing in a way that is not the outage the tasks ride out themselves; a bug (an exception tracker does not know).

Why retry at all when a key was revoked: most account-only failures pass (the exchange unreachable at the account's
own URL, a clock skew corrected by NTP, a lease lost while the database connection blinked, a key whose permissions
are being edited), and one token call every few minutes costs nothing. A key that stays wrong is logged at every
try; ``tracker doctor`` names what is wrong with it. Fixing it in the config file and sending ``tracker run`` SIGHUP
restarts that account alone with its new settings (``config_reload.py``), the others untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import trio

from tracker.config import ConfigError, Settings
from tracker.errors import ExchangeError, TrackerError, leaves
from tracker.metrics import Metrics
from tracker.runtime.backoff import Backoff
from tracker.runtime.service import Services
from tracker.runtime.supervise import StartedOnce
from tracker.store.errors import first_line
from tracker.store.lease import LeaseLost

log = logging.getLogger("tracker.service")

ACCOUNT_ONLY: tuple[type[BaseException], ...] = (ExchangeError, ConfigError, LeaseLost)
RETRY_BASE_S = 10.0
RETRY_CAP_S = 300.0
# A service that ran this long before failing was healthy: its next failure starts the back-off afresh.
HEALTHY_AFTER_S = 600.0


def account_only(error: BaseException) -> bool:
    """Whether ``error`` ends one account's service and nothing else: every exception in it is one of
    ``ACCOUNT_ONLY`` (a group with a bug or a database failure beside them is not)."""
    found = leaves(error)
    return bool(found) and all(isinstance(leaf, ACCOUNT_ONLY) for leaf in found)


# The exchange layer's hints name the environment variables of a one-account run; an account of the file has keys of
# its own table instead (``config.load_accounts``).
_IN_FILE_TERMS = (
    ("BITSTAMP_API_KEY and BITSTAMP_API_SECRET", "its api_key and api_secret_file"),
    ("BITSTAMP_API_KEY", "its api_key"),
    ("BITSTAMP_API_SECRET", "its api_secret_file"),
    ("BITSTAMP_API_URL", "its api_url (or the api_url all accounts share)"),
    ("TRACKER_MARKETS or --markets", "its markets (or the markets all accounts share)"),
)


def in_file_terms(message: str) -> str:
    """``message`` with the one-account settings' names it gives as hints replaced by an ``[[accounts]]`` table's."""
    for env, key in _IN_FILE_TERMS:
        message = message.replace(env, key)
    return message


def name_account(error: BaseException, label: str) -> None:
    """Prefix every ``TrackerError`` in ``error`` (a group's leaves too) with ``label``, once (an error the combined
    append raised in several accounts' writers is one object: it keeps the first account's name): the CLI prints the
    first one's message (``tracker: error: account 2 of [[accounts]]: signature rejected: ...``)."""
    for leaf in leaves(error):
        if isinstance(leaf, TrackerError) and leaf.args and not getattr(leaf, "account_named", False):
            leaf.args = (f"{label}: {in_file_terms(str(leaf.args[0]))}", *leaf.args[1:])
            leaf.account_named = True  # type: ignore[attr-defined]


def reason_of(error: BaseException) -> str:
    """The one line that says why: the first tracker error's message (``ExchangeError`` and the like say what to
    do), else the first exception's first line."""
    found = leaves(error)
    first = next((leaf for leaf in found if isinstance(leaf, TrackerError)), found[0])
    return in_file_terms(first_line(first))


@dataclass(eq=False)
class AccountState:
    """One account of the config file (numbered from 1) in this process: what runs for it, or why nothing does.

    ``index`` is its place in the file: as of its start, or the new place a config reload moved it to while it ran
    unchanged (``move_to``). ``str(state)`` is that number: the ``account=N`` of its log lines (``account_context``
    reads it at each line) and its metrics' ``account`` label."""

    index: int
    settings: Settings
    user: str | None = None  # the Bitstamp account its key belongs to, once a token call said so
    services: Services | None = None  # its newest service (a failed one stays until the next one starts)
    down: str | None = None  # why it is not running; None while it runs or starts
    down_since: datetime | None = None  # the first failure of its newest spell down (wall clock), kept once back
    retry_at: datetime | None = None  # while down: when it is tried next (wall clock), once the back-off is drawn
    back_at: datetime | None = None  # when its newest spell down ended (tracked again); None while down or never down
    was_down: str | None = None  # once back: why it was down (the spell's last reason)
    tracked_user: str | None = None  # the user it ran for last (``user`` is forgotten at a failure)
    failures: int = 0
    # Called at every up or down (and retry time): the process's record of its accounts down (``down_board.py``).
    on_change: Callable[[], None] | None = None
    changed: trio.Event = field(default_factory=trio.Event)  # set (and replaced) at every up or down
    stop: trio.Event = field(default_factory=trio.Event)  # this account's own: the process's stop, or its removal
    ended: trio.Event = field(default_factory=trio.Event)  # set once its supervisor returned (its writer drained)

    def __str__(self) -> str:
        return str(self.index)

    @property
    def label(self) -> str:
        return f"account {self.index} of [[accounts]]"

    def forget_metrics(self, metrics: Metrics | None) -> None:
        """Remove its series (``tracker_account_*{account="N"}``): it left the file, was restarted or moved."""
        if metrics is not None:
            for family in (metrics.account_up, metrics.account_connections, metrics.account_failures):
                family.remove(str(self.index))

    def move_to(self, index: int, metrics: Metrics | None) -> None:
        """Take place ``index`` in the file (a reload moved it, unchanged, while it runs): its log lines and metrics
        say ``account=index`` from now on. The caller has forgotten every moved account's old series first (one's
        old number may be another's new one)."""
        self.index = index
        if self.services is not None:
            self.services.config_index = index
        if metrics is not None:
            label = str(index)
            metrics.account_up.labels(account=label).set(0 if self.down is not None or self.services is None else 1)
            metrics.account_failures.labels(account=label).inc(self.failures)
            if self.services is not None:
                metrics.account_connections.labels(account=label).set(self.services.ingest_stats.connected_now)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.on_change is not None:
            self.on_change()

    def mark_up(self, services: Services, metrics: Metrics | None) -> None:
        if self.down is not None:
            log.info("%s is tracked again (user %s)", self.label, self.user)
        if self.down is not None:
            self.back_at, self.was_down = datetime.now(UTC), self.down
        self.services, self.down, self.retry_at = services, None, None
        self.tracked_user = self.user
        services.config_index = self.index
        if metrics is not None:
            metrics.account_up.labels(account=str(self.index)).set(1)
        self._changed()

    def mark_down(self, error: BaseException, metrics: Metrics | None) -> None:
        if self.down is None:
            self.down_since, self.back_at, self.was_down = datetime.now(UTC), None, None
        self.down = reason_of(error)
        self.retry_at = None  # drawn by the supervisor next
        self.failures += 1
        if metrics is not None:
            metrics.account_up.labels(account=str(self.index)).set(0)
            metrics.account_connections.labels(account=str(self.index)).set(0)
            metrics.account_failures.labels(account=str(self.index)).inc()
        self._changed()

    def retry_in(self, delay: float) -> None:
        """It is down and tried again ``delay`` seconds from now (``tracker status`` says when)."""
        self.retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        self._changed()


async def supervise_account(
    state: AccountState,
    check: Callable[[AccountState], Awaitable[None]],
    run: Callable[..., Awaitable[Services]],
    stop: trio.Event,
    *,
    metrics: Metrics | None = None,
    backoff: Backoff | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run account ``state``'s service until ``stop``, starting it again after each account-only failure.

    ``check(state)`` checks its markets and credentials and sets ``state.user`` (run when the user is not known yet:
    at the first start if the caller has not, and after every failure); ``run(task_status=...)`` is its service
    (``run_tracker``), started with ``nursery.start``. Reports started once the account runs or is down (an account
    already down when this starts, ``state.down`` set, waits one back-off first). Returns at the stop; an error that
    is not one account's (``account_only``) is raised."""
    backoff = backoff or Backoff(base=RETRY_BASE_S, cap=RETRY_CAP_S)
    report = StartedOnce(task_status)  # the account runs, or is down for now
    while True:
        if state.down is not None:
            delay = backoff.next_delay()
            log.error(
                "%s is not tracked: %s; the other accounts go on; trying it again in %.3g s",
                state.label,
                state.down,
                delay,
            )
            state.retry_in(delay)
            report.started()
            with trio.move_on_after(delay):
                await stop.wait()
        if stop.is_set():
            report.started()
            return
        began = trio.current_time()
        try:
            if state.user is None:
                await check(state)
            async with trio.open_nursery() as nursery:
                services = await nursery.start(run)
                state.mark_up(services, metrics)
                report.started()
            return  # stopped
        except BaseException as error:
            if not account_only(error):
                name_account(error, state.label)
                raise
            if trio.current_time() - began >= HEALTHY_AFTER_S:
                backoff.reset()
            state.user = None  # checked again before the next start (the key may now be another account's)
            state.mark_down(error, metrics)
