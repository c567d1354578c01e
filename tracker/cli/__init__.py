"""The ``tracker`` command: argument parsing and printing only.

Each sub-command lives in its own module here and exposes ``register(subparsers)``; the module adds its parser and
sets ``func`` to a callable ``(args) -> int`` (the exit code). Add a new command by adding its module to ``COMMANDS``.

Every failure a user can cause ends as ONE line on stderr, ``tracker: error: <what is wrong and what to do>``: usage
errors too (``TrackerArgumentParser.error``), not argparse's usage block. Exit codes: 0 success, 1 "the answer is
no" (verify found a break, reconcile found discrepancies, db current is behind), 2 usage, configuration, database and
exchange errors, 3 credentials the exchange rejects, 130 Ctrl-C. ``tracker run`` stops cleanly on SIGINT and SIGTERM
from the process's first moment (``stops_cleanly``; runtime/early_signals.py): exit 0.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from tracker.errors import StoreError, TrackerError
from tracker.runtime.early_signals import EarlySignals

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tracker.config import Settings

# Modules under tracker.cli that register sub-commands, in the order `tracker --help` lists them.
COMMANDS: tuple[str, ...] = (
    "run",
    "demo",
    "status",
    "report",
    "export",
    "import_statement",
    "reconcile",
    "discrepancies",
    "doctor",
    "verify",
    "audit",
    "rebuild",
    "db",
    "config_cmd",
    "fake_exchange",
)

DEMO_DB = "tracker-demo.db"  # what `tracker demo` writes by default (cli/demo.py)

log = logging.getLogger("tracker")


class TrackerArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors as one ``tracker: error:`` line, like every other error, and sub-command parsers
    that are ``CommandParser``s recorded in ``commands`` (the hostile-argument test walks them)."""

    def __init__(self, *args: Any, commands: list[CommandParser] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[CommandParser] = commands if commands is not None else []

    def error(self, message: str) -> NoReturn:
        text = message.removeprefix("argument ")
        self.exit(2, error_line(f"{text} (see `{self.prog} --help`)"))

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", partial(CommandParser, commands=self.commands))
        return super().add_subparsers(**kwargs)


class CommandParser(TrackerArgumentParser):
    """A sub-command's parser. It accepts the global flags too, so ``tracker demo -v`` works like ``tracker -v demo``
    (defaults suppressed: a flag not given after the command keeps the value given before it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: list[argparse.Action] = []  # before argparse's __init__, which adds -h through add_argument
        super().__init__(*args, **kwargs)
        self.commands.append(self)
        add_global_flags(self, defaults=False)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """argparse's, also recorded in ``arguments`` (what the command accepts, without argparse's internals)."""
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action


def error_line(message: object) -> str:
    """``tracker: error: <message>`` as ONE line: a newline or other control character in it (an argument echoed
    back, a driver's message) is shown escaped, as ``\\n``, instead of breaking the line."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    return f"tracker: error: {text}\n"


def add_global_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="frame-level debug logging"
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=default("text"), help="log line format (default: text)"
    )


class VersionAction(argparse.Action):
    """``--version``: tracker's version and the ones a bug report needs (computed only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        from tracker.metrics import build_info

        info = build_info()
        print(
            f"tracker {info['version']} (Python {info['python']}, SQLAlchemy {info['sqlalchemy']}, trio {info['trio']})"
        )
        parser.exit(0)


def finite_number(text: str, what: str) -> float:
    """A finite number, or the usage error argparse prints as ``--flag: not a number of seconds: 'abc'``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}")
    return value


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number, ``minimum`` or more (each refusal says which)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every command that touches the database or the exchange accepts (flags win over env)."""
    parser.add_argument("--db-url", dest="db_url", help="SQLAlchemy database URL (env TRACKER_DB_URL)")


def require_existing_database(settings: Settings) -> None:
    """A missing SQLite file is an error that says what is true and what to do; nothing is created.

    Opening it would create an empty file (``run``, ``rebuild``) that the next command then calls "not migrated";
    and after ``tracker demo`` the usual mistake is reading the default ``tracker.db`` instead of ``tracker-demo.db``.
    """
    from tracker.store.engine import sqlite_path

    path = sqlite_path(settings.db_url)
    if path is None or path.exists() or not path.parent.is_dir():
        return  # not SQLite, or there; a missing directory has its own message in store/engine.py
    label = settings.label("db_url")
    origin = settings.origins.get("db_url", "default")
    where = "the default database" if origin == "default" else f"from {label}"
    demo = path.with_name(DEMO_DB)
    if path.name != DEMO_DB and demo.is_file():
        fix = f"set {label} to" if origin in ("env", "file") else "pass --db-url"
        raise StoreError(
            f"the SQLite database {path} ({where}) does not exist, but {demo} beside it does (written by"
            f" `tracker demo`): {fix} sqlite:///{demo}"
        )
    point = {"default": "--db-url (or TRACKER_DB_URL)", "flag": "--db-url"}.get(origin, label)
    raise StoreError(
        f"the SQLite database {path} ({where}) does not exist: point {point} at your database,"
        " or run `tracker db upgrade` to create an empty one"
    )


def open_database(settings: Settings, *, write: bool = False) -> Engine:
    """``open_engine`` for the commands here, after ``require_existing_database``; its errors name the URL's source.

    store/engine.py says "check TRACKER_DB_URL", the usual place; when the URL came from ``--db-url`` or
    ``tracker.toml`` that sends the user to the wrong place, so the name is replaced by the real source.
    """
    from tracker.store.engine import open_engine

    require_existing_database(settings)
    try:
        return open_engine(settings.db_url, write=write)
    except StoreError as exc:
        raise named_db_url_source(settings.label("db_url"), exc) from exc


def named_db_url_source(label: str, exc: StoreError) -> StoreError:
    """``exc`` with its "check TRACKER_DB_URL" naming where the URL really came from (``label``: ``--db-url``,
    ``tracker.toml: db_url``, ``--to``); ``exc`` itself when that is the variable or the message names none. Of the
    same type (a ``DatabaseDamaged`` stays one: ``tracker verify`` reports it as BROKEN)."""
    if label == "TRACKER_DB_URL" or "TRACKER_DB_URL" not in str(exc):
        return exc
    return type(exc)(str(exc).replace("TRACKER_DB_URL", label))


def build_parser() -> TrackerArgumentParser:
    parser = TrackerArgumentParser(
        prog="tracker",
        description="Event-sourced tracker of a private Bitstamp account.",
    )
    parser.add_argument("--version", action=VersionAction, help="print the versions of tracker, Python and libraries")
    add_global_flags(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tracker.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tracker.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def unrecognized(parser: TrackerArgumentParser, args: argparse.Namespace, extras: Sequence[str]) -> NoReturn:
    """Arguments no parser took, as the usage error of the command they were given to (its ``--help`` lists what it
    takes: the top-level one does not), with the closest option when one is near (``--formt``: ``--format``)."""
    func = getattr(args, "func", None)
    owner = next((p for p in parser.commands if func is not None and p.get_default("func") is func), parser)
    actions = owner.arguments if isinstance(owner, CommandParser) else []
    options = [option for action in actions for option in action.option_strings]
    near = [
        match
        for extra in extras
        if extra.startswith("-")
        for match in difflib.get_close_matches(extra.split("=")[0], options, n=1, cutoff=0.8)
    ]
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    owner.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """The command line's command, its exit code. ``exiting``: the process ends right after (``run``)."""
    # First: a SIGTERM or SIGINT while the commands are imported must not kill a starting `tracker run`. A command
    # with a clean stop of its own (``stops_cleanly``) takes them over (``args.early_signals``); the others get the
    # defaults back, and a signal recorded meanwhile is delivered again (runtime/early_signals.py).
    early = EarlySignals.install()
    try:
        return _main(argv, early)
    finally:
        # The process's own entry keeps them to its exit: a stop signal after a clean stop (the second of SIGTERM
        # then SIGINT, a double Ctrl-C) is absorbed as during the stop, where the defaults would make a clean exit
        # a death by SIGINT (-2) or a KeyboardInterrupt. In a caller's process (tests) they are given back.
        if exiting:
            early.hand_over()  # record only: nothing is starting up any more
        else:
            early.restore()


def _main(argv: Sequence[str] | None, early: EarlySignals) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            unrecognized(parser, args, extras)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 0
    from tracker.logs import setup_logging

    setup_logging(verbose=args.verbose, fmt=args.log_format)
    args.early_signals = early
    try:
        if not getattr(args, "stops_cleanly", False):
            early.release()  # a SIGINT recorded meanwhile: KeyboardInterrupt here (130)
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is then caught below
    except TrackerError as exc:
        sys.stderr.write(error_line(exc))
        return exc.exit_code
    except BaseExceptionGroup as group:
        # A TrackerError raised inside a nursery (e.g. the exchange refused the key) arrives wrapped: print it as one
        # line too. A group holding anything else is a bug and keeps its traceback.
        errors, rest = group.split(TrackerError)
        if errors is None or rest is not None:
            raise
        first = _first_leaf(errors)
        sys.stderr.write(error_line(first))
        return first.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise  # a pipe of ours elsewhere (a socket, a child): a bug or a failure, with its traceback
        return _quiet_broken_pipe()
    return int(code or 0)


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose reader has closed it (``tracker report ... | head``): the kernel reports
    an error condition on the write end then."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(flags & select.POLLERR for _, flags in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor (captured output), or a closed one
        return False


def _quiet_broken_pipe() -> int:
    """The reader of our output left (``| head``): stop as quietly as the shell's own tools do, exit 141 (128 +
    SIGPIPE). Standard output is pointed at /dev/null first, so the interpreter's flush at exit does not fail again
    with a second message (Python's documented recipe, docs.python.org "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _first_leaf(group: BaseExceptionGroup[TrackerError]) -> TrackerError:
    inner = group.exceptions[0]
    return _first_leaf(inner) if isinstance(inner, BaseExceptionGroup) else inner


def run() -> None:
    code = main(exiting=True)
    # The command is over: a stop signal now is absorbed. Ignored, not left recording: the interpreter's own
    # finalization (CPython's _PySignal_Fini) gives a Python-level handler back to the signal's default action, so a
    # SIGINT in the very last moment still ended a clean exit 0 as -2 (fresh-clone CI, test_stop_signals "SIGTERM
    # then SIGINT", after 80e5c90); an ignored signal stays ignored through it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)
