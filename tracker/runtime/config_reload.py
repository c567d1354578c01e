"""``tracker run`` reloads its config file on SIGHUP: what changed, and the requests to reload.

An account is known by its ``api_key``. Between the accounts running (the config as last applied) and the file read
again (``config.load_accounts``, exactly as at the start: the same flags, environment and file):

- same key, equal settings (the secret file's content, markets, sub-accounts and their keys, URLs, intervals...):
  unchanged, its connections stay up; moved in the file, it takes its new place as its label (``account=N``);
- same key, other settings: that account is restarted (stopped, its writer drained, started with the new ones);
- a key no longer listed: stopped; a new key: started (checked first, as at the start).

What the process set up once cannot change without a restart: ``RESTART_ONLY`` (the database, the metrics server's
port, the stop's grace). A change there refuses the whole reload (``RestartNeeded``), as does a file that no longer
lists ``[[accounts]]``, or one listing more accounts than the database pool was sized for (``max_accounts``).
``diff_accounts`` is pure (no I/O): ``app.run_accounts`` applies what it finds.

Requests (``Reloads``) are coalesced: any number of SIGHUPs while a reload is applied make one more reload after it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

from tracker.config import ConfigError, Settings

log = logging.getLogger("tracker.service")

# Settings the process uses once, at its start, outside the accounts: changing them needs a restart. (The log
# format and verbosity are flags, read again unchanged; everything else a Settings holds is an account's.)
RESTART_ONLY: tuple[str, ...] = ("db_url", "metrics_port", "stop_grace_s")


class RestartNeeded(ConfigError):
    """A reload that changes what only a restart can (``RESTART_ONLY``)."""


@dataclass(frozen=True, slots=True)
class AccountsDiff:
    """What a reload does. Places are in the file, from 1: ``old`` as last applied, ``new`` as read now."""

    unchanged: tuple[tuple[int, int], ...] = ()  # (old place, new place)
    changed: tuple[tuple[int, int], ...] = ()  # (old place, new place): restarted with the new settings
    added: tuple[int, ...] = ()  # new places
    removed: tuple[int, ...] = ()  # old places

    @property
    def stopping(self) -> tuple[int, ...]:
        """The old places of the accounts stopped before any is started: removed, or restarted."""
        return tuple(sorted((*self.removed, *(old for old, _ in self.changed))))

    @property
    def starting(self) -> tuple[int, ...]:
        """The new places of the accounts started: added, or restarted."""
        return tuple(sorted((*self.added, *(new for _, new in self.changed))))

    def summary(self) -> str:
        """The INFO line: ``config reloaded: account 3 added, account 2 restarted (its settings changed), 1 removed
        (was account 1), 2 unchanged``. Names places only, never a key."""
        parts = [f"account {new} added" for new in self.added]
        parts += [f"account {new} restarted (its settings changed)" for _, new in self.changed]
        if self.removed:
            were = ", ".join(str(old) for old in self.removed)
            parts.append(f"{len(self.removed)} removed (was account {were})")
        moved = [f"account {old} is now account {new}" for old, new in self.unchanged if old != new]
        kept = f"{len(self.unchanged)} unchanged" + (f" ({', '.join(moved)})" if moved else "")
        return "config reloaded: " + ", ".join([*parts, kept])


def _key(settings: Settings) -> str:
    if settings.api_key is None:  # load_accounts gives every [[accounts]] table's
        raise ConfigError("an account without api_key")
    return settings.api_key.reveal()


def diff_accounts(old: Sequence[Settings], new: Sequence[Settings], *, max_accounts: int | None = None) -> AccountsDiff:
    """What changed from accounts ``old`` (running) to ``new`` (the file read again), both ``load_accounts``'s.

    Raises ``RestartNeeded`` naming every ``RESTART_ONLY`` setting that changed (never its value: a database URL
    may hold a password), when the file no longer lists ``[[accounts]]``, or when it lists more than
    ``max_accounts`` (on PostgreSQL each account holds a connection for its lease: the pool was sized at the
    start)."""
    if not old:
        raise ValueError("no accounts running")
    if not new or not new[0].accounts_in_file:
        raise RestartNeeded(
            "the config file no longer lists [[accounts]] (tracker run would track the environment's one account):"
            " restart tracker to change it"
        )
    changed = [name for name in RESTART_ONLY if getattr(old[0], name) != getattr(new[0], name)]
    if changed:
        names = " and ".join(new[0].label(name) for name in changed)
        what = "is a setting" if len(changed) == 1 else "are settings"
        raise RestartNeeded(
            f"{names} changed, and {what} the process set up once at its start: restart tracker to change it"
        )
    if max_accounts is not None and len(new) > max_accounts:
        raise RestartNeeded(
            f"the config file lists {len(new)} accounts, more than the {max_accounts} the database connections were"
            " set up for at the start: restart tracker to change it"
        )
    old_at = {_key(settings): place for place, settings in enumerate(old, 1)}
    unchanged: list[tuple[int, int]] = []
    restarted: list[tuple[int, int]] = []
    added: list[int] = []
    for place, settings in enumerate(new, 1):
        was = old_at.pop(_key(settings), None)
        if was is None:
            added.append(place)
        elif old[was - 1] == settings:
            unchanged.append((was, place))
        else:
            restarted.append((was, place))
    return AccountsDiff(tuple(unchanged), tuple(restarted), tuple(added), tuple(sorted(old_at.values())))


@dataclass(eq=False)
class Reloads:
    """Requests to reload the config file (SIGHUP, or ``request()`` from a test), coalesced: one reload takes every
    request made before it began. ``outcomes``: each reload's line (the summary, or the error), in order."""

    wanted: bool = False
    outcomes: list[str] = field(default_factory=list)
    _wake: trio.Event = field(default_factory=trio.Event)
    _done: trio.Event = field(default_factory=trio.Event)

    def request(self) -> None:
        self.wanted = True
        self._wake.set()

    async def next(self) -> None:
        """Until a reload is wanted; takes the request (and every one made meanwhile)."""
        while not self.wanted:
            await self._wake.wait()
            self._wake = trio.Event()
        self.wanted = False

    def finished(self, outcome: str) -> None:
        self.outcomes.append(outcome)
        self._done.set()
        self._done = trio.Event()

    async def wait_finished(self, count: int) -> None:
        """Until ``count`` reloads have finished (applied, refused or failed)."""
        while len(self.outcomes) < count:
            await self._done.wait()


async def watch_hangups(
    receiver: AsyncIterator[int],
    stop: trio.Event,
    reloads: Reloads | None,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until ``scope`` is cancelled, turn each SIGHUP of ``receiver`` (``trio.open_signal_receiver(signal.SIGHUP)``,
    opened by the caller around everything it runs: a SIGHUP at any moment of the run never ends the process) into a
    reload request. After the stop, or with nothing to reload (``reloads`` None: a run configured by the environment
    and flags), one line says why it is ignored."""
    with scope:
        task_status.started()
        async for signum in receiver:
            _hangup(signum, stop, reloads)


def _hangup(signum: int, stop: trio.Event, reloads: Reloads | None) -> None:
    name = signal.Signals(signum).name
    if stop.is_set():
        log.info("received %s while stopping: not reloading", name)
    elif reloads is None:
        log.warning(
            "received %s: nothing to reload: this tracker run tracks the account of the environment and flags, not a"
            " config file's [[accounts]] (restart it to apply a change)",
            name,
        )
    else:
        log.info("received %s: reloading the config file", name)
        reloads.request()
