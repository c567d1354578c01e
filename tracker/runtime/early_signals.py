"""SIGINT and SIGTERM from a command's first moment, before trio runs: a stop during ``tracker run``'s start-up is a
clean stop too, never the signal's default action (killed by SIGTERM, a ``KeyboardInterrupt`` traceback).

The whole life of a stop signal in ``tracker run`` (``tracker demo`` alike):

1. ``tracker.cli.main`` installs ``EarlySignals`` first thing, before the sub-commands are imported: a signal is
   recorded, nothing else. Commands that do not stop cleanly get the defaults back before they run
   (``release``: a signal recorded meanwhile is delivered again, so they end as they always did).
2. The command's synchronous start-up (the config read, the database checks) runs under ``starting(phase)``: the
   first signal raises ``StartUpStopped`` there, like ``KeyboardInterrupt`` but for SIGTERM too. Nothing is written
   at that point, so there is nothing to finish.
3. ``hand_over`` just before ``trio.run``: signals are recorded again, and trio's signal receiver
   (``service.open_stop_signals``, the first thing the run opens) takes over, with a signal recorded meanwhile
   counted as received. Until the first service may receive frames (the markets and keys checked, say), a signal
   abandons the start-up the same way (``StopSignals.start_up``); after that it is the service's lossless stop.

The command prints ``StartUpStopped`` as its one line (``stopped during start-up: SIGTERM while checking the
database``) and exits 0. A second signal while stopping is absorbed: it neither kills the process nor interrupts the
clean-up of the first (``service.py`` says what it does once the service runs). So is one after the command ended:
the process's entry (``tracker.cli.run``) leaves the handlers recording until the command returns, then ignores the
stop signals to its exit, so that a clean exit is never turned into a death by the signal's default action in its
last moment (the interpreter's finalization gives a recording handler back to the default; an ignored one stays).

Standard library only: it is imported before anything heavy, so that the unprotected moment of a starting process is
the interpreter's own start.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from tracker.errors import leaves

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartUpStopped(BaseException):
    """A stop signal ended the start-up before anything was received: nothing to commit. A ``BaseException``, as
    ``KeyboardInterrupt`` is: the start-up's own ``except Exception`` (a config loader's, say) must not take it for a
    failure."""

    def __init__(self, signal_name: str, phase: str) -> None:
        super().__init__(signal_name, phase)
        self.signal_name = signal_name
        self.phase = phase

    def __str__(self) -> str:
        return f"stopped during start-up: {self.signal_name} while {self.phase}; nothing was received, nothing written"


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class EarlySignals:
    """The process's SIGINT and SIGTERM until trio's receiver takes them (see the module docstring)."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal, once one came
        self.phase: str | None = None  # what the start-up is doing; None: record only, never raise
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    @classmethod
    def install(cls) -> EarlySignals:
        """Record the stop signals from now on; off the main thread (a test calling ``tracker.cli.main`` from a worker
        thread) there are no signals to take: nothing is installed."""
        early = cls()
        if threading.current_thread() is not threading.main_thread():
            return early
        for signum in STOP_SIGNALS:
            early._previous[signum] = signal.signal(signum, early._handle)
        return early

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping: the clean-up of the first is not interrupted
        self.received = signum
        if self.phase is not None:
            raise StartUpStopped(signal_name(signum), self.phase)

    def starting(self, phase: str) -> None:
        """The synchronous start-up is now doing ``phase``: a stop signal raises ``StartUpStopped`` (at once when one
        came already)."""
        self.phase = phase
        if self.received is not None:
            raise StartUpStopped(signal_name(self.received), phase)

    def hand_over(self) -> None:
        """Just before ``trio.run``: record only; trio's receiver reads ``received`` when it opens."""
        self.phase = None

    def restore(self) -> None:
        """The handlers as they were before ``install`` (idempotent)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def release(self) -> None:
        """For a command without a clean stop of its own: the defaults back, and a signal recorded meanwhile
        delivered again (SIGINT: ``KeyboardInterrupt`` here; SIGTERM: the process ends, as it would have)."""
        self.restore()
        if self.received is not None:
            signal.raise_signal(self.received)


def start_up_stopped(error: BaseException) -> StartUpStopped | None:
    """The ``StartUpStopped`` that ended a run (a nursery may have wrapped it), when nothing else did."""
    found = leaves(error)
    stopped = [leaf for leaf in found if isinstance(leaf, StartUpStopped)]
    return stopped[0] if stopped and len(stopped) == len(found) else None


def stopping_cleanly(
    args: argparse.Namespace, body: Callable[[EarlySignals], int], report: Callable[[StartUpStopped], None]
) -> int:
    """A command with a clean stop of its own (``stops_cleanly``: ``tracker run``, ``tracker demo``): ``body`` with
    the process's ``EarlySignals`` (``tracker.cli.main``'s, else installed here and restored after); a start-up a
    stop signal abandoned (``StartUpStopped``, a nursery's group of them too) is ``report``-ed, and exits 0."""
    given: EarlySignals | None = getattr(args, "early_signals", None)
    early = given or EarlySignals.install()
    try:
        return body(early)
    except BaseException as error:
        stopped = start_up_stopped(error)
        if stopped is None:
            raise
        report(stopped)
        return 0
    finally:
        if given is None:
            early.restore()
