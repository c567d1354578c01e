"""The accounts this process has given up as down, kept in the database for ``tracker status``.

``open_down_board`` runs beside the accounts of ``run_accounts``: whenever one goes down or up, or its next try is
drawn (``AccountState.on_change``), and after a config reload, it rewrites this process's rows of ``accounts_down``
from the accounts' states (``tracker/store/accounts_down.py`` says why a table and not log entries, and how status
tells a live process's rows from a dead one's). Changes that come while a write is under way are folded into the
next write: the rows follow the states, never a queue of past ones.

The board is a ``ProcessBoard`` (``process_board.py``: the locks, the first write's sweep, the deletion at the end,
every account's writer drained). A failure to record is never the accounts' failure: a database outage is logged and
the write tried again (the writers ride the outage out themselves); anything else is a bug and ends the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from tracker.runtime.account_supervisor import AccountState
from tracker.runtime.process_board import ProcessBoard, open_board
from tracker.store.accounts_down import AccountDown, replace_own, sweep_dead
from tracker.store.engine import Engine


def down_of(states: Sequence[AccountState]) -> list[AccountDown]:
    """The rows that say which of ``states`` are down, why, since when and when they are tried next; and which are
    tracked again since when, after which spell down."""
    return [
        AccountDown(
            place=state.index,
            user=state.user or state.tracked_user,
            reason=reason,
            since=state.down_since or datetime.now(UTC),
            failures=state.failures,
            retry_at=state.retry_at,
            back_at=None if state.down is not None else state.back_at,
        )
        for state in states
        if (reason := state.down or state.was_down) is not None
    ]


DownBoard = ProcessBoard[AccountDown]


def open_down_board(
    engine: Engine, states: Callable[[], Sequence[AccountState]]
) -> AbstractAsyncContextManager[DownBoard]:
    """The accounts' board writing until the block ends, then this process's rows deleted (``open_board``). A bug
    in it ends the run, as any bug in the accounts' supervision does."""
    board = ProcessBoard(engine, "accounts down", lambda: down_of(states()), replace_own, sweep_dead, fatal=True)
    return open_board(board)
